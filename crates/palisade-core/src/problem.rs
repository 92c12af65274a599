//! RFC 9457 problem details: the only shape of error body Palisade sends. Bodies carry a stable `type`,
//! a short human `title`, the status, and optionally a `detail` written for the client; never internal
//! addresses, stack traces or echoed secrets.

use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id, so that a user can quote it to an operator who finds the access log line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// What request validation found (extension member), each with a JSON pointer into the request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
}

/// One way a request does not match its API contract.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// `/path/id`, `/query/limit`, `/header/x-tenant`, `/content-type` or `/body/items/0/price`.
    pub pointer: String,
    /// What was expected; never the offending value itself.
    pub message: String,
}

impl Problem {
    /// `slug` becomes `https://palisade.dev/problems/{slug}`, documented in `docs/errors.md`.
    pub fn new(status: http::StatusCode, slug: &str, title: &str) -> Self {
        Self {
            kind: format!("https://palisade.dev/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: None,
            request_id: None,
            violations: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    pub fn with_violations(mut self, violations: Vec<Violation>) -> Self {
        self.violations = violations;
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and an integer cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
