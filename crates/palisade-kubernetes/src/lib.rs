//! Palisade on Kubernetes: workload identity from ServiceAccount tokens for the identity service
//! ([`attest`], [`token_review`], configured by [`config`]), and the sidecar injector ([`inject`])
//! with its admission webhook ([`webhook`]), and manifests checked against the API's schemas
//! ([`schema`]).
#![forbid(unsafe_code)]

pub mod attest;
pub mod config;
pub mod fuzzing;
pub mod inject;
pub mod schema;
pub mod token_review;
pub mod webhook;

pub use attest::{Refusal, ServiceAccountAttestor};
