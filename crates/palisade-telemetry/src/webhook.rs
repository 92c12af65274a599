//! Alert notifications to a webhook: JSON POSTs, one at a time in order, each retried with
//! exponential backoff. A bounded queue sits in front, so a slow or dead receiver costs memory
//! bounded by the queue and never delays the detectors; what is given up is counted.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::audit::otlp::{http_client, post_json, secret_headers};

/// Notifications waiting for delivery; beyond it new ones are given up (and counted).
const QUEUE: usize = 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where alerts go.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: String,
    /// Request headers; values are secrets and never logged.
    pub headers: Vec<(String, String)>,
    pub ca: Option<PathBuf>,
    pub max_attempts: u32,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        write!(f, "WebhookTarget({}, headers {names:?})", describe(&self.url))
    }
}

pub struct Webhook {
    target: WebhookTarget,
    queue: mpsc::Sender<Vec<u8>>,
    failures: Counter,
    sender: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// Starts the delivery task (needs a Tokio runtime).
    pub fn start(target: WebhookTarget, failures: Counter) -> std::io::Result<Webhook> {
        let uri: Uri = target
            .url
            .parse()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the webhook URL is invalid"))?;
        let headers = secret_headers(&target.headers)?;
        let client = http_client(target.ca.as_deref())?;
        let (queue, mut waiting) = mpsc::channel::<Vec<u8>>(QUEUE);
        let attempts = target.max_attempts.max(1);
        let receiver = describe(&target.url);
        let given_up = failures.clone();
        let sender = tokio::spawn(async move {
            while let Some(body) = waiting.recv().await {
                let mut backoff = FIRST_BACKOFF;
                for attempt in 1..=attempts {
                    match post_json(&client, &uri, &headers, body.clone()).await {
                        Ok(()) => break,
                        Err(error) if attempt == attempts => {
                            given_up.inc();
                            tracing::warn!(event = "alert_webhook_failed", webhook = %receiver, attempts, %error,
                                "alert notification given up");
                        }
                        Err(_) => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
        });
        Ok(Webhook {
            target,
            queue,
            failures,
            sender,
        })
    }

    pub fn target(&self) -> &WebhookTarget {
        &self.target
    }

    /// Queues one notification; never waits.
    pub fn notify(&self, body: &serde_json::Value) {
        let body = serde_json::to_vec(body).unwrap_or_default();
        if self.queue.try_send(body).is_err() {
            self.failures.inc();
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

/// Scheme, host and port: a webhook URL's path or query may hold a token.
fn describe(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("?"),
            uri.authority()
                .map(|a| a.as_str().rsplit('@').next().unwrap_or(""))
                .unwrap_or("")
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A receiver that fails the first `failures` calls, then keeps what it gets.
    async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<(http::HeaderMap, serde_json::Value)>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<(http::HeaderMap, serde_json::Value)>>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let store = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (store, calls) = (store.clone(), calls.clone());
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (store, calls) = (store.clone(), calls.clone());
                    async move {
                        let headers = request.headers().clone();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let status = if calls.fetch_add(1, Ordering::SeqCst) < failures {
                            503
                        } else {
                            store
                                .lock()
                                .unwrap()
                                .push((headers, serde_json::from_slice(&body).unwrap()));
                            204
                        };
                        let mut response = http::Response::new(Full::new(Bytes::new()));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (format!("http://{address}/hooks/palisade"), received)
    }

    fn target(url: String, max_attempts: u32) -> WebhookTarget {
        WebhookTarget {
            url,
            headers: vec![("authorization".into(), "Bearer hook-secret".into())],
            ca: None,
            max_attempts,
        }
    }

    #[tokio::test]
    async fn a_failing_receiver_gets_the_alert_after_retries() {
        let (url, received) = receiver(2).await;
        let failures = Counter::default();
        let webhook = Webhook::start(target(url, 5), failures.clone()).unwrap();
        webhook.notify(&serde_json::json!({"change": "opened", "alert": {"id": 1}}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while received.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 1, "delivered on the third attempt");
        assert_eq!(received[0].1["alert"]["id"], 1);
        assert_eq!(received[0].0["authorization"], "Bearer hook-secret");
        assert_eq!(failures.get(), 0);
        assert!(!format!("{:?}", webhook.target()).contains("hook-secret"));
    }

    #[tokio::test]
    async fn a_dead_receiver_costs_a_counted_failure() {
        let (url, received) = receiver(usize::MAX).await;
        let failures = Counter::default();
        let webhook = Webhook::start(target(url, 2), failures.clone()).unwrap();
        webhook.notify(&serde_json::json!({"change": "opened"}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while failures.get() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(failures.get(), 1);
        assert!(received.lock().unwrap().is_empty());
    }

    #[test]
    fn the_url_is_shown_without_credentials_or_path() {
        assert_eq!(
            describe("https://user:pw@hooks.example.com:8443/t/SECRET?k=v"),
            "https://hooks.example.com:8443"
        );
    }
}
