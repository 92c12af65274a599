//! What the gateway decided about a request, as types: which stage decided, whose fault the outcome
//! is, and the stable reason code. Made once where the decision is taken and read as it is by the
//! access log, audit events, metrics, passive health, retries and the detectors; nothing downstream
//! parses a reason string to find out who is to blame.

use serde::Serialize;

/// The pipeline stage (or connection phase) that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Before any request: the connection limits and the first-byte deadline.
    Accept,
    /// The TLS handshake.
    Tls,
    /// Framing, path and host checks, and the head read itself (431, header timeout).
    Normalize,
    IpRules,
    /// An active response (an alert's or an operator's block) against the client address.
    Responses,
    Route,
    /// Credentials, and an active response against the authenticated principal.
    Authenticate,
    RateLimit,
    Authorize,
    BodyLimit,
    Validate,
    Cors,
    Lifecycle,
    /// Sending to the upstream and streaming its answer back.
    Upstream,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Accept => "accept",
            Stage::Tls => "tls",
            Stage::Normalize => "normalize",
            Stage::IpRules => "ip_rules",
            Stage::Responses => "responses",
            Stage::Route => "route",
            Stage::Authenticate => "authenticate",
            Stage::RateLimit => "rate_limit",
            Stage::Authorize => "authorize",
            Stage::BodyLimit => "body_limit",
            Stage::Validate => "validate",
            Stage::Cors => "cors",
            Stage::Lifecycle => "lifecycle",
            Stage::Upstream => "upstream",
        }
    }
}

/// Whose doing an outcome is. Only [`Fault::Upstream`] counts against an upstream (passive health,
/// the failing-upstream detector); a client's fault never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The request broke a rule, or the client went away or sent a broken body.
    Client,
    /// The upstream refused, reset, timed out or answered something that is not HTTP.
    Upstream,
    /// The gateway itself (an identity provider it cannot reach, a limit of its own capacity).
    Gateway,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Gateway => "gateway",
        }
    }
}

/// One decision: who decided, who is at fault, and the reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub stage: Stage,
    pub fault: Fault,
    pub reason: &'static str,
}

impl Decision {
    pub const fn new(stage: Stage, fault: Fault, reason: &'static str) -> Self {
        Self { stage, fault, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_names_are_the_documented_codes() {
        let decision = Decision::new(Stage::RateLimit, Fault::Client, "rate_limited");
        let json = serde_json::to_string(&decision).expect("serializes");
        assert_eq!(
            json,
            r#"{"stage":"rate_limit","fault":"client","reason":"rate_limited"}"#
        );
        for stage in [Stage::Accept, Stage::IpRules, Stage::BodyLimit, Stage::Upstream] {
            assert_eq!(
                serde_json::to_string(&stage).expect("serializes"),
                format!("\"{}\"", stage.as_str())
            );
        }
    }
}
