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

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and an integer cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
