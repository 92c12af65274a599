//! Stage (transform): which protocol upgrades pass. Only the protocols the route allows (by default
//! WebSocket) may switch; any other `Upgrade` (above all `h2c`, with or without `HTTP2-Settings`,
//! after which the client would speak HTTP/2 straight to the upstream, past routing) is removed and
//! the request goes on as a plain one, as nginx treats it. A `101` the gateway did not ask for is a
//! failed upstream answer (see `upstream::forward`).

use http::header::UPGRADE;
use http::HeaderMap;

/// Whether every protocol the request's `Upgrade` names is one of `allowed` (lower-case names).
pub fn allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let mut values = headers.get_all(UPGRADE).iter().peekable();
    if values.peek().is_none() {
        return false;
    }
    values.all(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(',').all(|protocol| {
                // `name/version`: the version does not change what is tunnelled.
                let name = protocol.trim().split('/').next().unwrap_or_default();
                !name.is_empty() && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(UPGRADE, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_allowed_protocols_switch() {
        let websocket = vec!["websocket".to_string()];
        assert!(allowed(&headers(&["websocket"]), &websocket));
        assert!(allowed(&headers(&["WebSocket"]), &websocket));
        for refused in [
            &["h2c"][..],
            &["websocket, h2c"],
            &["websocket", "h2c"],
            &["h2c/1"],
            &[""],
            &["TLS/1.0"],
        ] {
            assert!(!allowed(&headers(refused), &websocket), "{refused:?}");
        }
        assert!(!allowed(&headers(&[]), &websocket), "no Upgrade, nothing to allow");
        assert!(!allowed(&headers(&["websocket"]), &[]), "a route with no upgrades");
    }
}
