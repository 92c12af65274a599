//! Attestation: a workload that has no certificate yet proves who it is with a credential its
//! platform gave it (a Kubernetes ServiceAccount token), instead of a join token someone minted for
//! it. The identity service hands the credential to an attestor, which checks it and derives the
//! SPIFFE ID: the workload never names its own identity.

use std::future::Future;
use std::pin::Pin;

use crate::spiffe::SpiffeId;

/// Which workload a credential belongs to, as its platform names it: what the audit trail records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
}

/// A credential that passed: the identity to issue and whose it is.
#[derive(Debug, Clone)]
pub struct Attested {
    pub spiffe_id: SpiffeId,
    pub workload: Workload,
}

/// A credential that did not pass.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The stable reason code (`token_expired`, `namespace_not_allowed`…) of the attestor's typed
    /// reason; audit events and the problem answer carry it.
    pub reason: &'static str,
    /// The attestor could not decide (its key set or review API is down): the workload should
    /// retry, and the answer is 503 rather than 401.
    pub unavailable: bool,
    /// Whose credential it was, when that much could be read from it.
    pub workload: Option<Workload>,
}

pub type Attestation<'a> = Pin<Box<dyn Future<Output = Result<Attested, Refused>> + Send + 'a>>;

pub trait WorkloadAttestor: Send + Sync {
    /// The credential this attestor checks, as audit events name the proof
    /// (`service_account_token`).
    fn proof(&self) -> &'static str;

    /// Checks `credential`. It is secret: never logged, never echoed.
    fn attest<'a>(&'a self, credential: &'a str) -> Attestation<'a>;
}
