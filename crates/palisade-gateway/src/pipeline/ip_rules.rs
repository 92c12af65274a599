//! IP rules, twice: the global lists before routing (a blocked client learns nothing about which
//! paths exist) and the route's own after routing. The address checked is the client address the
//! normalize stage derived, so `X-Forwarded-For` counts only from trusted proxies. Deny → 403.

use std::net::IpAddr;

use palisade_limits::IpRules;

use crate::respond::GatewayError;

pub fn check(rules: Option<&IpRules>, client_ip: IpAddr) -> Result<(), GatewayError> {
    match rules {
        Some(rules) if !rules.permits(client_ip) => Err(GatewayError::IpDenied),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::config::IpRulesConfig;

    #[test]
    fn denied_clients_are_refused_and_others_pass() {
        let config: IpRulesConfig = palisade_core::parse_fragment("deny: [192.0.2.0/24]\n").expect("valid");
        let rules = IpRules::load(&config).expect("loads");
        let blocked: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(check(Some(&rules), blocked), Err(GatewayError::IpDenied));
        assert_eq!(check(Some(&rules), other), Ok(()));
        assert_eq!(check(None, blocked), Ok(()));
    }
}
