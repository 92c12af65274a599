//! Palisade's shared foundation: the typed configuration, its loading and validation, units, secret
//! references and the RFC 9457 problem type that every error response uses.
#![forbid(unsafe_code)]

pub mod config;
pub mod decision;
pub mod diagnostic;
#[doc(hidden)]
pub mod fuzzing;
pub mod load;
pub mod problem;
pub mod secret;
pub mod spiffe;
pub mod units;
mod validate;
mod validate_auth;
mod validate_traffic;

pub use config::Config;
pub use diagnostic::{ConfigErrors, Diagnostic, Diagnostics};
pub use load::{
    load_file, load_file_partially, load_sidecar, load_yaml_file, parse_fragment, parse_partially, parse_str,
    ConfigKind,
};
pub use serde_saphyr::Spanned;
pub use validate::parse_cidr;
pub use validate_auth::{
    is_loopback_http, validate_provider as validate_jwt_provider, warnings, JWT_ALGORITHMS, JWT_DEFAULT_ALGORITHMS,
    JWT_HMAC_ALGORITHMS,
};
