//! Stage forwarded: decide who the client is and rewrite the headers that describe the hop.
//!
//! A client can write any `X-Forwarded-For` it likes, so those headers are believed only from peers in
//! `trusted_proxies`; from anyone else they are dropped and the gateway writes its own. Hop-by-hop
//! headers (and those a `Connection` header names) belong to one connection and are removed in both
//! directions. The request id is kept only when it is well formed, so it is safe to log.

use std::net::IpAddr;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use ipnet::IpNet;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one hop's connection or framing, never forwarded as they are.
const HOP_BY_HOP: [HeaderName; 10] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    // Only meaningful with `Upgrade: h2c` (RFC 7540 3.2.1), which never passes.
    HeaderName::from_static("http2-settings"),
];

/// Forwarding headers a client may not set unless it is a trusted proxy and that the gateway does not
/// set itself. Those it sets (`X-Forwarded-For`, `-Proto`, `-Host`, `X-Real-IP`, `Forwarded`) are
/// replaced whole by `insert`; these are removed.
const CLIENT_ONLY_FORWARDING: [HeaderName; 2] = [
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
];

/// Removes every header whose name `remove` picks. A message carries a handful of headers and usually
/// none to remove, so scanning its keys is cheaper than a hash lookup per candidate name (which hashes
/// the name first). One scan finds the names (each once, however many values it has); each is then
/// removed by name. Nothing is allocated: cloning a `HeaderName` costs a reference count at most.
pub fn remove_where(headers: &mut HeaderMap, mut remove: impl FnMut(&HeaderName) -> bool) {
    let mut found: [Option<HeaderName>; 4] = Default::default();
    let mut count = 0;
    let mut more = false;
    for name in headers.keys().filter(|name| remove(name)) {
        match found.get_mut(count) {
            Some(slot) => {
                *slot = Some(name.clone());
                count += 1;
            }
            None => {
                more = true;
                break;
            }
        }
    }
    for name in found.iter().flatten() {
        headers.remove(name);
    }
    // More than the slots hold: the rest one scan each (a message rarely carries so many).
    while more {
        match headers.keys().find(|name| remove(name)).cloned() {
            Some(name) => {
                headers.remove(&name);
            }
            None => more = false,
        }
    }
}

/// Removes every header in `names`.
pub fn remove_named(headers: &mut HeaderMap, names: &[HeaderName]) {
    remove_where(headers, |name| names.contains(name));
}

/// Headers the gateway writes for the upstream whatever the client sent (besides identity headers).
const GATEWAY_WRITTEN: [HeaderName; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REAL_IP,
    FORWARDED,
    X_REQUEST_ID,
];

/// Removes headers whose names, with `_` read as `-`, are names the gateway writes or protects
/// (`X_Forwarded_For`, `X_Palisade_Subject`): CGI-style servers (WSGI, Rack, PHP) turn both spellings into
/// one variable (`HTTP_X_FORWARDED_FOR`), so a client's could pose as the gateway's. nginx drops every
/// header with an underscore by default for this reason; only the colliding ones are dropped here.
/// `protected` names the identity headers.
pub fn remove_underscore_aliases(headers: &mut HeaderMap, protected: impl Fn(&HeaderName) -> bool) {
    // Names with an underscore are rare: for the others the one scan of `remove_where` is all.
    remove_where(headers, |name| {
        let text = name.as_str();
        if !text.contains('_') {
            return false;
        }
        HeaderName::from_bytes(text.replace('_', "-").as_bytes()).is_ok_and(|alias| {
            GATEWAY_WRITTEN.contains(&alias) || CLIENT_ONLY_FORWARDING.contains(&alias) || protected(&alias)
        })
    });
}

/// Peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The client address: the peer, or — when the peer is a trusted proxy — the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    let hops: Vec<&str> = hops.collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !trusted.contains(client) {
                    break;
                }
            }
            // A malformed entry ends what can be believed.
            Err(_) => break,
        }
    }
    client
}

/// Removes hop-by-hop headers and every header that `Connection` names. With `keep_upgrade`, the
/// `Connection: upgrade` and `Upgrade` pair survives so that a WebSocket handshake can pass.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these: one pass over the keys, and nothing else to do.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let upgrade = headers.get(UPGRADE).cloned();
    let te_trailers = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in named {
        headers.remove(name);
    }
    remove_named(headers, &HOP_BY_HOP);
    if te_trailers {
        // `TE: trailers` is how gRPC asks for trailers; it is meaningful end to end over HTTP/2.
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        if let Some(upgrade) = upgrade {
            headers.insert(UPGRADE, upgrade);
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
}

/// The forwarding header values that depend only on the connection (peer and scheme), computed once
/// per connection instead of formatted for every request on it.
#[derive(Debug, Clone)]
pub struct HopValues {
    peer: IpAddr,
    proto: &'static str,
    peer_value: HeaderValue,
    forwarded: HeaderValue,
}

impl HopValues {
    pub fn new(peer: IpAddr, tls: bool) -> Self {
        let peer = canonical(peer);
        let proto = if tls { "https" } else { "http" };
        let forwarded = format!("for={};proto={proto}", forwarded_node(peer));
        Self {
            peer,
            proto,
            peer_value: header_value(peer.to_string()),
            forwarded: header_value(forwarded),
        }
    }
}

fn forwarded_node(peer: IpAddr) -> String {
    match peer {
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn header_value(text: String) -> HeaderValue {
    // Addresses and the fixed words around them are always valid header text.
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static(""))
}

/// Rewrites the forwarding headers for the upstream hop.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    hop: &HopValues,
    client: IpAddr,
    peer_trusted: bool,
    host: &str,
) {
    if peer_trusted {
        extend_trusted_chain(headers, hop);
    } else {
        // `insert` replaces every value a name had, so of the client's forwarding headers only those
        // not set below need removing.
        for name in &CLIENT_ONLY_FORWARDING {
            headers.remove(name);
        }
        if host.is_empty() {
            headers.remove(X_FORWARDED_HOST);
        }
        headers.insert(X_FORWARDED_FOR, hop.peer_value.clone());
        headers.insert(FORWARDED, hop.forwarded.clone());
    }
    let real_ip = if client == hop.peer {
        hop.peer_value.clone()
    } else {
        header_value(client.to_string())
    };
    headers.insert(X_REAL_IP, real_ip);
    if !peer_trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.proto));
    }
    if !host.is_empty() && (!peer_trusted || !headers.contains_key(&X_FORWARDED_HOST)) {
        set(headers, X_FORWARDED_HOST, host.to_string());
    }
}

/// A trusted proxy's chain is kept and this hop appended to it.
fn extend_trusted_chain(headers: &mut HeaderMap, hop: &HopValues) {
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {}", hop.peer),
        None => hop.peer.to_string(),
    };
    let this_hop = format!("for={};proto={}", forwarded_node(hop.peer), hop.proto);
    let forwarded = match headers.get(&FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {this_hop}"),
        None => this_hop,
    };
    set(headers, X_FORWARDED_FOR, forwarded_for);
    set(headers, FORWARDED, forwarded);
}

/// Sets `name` to `value`; a value that is no valid header text removes the name instead, so that
/// nothing a client sent under it survives.
fn set(headers: &mut HeaderMap, name: HeaderName, value: String) {
    match HeaderValue::try_from(value) {
        Ok(value) => headers.insert(name, value),
        Err(_) => headers.remove(name),
    };
}

/// The longest client request id that is kept.
const MAX_REQUEST_ID: usize = 128;

/// The client's request id when it is safe to keep (1–128 of `A-Z a-z 0-9 - _ . :`), else a new one
/// (a UUID v4). Either way in one allocation of its own, shared by reference count by the upstream
/// request, the response and the logs. A kept id is copied: the client's header value points into
/// hyper's read buffer, which a long-lived response would otherwise hold on to.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let supplied = headers.get(&X_REQUEST_ID).map(HeaderValue::as_bytes).filter(|id| {
        (1..=MAX_REQUEST_ID).contains(&id.len())
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    });
    let mut id = RequestIdBytes {
        bytes: [0; MAX_REQUEST_ID],
        len: 0,
    };
    match supplied {
        Some(supplied) => {
            id.bytes[..supplied.len()].copy_from_slice(supplied);
            id.len = supplied.len();
        }
        None => {
            // Encoded straight into the buffer: `to_string` goes through the formatting machinery.
            id.len = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id.bytes).len();
        }
    }
    // `from_owner` rather than a `Vec`: a `Bytes` made from a `Vec` allocates again on its first clone.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id)).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// A request id's bytes, owned by the `Bytes` of its header value.
struct RequestIdBytes {
    bytes: [u8; MAX_REQUEST_ID],
    len: usize,
}

impl AsRef<[u8]> for RequestIdBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The host the client asked for: lower case, without port or trailing dot. HTTP/2 carries it in the
/// `:authority` (the URI), as does an HTTP/1 request in absolute form; otherwise HTTP/1 has it in `Host`.
/// Refused (400), as RFC 9112 §3.2 has it, so that the route's host is the one the upstream sees:
/// more than one `Host` (the upstream might read the other one), none on HTTP/1.1, a value that is no
/// authority (`a, b`), and user information in either place.
pub fn request_host(version: http::Version, uri: &http::Uri, headers: &HeaderMap) -> Result<String, &'static str> {
    let mut hosts = headers.get_all(HOST).iter();
    let (header, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err("duplicate_host");
    }
    if let Some(authority) = uri.authority() {
        // The URI's authority wins over `Host` (which `upstream::ensure_host` then replaces).
        return host_of(authority);
    }
    let Some(header) = header else {
        return match version {
            http::Version::HTTP_11 => Err("missing_host"),
            _ => Ok(String::new()),
        };
    };
    if let Some(host) = plain_host(header.as_bytes()) {
        return Ok(host);
    }
    let authority: http::uri::Authority = header
        .to_str()
        .ok()
        .and_then(|value| value.parse().ok())
        .ok_or("invalid_host")?;
    host_of(&authority)
}

/// An authority's host, normalized; one with user information is refused.
fn host_of(authority: &http::uri::Authority) -> Result<String, &'static str> {
    if authority.as_str().contains('@') {
        return Err("invalid_host");
    }
    Ok(normalized_host(authority.host()))
}

fn normalized_host(host: &str) -> String {
    let mut host = host.to_ascii_lowercase();
    if host.ends_with('.') {
        host.pop();
    }
    host
}

/// The usual `Host` value, a lower-case DNS name with an optional port, taken without parsing it as an
/// authority (one allocation instead of three). Anything else is left to the full parse.
fn plain_host(value: &[u8]) -> Option<String> {
    let (name, port) = match value.iter().position(|byte| *byte == b':') {
        Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
        None => (value, None),
    };
    let name_ok = !name.is_empty()
        && name
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'.'));
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port).is_ok_and(|digits| digits.parse::<u16>().is_ok())
    });
    if !name_ok || !port_ok {
        return None;
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    String::from_utf8(name.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_hosts_match_the_full_parse() {
        let uri: http::Uri = "/".parse().unwrap();
        for value in [
            "api.example.com",
            "api.example.com:8443",
            "API.Example.com",
            "example.com.",
            "example.com.:80",
            "127.0.0.1:19080",
            "[::1]:8080",
            "a:99999",
            "a:",
            "-x-",
            "a b",
            "user@host",
            "a, b",
        ] {
            let mut map = HeaderMap::new();
            map.insert(HOST, HeaderValue::from_str(value).unwrap());
            let parsed = value
                .parse::<http::uri::Authority>()
                .ok()
                .filter(|a| !a.as_str().contains('@'))
                .map(|a| normalized_host(a.host()))
                .ok_or("invalid_host");
            assert_eq!(request_host(http::Version::HTTP_11, &uri, &map), parsed, "{value}");
        }
    }

    #[test]
    fn hosts_that_could_mean_two_things_are_refused() {
        let origin: http::Uri = "/".parse().unwrap();
        let absolute: http::Uri = "http://a.example/x".parse().unwrap();
        let two = headers(&[("host", "a.example"), ("host", "b.example")]);
        let other = headers(&[("host", "b.example")]);
        let none = HeaderMap::new();
        use http::Version;
        assert_eq!(request_host(Version::HTTP_11, &origin, &two), Err("duplicate_host"));
        assert_eq!(request_host(Version::HTTP_11, &absolute, &two), Err("duplicate_host"));
        assert_eq!(request_host(Version::HTTP_11, &origin, &none), Err("missing_host"));
        assert_eq!(request_host(Version::HTTP_10, &origin, &none), Ok(String::new()));
        assert_eq!(request_host(Version::HTTP_11, &absolute, &none), Ok("a.example".into()));
        assert_eq!(
            request_host(Version::HTTP_11, &absolute, &other),
            Ok("a.example".into())
        );
        let userinfo: http::Uri = "http://u@a.example/x".parse().unwrap();
        assert_eq!(request_host(Version::HTTP_11, &userinfo, &none), Err("invalid_host"));
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn spoofed_forwarded_for_is_ignored_from_untrusted_peers() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            client_ip(&h, "203.0.113.9".parse().unwrap(), &trusted()),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn trusted_chain_yields_rightmost_untrusted_address() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(
            client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert!(trusted().contains(mapped), "IPv4-mapped addresses match IPv4 networks");
    }

    #[test]
    fn remove_where_removes_every_value_of_every_picked_name_however_many() {
        for picked in 0..8 {
            let mut headers = HeaderMap::new();
            for index in 0..8 {
                let name = HeaderName::from_bytes(format!("x-h{index}").as_bytes()).unwrap();
                headers.append(&name, HeaderValue::from_static("1"));
                headers.append(&name, HeaderValue::from_static("2"));
            }
            headers.insert(HOST, HeaderValue::from_static("kept"));
            remove_where(&mut headers, |name| {
                name.as_str()
                    .strip_prefix("x-h")
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n < picked)
            });
            let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
            assert_eq!(headers.len(), 1 + 2 * (8 - picked), "{picked}: {left:?}");
            assert!(headers.contains_key(HOST));
        }
    }

    #[test]
    fn underscore_spellings_of_written_and_protected_headers_are_removed() {
        let mut h = headers(&[
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Real_IP", "6.6.6.6"),
            ("x-forwarded_host", "evil"),
            ("x_request_id", "forged"),
            ("x_forwarded_prefix", "/evil"),
            ("x_palisade_subject", "admin"),
            ("x_app_flag", "kept"),
            ("accept", "kept"),
        ]);
        remove_underscore_aliases(&mut h, |name| name.as_str() == "x-palisade-subject");
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x_app_flag"]);
    }

    #[test]
    fn connection_named_and_hop_by_hop_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "close, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "5"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
            ("forwarded", "for=1.1.1.1"),
            ("x-forwarded-host", "evil"),
        ]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        set_forwarding_headers(&mut h, &HopValues::new(peer, true), peer, false, "api.example.com");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn no_forwarding_header_of_an_untrusted_client_survives_in_any_value() {
        let mut h = HeaderMap::new();
        let all = [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            X_REAL_IP,
            FORWARDED,
        ];
        for name in all.iter().chain(&CLIENT_ONLY_FORWARDING) {
            h.append(name, HeaderValue::from_static("evil"));
            h.append(name, HeaderValue::from_static("evil-too"));
        }
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        // No host (an HTTP/1.0 request without one): no X-Forwarded-Host either.
        set_forwarding_headers(&mut h, &HopValues::new(peer, false), peer, false, "");
        for (name, value) in &h {
            assert!(!value.as_bytes().starts_with(b"evil"), "{name}: {value:?}");
        }
        assert_eq!(h.len(), 4, "{h:?}");
        assert!(!h.contains_key(X_FORWARDED_HOST));
    }

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        assert_eq!(request_id(&headers(&[("x-request-id", "abc-123")])), "abc-123");
        let longest = "a".repeat(MAX_REQUEST_ID);
        assert_eq!(request_id(&headers(&[("x-request-id", &longest)])), longest.as_str());
        let too_long = "a".repeat(MAX_REQUEST_ID + 1);
        assert_eq!(request_id(&headers(&[("x-request-id", &too_long)])).len(), 36);
        let replaced = request_id(&headers(&[("x-request-id", "bad id\"><script>")]));
        assert_eq!(replaced.len(), 36);
        let generated = request_id(&HeaderMap::new());
        let generated = generated.to_str().expect("ASCII");
        assert_eq!(uuid::Uuid::parse_str(generated).map(|id| id.get_version_num()), Ok(4));
        assert_ne!(request_id(&HeaderMap::new()), generated, "a new id for every request");
    }
}
