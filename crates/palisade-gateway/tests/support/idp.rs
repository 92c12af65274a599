//! A small identity provider on a real socket: serves a JWK Set (changeable, and switchable to
//! failing), an OIDC discovery document, and an RFC 7662 introspection endpoint, and counts calls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

#[derive(Default)]
pub struct IdpState {
    pub jwks: Mutex<Value>,
    pub failing: AtomicBool,
    pub jwks_fetches: AtomicUsize,
    pub introspections: AtomicUsize,
    /// Introspection answers by token.
    pub introspection: Mutex<HashMap<String, Value>>,
    /// The `issuer` the discovery document names; default: this server's own URL.
    pub discovery_issuer: Mutex<Option<String>>,
    /// Basic credentials the introspection endpoint requires.
    pub client_basic: Mutex<String>,
}

pub struct Idp {
    pub address: SocketAddr,
    pub state: Arc<IdpState>,
}

impl Idp {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_jwks(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    pub fn fail(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    pub fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
}

pub async fn start(jwks: Value) -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = Arc::new(IdpState::default());
    *state.jwks.lock().unwrap() = jwks;
    let served = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = served.clone();
            let service = hyper::service::service_fn(move |request| answer(state.clone(), address, request));
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Idp { address, state }
}

async fn answer(
    state: Arc<IdpState>,
    address: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if state.failing.load(Ordering::SeqCst) {
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"})));
    }
    let path = request.uri().path().to_string();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let response = match path.as_str() {
        "/jwks" => {
            state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            reply(StatusCode::OK, state.jwks.lock().unwrap().clone())
        }
        "/.well-known/openid-configuration" => {
            let own = format!("http://{address}");
            let issuer = state.discovery_issuer.lock().unwrap().clone().unwrap_or(own.clone());
            reply(
                StatusCode::OK,
                json!({"issuer": issuer, "jwks_uri": format!("{own}/jwks")}),
            )
        }
        "/introspect" => {
            state.introspections.fetch_add(1, Ordering::SeqCst);
            if authorization != *state.client_basic.lock().unwrap() {
                reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}))
            } else {
                let token = form_value(&body, "token").unwrap_or_default();
                let answer = state.introspection.lock().unwrap().get(&token).cloned();
                reply(StatusCode::OK, answer.unwrap_or(json!({"active": false})))
            }
        }
        _ => reply(StatusCode::NOT_FOUND, json!({})),
    };
    Ok(response)
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(body).split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.replace("%2E", ".").replace("%2D", "-"))
    })
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
