//! Palisade on Kubernetes: workload identity from ServiceAccount tokens for the identity service
//! ([`attest`], [`token_review`], configured by [`config`]).
#![forbid(unsafe_code)]

pub mod attest;
pub mod config;
pub mod token_review;

pub use attest::{Refusal, ServiceAccountAttestor};
