//! Authorization: what an authenticated principal may do. Palisade denies by default; a request
//! passes only when the route says `allow: authenticated` or one of its rules allows it. Every
//! decision names what decided it, for the access log, audit and metrics.

pub mod rules;

pub use rules::{Decision, RouteRules};
