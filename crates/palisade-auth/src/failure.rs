//! Why authentication failed. Each failure has a stable reason code for logs, metrics and audit, and
//! a general description for the client that never contains the credential.

/// The outcome of a failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credentials")]
    MissingCredentials,
    #[error("token too large")]
    TokenTooLarge,
    #[error("malformed token")]
    MalformedToken,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unsupported critical header")]
    UnsupportedCritical,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("missing claim")]
    MissingClaim,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("API key expired")]
    ApiKeyExpired,
    #[error("token inactive")]
    TokenInactive,
    #[error("no client certificate")]
    NoClientCertificate,
    #[error("client certificate without usable identity")]
    CertificateWithoutIdentity,
    /// The identity provider or its key set could not be reached and nothing cached can answer.
    #[error("identity provider unavailable")]
    ProviderUnavailable,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => "missing_credentials",
            AuthFailure::TokenTooLarge => "token_too_large",
            AuthFailure::MalformedToken => "malformed_token",
            AuthFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthFailure::UnsupportedCritical => "unsupported_crit",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "token_expired",
            AuthFailure::NotYetValid => "token_not_yet_valid",
            AuthFailure::IssuedInFuture => "token_issued_in_future",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::MissingClaim => "missing_claim",
            AuthFailure::UnknownApiKey => "unknown_api_key",
            AuthFailure::ApiKeyExpired => "api_key_expired",
            AuthFailure::TokenInactive => "token_inactive",
            AuthFailure::NoClientCertificate => "no_client_certificate",
            AuthFailure::CertificateWithoutIdentity => "certificate_without_identity",
            AuthFailure::ProviderUnavailable => "identity_provider_unavailable",
        }
    }

    /// What the client is told (RFC 6750 `error_description` and the problem detail).
    pub fn description(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => "This resource requires authentication.",
            AuthFailure::TokenTooLarge => "The token is too large.",
            AuthFailure::MalformedToken => "The token is malformed.",
            AuthFailure::AlgorithmNotAllowed => "The token's signing algorithm is not accepted.",
            AuthFailure::UnsupportedCritical => "The token has a critical header that is not supported.",
            AuthFailure::UnknownKey => "The token is signed with an unknown key.",
            AuthFailure::BadSignature => "The token signature is invalid.",
            AuthFailure::Expired => "The token has expired.",
            AuthFailure::NotYetValid => "The token is not valid yet.",
            AuthFailure::IssuedInFuture => "The token was issued in the future.",
            AuthFailure::WrongIssuer => "The token was issued by an issuer that is not accepted.",
            AuthFailure::WrongAudience => "The token is not meant for this audience.",
            AuthFailure::MissingClaim => "The token lacks a required claim.",
            AuthFailure::UnknownApiKey => "The API key is not valid.",
            AuthFailure::ApiKeyExpired => "The API key has expired.",
            AuthFailure::TokenInactive => "The token is not active.",
            AuthFailure::NoClientCertificate => "This resource requires a client certificate.",
            AuthFailure::CertificateWithoutIdentity => "The client certificate carries no usable identity.",
            AuthFailure::ProviderUnavailable => "The identity provider is unavailable; try again later.",
        }
    }

    /// When several methods fail, the one reported is the most informative: a presented but bad
    /// credential says more than "no credentials", and an outage must not turn into a 401.
    pub fn rank(self) -> u8 {
        match self {
            AuthFailure::MissingCredentials => 0,
            AuthFailure::NoClientCertificate => 1,
            AuthFailure::ProviderUnavailable => 3,
            _ => 2,
        }
    }

    /// An outage is 503 (fail closed, retry later); everything else is 401.
    pub fn is_unavailable(self) -> bool {
        self == AuthFailure::ProviderUnavailable
    }
}
