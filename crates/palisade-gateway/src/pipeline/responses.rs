//! Active responses (after the global IP rules, and again after authentication): a client address or
//! principal that an alert or an operator blocked is refused (403); one held to a tightened limit is
//! refused beyond it (429). With nothing active this is one atomic load.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_limits::{Enforcement, ResponseTable};

use crate::respond::GatewayError;

/// Seconds since the Unix epoch: the clock responses expire on.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn check_client(table: &ResponseTable, client_ip: IpAddr) -> Result<(), GatewayError> {
    if table.is_empty() {
        return Ok(());
    }
    refuse(table.check_ip(client_ip, now_secs()), GatewayError::ClientBlocked)
}

pub fn check_principal(table: &ResponseTable, subject: &str) -> Result<(), GatewayError> {
    if table.is_empty() {
        return Ok(());
    }
    refuse(table.check_subject(subject, now_secs()), GatewayError::PrincipalBlocked)
}

/// A connection whose client certificate names a quarantined workload is refused on every route,
/// before routing (a quarantine is a block on the identity; a tightened limit on a principal is
/// applied after authentication, by `check_principal`).
pub fn check_workload(table: &ResponseTable, identity: &str) -> Result<(), GatewayError> {
    if table.blocks_subject(identity, now_secs()) {
        return Err(GatewayError::WorkloadQuarantined);
    }
    Ok(())
}

/// A cluster that expects exactly this SPIFFE identity is not sent anything while it is quarantined.
pub fn check_destination(table: &ResponseTable, identity: &str) -> Result<(), GatewayError> {
    if table.blocks_subject(identity, now_secs()) {
        return Err(GatewayError::DestinationQuarantined);
    }
    Ok(())
}

fn refuse(enforcement: Option<Enforcement>, blocked: GatewayError) -> Result<(), GatewayError> {
    match enforcement {
        None => Ok(()),
        Some(Enforcement::Blocked) => Err(blocked),
        Some(Enforcement::Limited { retry_after }) => Err(GatewayError::RateLimited {
            retry_after_secs: palisade_limits::retry_after_secs(retry_after),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_limits::responses::{Action, ActiveResponse, Target};
    use std::time::Duration;

    #[test]
    fn blocked_clients_and_principals_are_refused_and_others_pass() {
        let table = ResponseTable::new(10);
        let client: IpAddr = "198.51.100.4".parse().unwrap();
        assert_eq!(check_client(&table, client), Ok(()));
        let block = |target| ActiveResponse::new(target, Action::Block, None, Duration::from_secs(60), now_secs());
        table.insert(block(Target::ip(client))).unwrap();
        table.insert(block(Target::Subject("mallory".into()))).unwrap();
        assert_eq!(check_client(&table, client), Err(GatewayError::ClientBlocked));
        assert_eq!(check_client(&table, "198.51.100.5".parse().unwrap()), Ok(()));
        assert_eq!(check_principal(&table, "mallory"), Err(GatewayError::PrincipalBlocked));
        assert_eq!(check_principal(&table, "alice"), Ok(()));
    }

    #[test]
    fn a_tightened_limit_answers_429_with_a_retry_time() {
        let table = ResponseTable::new(10);
        let client: IpAddr = "198.51.100.4".parse().unwrap();
        let rate = palisade_core::config::Rate::parse("1/min").unwrap();
        let limit = ActiveResponse::new(
            Target::ip(client),
            Action::Limit,
            Some(rate),
            Duration::from_secs(60),
            now_secs(),
        );
        table.insert(limit).unwrap();
        assert_eq!(check_client(&table, client), Ok(()));
        assert!(matches!(
            check_client(&table, client),
            Err(GatewayError::RateLimited { retry_after_secs }) if retry_after_secs >= 50
        ));
    }
}
