//! Palisade's shared foundation: the typed configuration, its loading and validation, units, secret
//! references and the RFC 9457 problem type that every error response uses.

pub mod config;
pub mod diagnostic;
pub mod load;
pub mod problem;
pub mod secret;
pub mod units;
mod validate;

pub use config::Config;
pub use diagnostic::{ConfigErrors, Diagnostic, Diagnostics};
pub use load::{load_file, load_file_partially, parse_partially, parse_str};
pub use serde_saphyr::Spanned;
pub use validate::parse_cidr;
