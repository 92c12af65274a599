//! Authorization decisions without traffic, for `palisade policy test` and `policy explain`: a case
//! (method, path, principal, context) goes through the same normalization, routing and authorization
//! code as a live request, against a compiled gateway config.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use palisade_auth::Principal;
use palisade_authz::{PolicyFailure, RequestFacts};
use palisade_core::ConfigErrors;

use crate::pipeline::{normalize, route};
use crate::runtime::Runtime;

/// One request to decide.
pub struct PolicyCase<'a> {
    pub method: Method,
    pub path: &'a str,
    pub host: &'a str,
    pub client_ip: IpAddr,
    pub headers: &'a [(String, String)],
    pub mtls_identity: Option<&'a str>,
    pub principal: &'a Arc<Principal>,
    pub unix_time: u64,
}

/// What the gateway would do with the case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        route: String,
        decided_by: String,
        /// The Cedar action the request was decided as (routes with policies only).
        action: Option<String>,
        /// Cedar policies that failed to evaluate, with Cedar's message.
        failures: Vec<PolicyFailure>,
    },
    Deny {
        route: String,
        decided_by: String,
        action: Option<String>,
        failures: Vec<PolicyFailure>,
    },
    /// The route is public: no authorization runs.
    Public { route: String },
    /// 404/405 or a path the gateway refuses (400): the request never reaches a service.
    NotRouted { reason: &'static str },
}

impl Verdict {
    /// Whether the request would reach the upstream.
    pub fn reaches_upstream(&self) -> bool {
        matches!(self, Verdict::Allow { .. } | Verdict::Public { .. })
    }
}

pub struct PolicyChecker {
    runtime: Runtime,
}

impl PolicyChecker {
    pub async fn load(config: &Path) -> Result<PolicyChecker, ConfigErrors> {
        let (_, runtime) = crate::compile_for_checking(config, palisade_core::ConfigKind::Gateway, false).await?;
        Ok(PolicyChecker { runtime })
    }

    pub fn decide(&self, case: &PolicyCase<'_>) -> Verdict {
        let path = match normalize::routed_path(case.path, self.runtime.config.limits.allow_path_parameters) {
            Ok(path) => path,
            Err(error) => return Verdict::NotRouted { reason: error.reason() },
        };
        let (index, params) = match self.runtime.router.find(None, case.host, &path, &case.method) {
            route::RouteMatch::Found { index, params } => (index, params),
            route::RouteMatch::MethodNotAllowed(_) => {
                return Verdict::NotRouted {
                    reason: "method_not_allowed",
                }
            }
            route::RouteMatch::NotFound => return Verdict::NotRouted { reason: "no_route" },
        };
        let Some(route) = self.runtime.routes.get(index) else {
            return Verdict::NotRouted { reason: "no_route" };
        };
        let Some(rules) = &route.authorization else {
            return Verdict::Public {
                route: route.name.clone(),
            };
        };
        let params: Vec<(String, String)> = params.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let mut headers = HeaderMap::new();
        for (name, value) in case.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.append(name, value);
            }
        }
        let decision = rules.decide(&RequestFacts {
            principal: case.principal,
            method: &case.method,
            route: &route.name,
            path: &path,
            params: &params,
            client_ip: case.client_ip,
            headers: &headers,
            mtls_identity: case.mtls_identity,
            unix_time: case.unix_time,
        });
        let action = rules.cedar_action(&case.method).map(|action| action.to_string());
        let (route, decided_by) = (route.name.clone(), decision.decided_by.to_string());
        let failures = decision.failures.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        if decision.allowed {
            Verdict::Allow {
                route,
                decided_by,
                action,
                failures,
            }
        } else {
            Verdict::Deny {
                route,
                decided_by,
                action,
                failures,
            }
        }
    }
}
