//! HTTPS requests to identity providers (key sets, discovery, introspection): TLS with the public
//! web roots plus an optional CA bundle, a timeout for the whole exchange, and a cap on the answer's
//! size so that a hostile or broken IdP cannot exhaust memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Key sets and introspection answers are kilobytes.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("request failed: {0}")]
    Transport(String),
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes or cut short")]
    Body,
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("answer is not the expected JSON: {0}")]
    Json(String),
}

#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    bearer: Option<Bearer>,
}

/// A bearer token file and the one origin it may be sent to.
#[derive(Clone)]
struct Bearer {
    file: PathBuf,
    scheme: String,
    authority: http::uri::Authority,
}

impl Fetcher {
    /// `extra_ca`: a PEM bundle trusted in addition to the web roots (a private IdP).
    pub fn new(extra_ca: Option<&Path>, timeout: Duration) -> Result<Fetcher, String> {
        let trust = match extra_ca {
            Some(path) => palisade_tls::Trust::WebRootsAnd(path),
            None => palisade_tls::Trust::WebRoots,
        };
        let tls = palisade_tls::client_config(palisade_tls::ClientSettings::new(trust))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Fetcher {
            client,
            timeout,
            bearer: None,
        })
    }

    /// Sends the content of `file` as a bearer token with every request to `origin`'s scheme and
    /// authority, and to no other.
    pub fn with_bearer_token_file(mut self, file: &Path, origin: &Uri) -> Result<Fetcher, String> {
        let (Some(scheme), Some(authority)) = (origin.scheme_str(), origin.authority()) else {
            return Err(format!("{origin} is not an absolute URL"));
        };
        self.bearer = Some(Bearer {
            file: file.to_path_buf(),
            scheme: scheme.to_string(),
            authority: authority.clone(),
        });
        Ok(self)
    }

    pub async fn get_json(&self, uri: &Uri) -> Result<serde_json::Value, FetchError> {
        let mut request = Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        self.authorize(&mut request)?;
        self.send_json(request).await
    }

    /// Adds the bearer token when the request goes to the token's origin.
    pub fn authorize(&self, request: &mut Request<Full<Bytes>>) -> Result<(), FetchError> {
        let Some(bearer) = &self.bearer else {
            return Ok(());
        };
        let uri = request.uri();
        if uri.scheme_str() != Some(bearer.scheme.as_str()) || uri.authority() != Some(&bearer.authority) {
            return Ok(());
        }
        let token = std::fs::read_to_string(&bearer.file)
            .map_err(|e| FetchError::Transport(format!("bearer token file {}: {}", bearer.file.display(), e.kind())))?;
        let value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| FetchError::Transport(format!("bearer token file {}: not a token", bearer.file.display())))?;
        request.headers_mut().insert(http::header::AUTHORIZATION, value);
        Ok(())
    }

    /// Streams an answer into `destination` (an advisory archive: up to `max_bytes`, however long
    /// it takes within `deadline`); returns its size.
    pub async fn download(
        &self,
        uri: &Uri,
        destination: &Path,
        max_bytes: u64,
        deadline: Duration,
    ) -> Result<u64, FetchError> {
        use tokio::io::AsyncWriteExt;
        let exchange = async {
            let request = Request::get(uri.clone())
                .body(Full::default())
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status()));
            }
            let mut file = tokio::fs::File::create(destination)
                .await
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            let mut body = response.into_body();
            let mut written = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| FetchError::Body)?;
                if let Some(data) = frame.data_ref() {
                    written += data.len() as u64;
                    if written > max_bytes {
                        return Err(FetchError::Body);
                    }
                    file.write_all(data)
                        .await
                        .map_err(|e| FetchError::Transport(e.to_string()))?;
                }
            }
            file.flush().await.map_err(|e| FetchError::Transport(e.to_string()))?;
            Ok(written)
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    pub async fn send_json(&self, request: Request<Full<Bytes>>) -> Result<serde_json::Value, FetchError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Transport(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| FetchError::Body)?
                .to_bytes();
            if !status.is_success() {
                return Err(FetchError::Status(status));
            }
            serde_json::from_slice(&body).map_err(|e| FetchError::Json(e.to_string()))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}
