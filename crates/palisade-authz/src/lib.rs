//! Authorization: what an authenticated principal may do. Palisade denies by default; a request
//! passes only when its route says `allow: authenticated`, one of its rules allows it, or its Cedar
//! policy set permits it. Every decision names what decided it, for the access log, audit and metrics.
#![forbid(unsafe_code)]

pub mod cedar;
pub mod rules;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};
use palisade_auth::Principal;

pub use cedar::CedarPolicies;
pub use rules::{Decision, PolicyFailure, RouteRules, DEFAULT_DENY};

/// What a decision may look at: the principal and the request as the gateway understood it (the
/// normalized path, the routed route, the client address it derived).
pub struct RequestFacts<'a> {
    pub principal: &'a Arc<Principal>,
    pub method: &'a Method,
    pub route: &'a str,
    pub path: &'a str,
    pub params: &'a [(String, String)],
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    /// The verified client certificate's subject, when the connection presented one.
    pub mtls_identity: Option<&'a str>,
    pub unix_time: u64,
}
