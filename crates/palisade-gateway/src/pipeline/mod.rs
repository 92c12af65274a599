//! The request pipeline. Every request passes these stages in this order; each stage is a module of
//! its own, returns a decision, and records what it learned in the [`RequestContext`]:
//!
//! 1. `normalize`    — framing verdict, request id, canonical path, client address (`forwarded`);
//! 2. `ip_rules`     — global allow/deny lists (403), before routing reveals anything; then
//!    `responses` — a client blocked (403) or held to a tightened limit (429) by an alert or operator;
//! 3. `route`        — the one route for host + path + method (404 / 405); `method_override`
//!    headers taken (re-routing) or removed; then the route's IP rules;
//! 4. `authenticate` — the route's accepted credentials → principal (401; 503 if the IdP is down);
//!    a blocked principal is refused here (403);
//! 5. `rate_limit`   — in-flight limit (503) and every rate limit of the route (429);
//! 6. `authorize`    — default deny: a rule or `allow: authenticated` must allow the principal (403);
//! 7. `body_limit`   — declared and streamed body size (413); `validate` — the route's OpenAPI
//!    operation: parameters, content type, JSON body (400);
//! 8. transform      — hop-by-hop and spoofed identity headers out, and any `upgrade` the route
//!    does not allow; forwarding, request id and identity headers in;
//! 9. `upstream`     — pick a target, send, retry when safe (502 / 503 / 504);
//! 10. respond       — errors become problem+json in [`crate::respond`], each with its typed
//!     decision (stage, fault, reason) kept in the context; rate-limit headers added;
//! 11. `observe`     — metrics and access log when the response body ends; security refusals (and,
//!     when configured, authentications) are audit events (`crate::audit`); every answer goes to
//!     the anomaly detectors (`crate::detection`).

pub mod authenticate;
pub mod authorize;
pub mod body_limit;
pub mod cors;
pub mod forwarded;
pub mod ip_rules;
pub mod lifecycle;
pub mod method_override;
pub mod normalize;
pub mod observe;
pub mod rate_limit;
pub mod read_ahead;
pub mod responses;
pub mod route;
pub mod security_headers;
pub mod upgrade;
pub mod upstream;
pub mod validate;

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{TRANSFER_ENCODING, UPGRADE};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::context::{ConnectionInfo, RequestContext};
use crate::respond::GatewayError;
use crate::runtime::Runtime;
use crate::upstream::ProxyBody;
use observe::ObservedBody;
use palisade_core::decision::Stage;

/// Entry point for one request on a client connection.
pub async fn handle(
    runtime: Arc<Runtime>,
    connection: Arc<ConnectionInfo>,
    request: Request<Incoming>,
) -> Result<Response<ObservedBody>, Infallible> {
    connection.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let http1 = request.version() < Version::HTTP_2;
    let context = RequestContext::new(&connection, request.method().clone());
    let mut pending = observe::Unanswered::new(context, runtime);
    let (runtime, context) = pending.parts();
    let mut response = match run(runtime, &connection, context, request).await {
        Ok(response) => response,
        Err(error) => {
            context.decision = Some(error.decision());
            record_refusal(runtime, context, &error);
            crate::audit::refusal(runtime, context, &error);
            error.into_response(&context.request_id)
        }
    };
    decorate(runtime, &connection, context, response.headers_mut());
    let upgraded = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    if http1 && !upgraded && connection.draining.load(std::sync::atomic::Ordering::SeqCst) {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    Ok(pending.answer(response))
}

async fn run(
    runtime: &Runtime,
    connection: &ConnectionInfo,
    context: &mut RequestContext,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, GatewayError> {
    // 1. normalize
    context.request_id = forwarded::request_id(request.headers());
    if let Err(refused) = check_framing(connection, &request) {
        // Refused before the path is normalized; the log still says what was asked for.
        context.path = logged_path(request.uri().path());
        return Err(refused);
    }
    context.path = match normalize::routed_path(request.uri().path(), runtime.config.limits.allow_path_parameters) {
        Ok(path) => path,
        Err(error) => {
            context.path = logged_path(request.uri().path());
            return Err(GatewayError::BadPath(error));
        }
    };
    context.host = forwarded::request_host(request.version(), request.uri(), request.headers())
        .map_err(GatewayError::BadRequest)?;
    let peer_trusted = runtime.trusted_proxies.contains(context.peer);
    context.client_ip = forwarded::client_ip(request.headers(), context.peer, &runtime.trusted_proxies);
    context.origin = cors::origin_of(request.headers());

    // 2. global IP rules
    ip_rules::check(runtime.ip_rules.as_ref(), context.client_ip)?;
    responses::check_client(&runtime.responses, context.client_ip)?;
    if let Some(Ok(workload)) = &connection.client_certificate {
        responses::check_workload(&runtime.responses, &workload.subject)?;
    }

    // 3. route (and its own IP rules, CORS preflight, lifecycle)
    // A preflight is routed by the method it asks about; a route with `cors` answers it here.
    if let Some(asked) = cors::preflight_method(&request) {
        let found = route::find(runtime, context, &asked).ok();
        if let Some(route) = found.and_then(|index| runtime.routes.get(index)) {
            if let Some(cors) = &route.cors {
                context.preflight = true;
                ip_rules::check(route.ip_rules.as_ref(), context.client_ip)?;
                return cors.preflight(request.headers(), &asked);
            }
        }
    }
    let mut index = route::find(runtime, context, request.method())?;
    if method_override::present(request.headers()) {
        index = override_method(runtime, context, &mut request, index)?;
    }
    let route = runtime.routes.get(index).ok_or(GatewayError::NotFound)?;
    ip_rules::check(route.ip_rules.as_ref(), context.client_ip)?;
    if let Some(lifecycle) = &route.lifecycle {
        lifecycle.check()?;
    }

    // 4. authenticate
    context.stage = Stage::Authenticate;
    // Boxed, and only for routes that authenticate: the future of a credential check is large (it
    // may call an IdP), and held inline it would be copied with every request's future.
    let authenticated = match route.auth {
        None => Ok(None),
        Some(_) => {
            Box::pin(authenticate::authenticate(
                &runtime.authenticator,
                route,
                request.headers(),
                connection,
            ))
            .await
        }
    };
    context.principal = match authenticated {
        Ok(principal) => principal,
        Err(error) => {
            if runtime.config.detection.enabled {
                context.attempted_subject = authenticate::attempted_subject(request.headers());
            }
            return Err(error);
        }
    };
    if let Some(lifecycle) = &route.lifecycle {
        lifecycle.count_call(context.principal.as_ref().map(|p| p.subject.as_str()));
    }
    crate::audit::authenticated(runtime, context);
    if let Some(principal) = &context.principal {
        responses::check_principal(&runtime.responses, &principal.subject)?;
    }

    // 5. rate limit
    context.stage = Stage::RateLimit;
    rate_limit::check(route, request.headers(), context).await?;

    // 6. authorize
    authorize::authorize(route, request.method(), request.headers(), connection, context)?;

    // 7. body limit, then validation of the head against the route's OpenAPI operation
    body_limit::check_declared(request.headers(), route.max_body_bytes)?;
    let body_rules = validate::check_head(route, &request, context)?;
    let content_type = body_rules
        .and(request.headers().get(http::header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // 8. transform
    let (mut parts, body) = request.into_parts();
    let wants_upgrade = parts.version == Version::HTTP_11 && parts.headers.contains_key(UPGRADE);
    let client_upgrade = (wants_upgrade && upgrade::allowed(&parts.headers, &route.upgrades))
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    forwarded::remove_hop_by_hop(&mut parts.headers, client_upgrade.is_some());
    forwarded::remove_underscore_aliases(&mut parts.headers, |alias| {
        runtime.authenticator.identity.is_protected(alias)
    });
    authenticate::forward_identity(
        &runtime.authenticator,
        &runtime.signer,
        &mut parts.headers,
        context.principal.as_deref(),
    );
    upstream::ensure_host(&mut parts.headers, &parts.uri);
    forwarded::set_forwarding_headers(
        &mut parts.headers,
        &connection.hop,
        context.client_ip,
        peer_trusted,
        &context.host,
    );
    parts
        .headers
        .insert(forwarded::X_REQUEST_ID, context.request_id.clone());
    let origin = upstream::origin_form(std::mem::take(&mut parts.uri), &context.path)?;
    let mut body = if http_body::Body::is_end_stream(&body) {
        // Nothing to count or limit (most requests): no wrapper and no counter to allocate.
        crate::respond::empty_body()
    } else {
        let progress = context.body.get_or_insert_with(Default::default).clone();
        body_limit::LimitedBody::new(body, route.max_body_bytes, progress).boxed()
    };
    if let Some(rules) = body_rules {
        context.stage = Stage::Validate;
        body = validate::check_body(rules, content_type.as_deref(), body).await?;
    }

    // 9. upstream
    context.stage = Stage::Upstream;
    if let Some(identity) = &route.cluster.expected_identity {
        responses::check_destination(&runtime.responses, identity)?;
    }
    let http2_client = parts.version == Version::HTTP_2;
    let prepared = upstream::Prepared {
        method: parts.method,
        origin,
        headers: parts.headers,
        body,
        client_upgrade,
    };
    // Boxed: held inline, the upstream exchange made the request's future 4,176 bytes (2,432 with it
    // boxed), and hyper's dispatcher copies that future wherever it moves it.
    let response = Box::pin(upstream::forward(&route.cluster, route.protocol, context, prepared)).await?;
    if !http2_client {
        return Ok(response);
    }
    let limits = &runtime.config.limits;
    let read_ahead = usize::try_from(limits.response_read_ahead.get()).unwrap_or(usize::MAX);
    Ok(response.map(|body| read_ahead::read_ahead(body, read_ahead, limits.send_timeout.get())))
}

/// A POST with method-override headers on a route that takes them is routed (again), authorized and
/// sent as the method they name; the headers are removed whether or not they were taken.
fn override_method(
    runtime: &Runtime,
    context: &mut RequestContext,
    request: &mut Request<Incoming>,
    index: usize,
) -> Result<usize, GatewayError> {
    let takes_override = runtime.routes.get(index).is_some_and(|route| route.method_override);
    let result = if takes_override && request.method() == http::Method::POST {
        let method = method_override::requested(request.headers())?;
        let index = route::find(runtime, context, &method)?;
        if !runtime.routes.get(index).is_some_and(|route| route.method_override) {
            return Err(GatewayError::BadRequest("method_override_not_allowed"));
        }
        context.method = method.clone();
        *request.method_mut() = method;
        index
    } else {
        index
    };
    method_override::remove(request.headers_mut());
    Ok(result)
}

/// Respond stage: what every response of this request carries besides its own headers — rate-limit
/// state, CORS, lifecycle and security headers.
fn decorate(
    runtime: &Runtime,
    connection: &ConnectionInfo,
    context: &mut RequestContext,
    headers: &mut http::HeaderMap,
) {
    if let Some((policy, status)) = context.rate_limit_headers.take() {
        headers.insert(rate_limit::RATELIMIT_POLICY, policy);
        headers.insert(rate_limit::RATELIMIT, status);
    }
    if let Some(route) = context.route_index.and_then(|index| runtime.routes.get(index)) {
        // A preflight's answer (204, or 403 when refused) already says everything CORS has to say.
        if let (Some(cors), false) = (&route.cors, context.preflight) {
            cors.decorate(context.origin.as_ref(), headers);
        }
        if let Some(lifecycle) = &route.lifecycle {
            lifecycle.decorate(headers);
        }
    }
    runtime.security_headers.apply(headers, connection.tls);
}

/// Refusals of the traffic stages are counted by route and reason (rate limits count their own).
fn record_refusal(runtime: &Runtime, context: &RequestContext, error: &GatewayError) {
    if let Some(kind) = error.refusal_kind() {
        let principal = context
            .principal
            .as_ref()
            .map(|p| p.subject.as_str())
            .or(context.attempted_subject.as_deref());
        runtime
            .metrics
            .tallies()
            .refusals
            .record(kind, error.decision(), context.client_ip, principal);
    }
    if matches!(error, GatewayError::IpDenied | GatewayError::TooManyInFlight) {
        runtime
            .metrics
            .traffic_refused(runtime.route_label(context.route_index), error.reason());
    }
}

/// A path as the client sent it, for the access log of a request refused before normalization:
/// bounded, so a long path cannot bloat the log.
pub(crate) fn logged_path(raw: &str) -> String {
    const MAX_LOGGED_PATH: usize = 1024;
    let mut end = raw.len().min(MAX_LOGGED_PATH);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    raw[..end].to_string()
}

/// Framing that hyper accepted but a next hop might read differently is refused (see `framing.rs`).
fn check_framing(connection: &ConnectionInfo, request: &Request<Incoming>) -> Result<(), GatewayError> {
    if request.version() > Version::HTTP_11 {
        return Ok(());
    }
    if let Some(reason) = connection.verdicts.next() {
        return Err(GatewayError::BadFraming(reason));
    }
    let mut encodings = request.headers().get_all(TRANSFER_ENCODING).iter();
    match (encodings.next(), encodings.next()) {
        (None, _) => Ok(()),
        (Some(value), None) if value.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(GatewayError::BadFraming("invalid_transfer_encoding")),
    }
}
