//! Audit events as OpenTelemetry log records, sent with OTLP/HTTP (JSON encoding) to a collector's
//! `/v1/logs`. Each record's body is the OCSF event (as JSON text, lossless), with the event name, the
//! OCSF class and the severity as attributes a pipeline can route on.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::event::AuditEvent;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where an OTLP sink sends events.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpTarget {
    /// The collector's base URL (`https://collector:4318`); `/v1/logs` is appended.
    pub endpoint: String,
    /// Extra request headers (e.g. the collector's token). Values are secrets: never logged.
    pub headers: Vec<(String, String)>,
    /// A PEM bundle trusted besides the Mozilla roots (a private collector).
    pub ca: Option<std::path::PathBuf>,
    /// `service.name` of the resource.
    pub service_name: String,
}

impl std::fmt::Debug for OtlpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        write!(f, "OtlpTarget({}, headers {names:?})", self.endpoint)
    }
}

pub struct Otlp {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    service_name: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Otlp {
    pub fn new(target: OtlpTarget) -> std::io::Result<Otlp> {
        let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        let uri: Uri = format!("{}/v1/logs", target.endpoint.trim_end_matches('/'))
            .parse()
            .map_err(|_| invalid(format!("{:?} is not a URL", target.endpoint)))?;
        let headers = secret_headers(&target.headers)?;
        let client = http_client(target.ca.as_deref())?;
        Ok(Otlp {
            uri,
            headers,
            service_name: target.service_name,
            client,
        })
    }

    /// One OTLP log record for `event` (its JSON already made).
    pub fn record(event: &AuditEvent, json: &[u8]) -> Value {
        let (number, text) = match event.severity_id {
            0 | 1 => (9, "INFO"),
            2 => (10, "INFO2"),
            3 => (13, "WARN"),
            4 => (17, "ERROR"),
            _ => (21, "FATAL"),
        };
        let nanos = (u128::from(event.time) * 1_000_000).to_string();
        let name = serde_json::to_value(event.unmapped.event).unwrap_or(Value::Null);
        json!({
            "timeUnixNano": nanos,
            "observedTimeUnixNano": nanos,
            "severityNumber": number,
            "severityText": text,
            "body": { "stringValue": String::from_utf8_lossy(json) },
            "attributes": [
                { "key": "palisade.event", "value": { "stringValue": name } },
                { "key": "ocsf.class_uid", "value": { "intValue": event.class_uid.to_string() } },
                { "key": "ocsf.type_uid", "value": { "intValue": event.type_uid.to_string() } },
            ],
        })
    }

    /// Sends a batch of records (each serialized already) in one request; anything but a 2xx answer
    /// is a failure.
    pub async fn send(&self, records: &[Vec<u8>]) -> std::io::Result<()> {
        let resource = json!({ "attributes": [
            { "key": "service.name", "value": { "stringValue": self.service_name } },
        ]});
        let mut body = format!(
            "{{\"resourceLogs\":[{{\"resource\":{resource},\"scopeLogs\":[{{\"scope\":{{\"name\":\"palisade.audit\"}},\"logRecords\":["
        )
        .into_bytes();
        for (index, record) in records.iter().enumerate() {
            if index > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
        }
        body.extend_from_slice(b"]}]}]}");
        post_json(&self.client, &self.uri, &self.headers, body).await
    }
}

/// POSTs a JSON body with `headers`; anything but a 2xx answer within the timeout is a failure.
pub(crate) async fn post_json(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Vec<u8>,
) -> std::io::Result<()> {
    let mut request = Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(std::io::Error::other)?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    let exchange = async {
        let response = client.request(request).await.map_err(std::io::Error::other)?;
        let status = response.status();
        // Read the (small) answer so that the connection can be reused.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("the receiver answered {status}")))
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Header values marked sensitive, so that no debug output shows them.
pub(crate) fn secret_headers(headers: &[(String, String)]) -> std::io::Result<Vec<(HeaderName, HeaderValue)>> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|_| invalid(format!("header name {name:?}")))?;
        let mut value = HeaderValue::try_from(value.as_str()).map_err(|_| invalid(format!("header {name} value")))?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

pub(crate) fn http_client(
    extra_ca: Option<&Path>,
) -> std::io::Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
    let trust = match extra_ca {
        Some(path) => palisade_tls::Trust::WebRootsAnd(path),
        None => palisade_tls::Trust::WebRoots,
    };
    let tls = palisade_tls::client_config(palisade_tls::ClientSettings::new(trust))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, AuditMetrics, AuditSink, EventKind};
    use std::sync::{Arc, Mutex};

    /// A collector on 127.0.0.1 that keeps what it receives and answers `status`.
    async fn collector(status: u16) -> (String, Arc<Mutex<Vec<(http::HeaderMap, Value)>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<(http::HeaderMap, Value)>>> = Arc::default();
        let store = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(request.uri().path(), "/v1/logs");
                        let headers = request.headers().clone();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        store
                            .lock()
                            .unwrap()
                            .push((headers, serde_json::from_slice(&body).unwrap()));
                        let mut response = http::Response::new(Full::new(Bytes::from_static(b"{}")));
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
        (format!("http://{address}"), received)
    }

    fn target(endpoint: String) -> OtlpTarget {
        OtlpTarget {
            endpoint,
            headers: vec![("authorization".into(), "Bearer collector-token".into())],
            ca: None,
            service_name: "palisade-gw".into(),
        }
    }

    #[tokio::test]
    async fn events_reach_the_collector_as_otlp_log_records() {
        let (endpoint, received) = collector(200).await;
        let metrics = AuditMetrics::default();
        let log = AuditLog::start(vec![AuditSink::Otlp(target(endpoint))], 64, metrics.clone())
            .await
            .unwrap();
        log.record(AuditEvent::new(
            EventKind::AuthenticationFailed,
            Some("token_expired"),
            "GET / refused",
        ));
        for _ in 0..100 {
            if metrics.written.get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let received = received.lock().unwrap();
        let (headers, body) = &received[0];
        assert_eq!(headers["authorization"], "Bearer collector-token");
        let resource = &body["resourceLogs"][0];
        assert_eq!(
            resource["resource"]["attributes"][0]["value"]["stringValue"],
            "palisade-gw"
        );
        let record = &resource["scopeLogs"][0]["logRecords"][0];
        assert_eq!(record["severityText"], "WARN");
        assert_eq!(record["attributes"][0]["value"]["stringValue"], "authentication_failed");
        assert_eq!(record["attributes"][1]["value"]["intValue"], "3002");
        let event: Value = serde_json::from_str(record["body"]["stringValue"].as_str().unwrap()).unwrap();
        assert_eq!(event["status_detail"], "token_expired");
    }

    #[tokio::test]
    async fn a_refusing_collector_costs_counted_events_only() {
        let (endpoint, _) = collector(503).await;
        let metrics = AuditMetrics::default();
        let log = AuditLog::start(vec![AuditSink::Otlp(target(endpoint))], 64, metrics.clone())
            .await
            .unwrap();
        log.record(AuditEvent::new(EventKind::IpBlocked, Some("ip_denied"), "refused"));
        for _ in 0..100 {
            if metrics.dropped.get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((metrics.written.get(), metrics.dropped.get()), (0, 1));
        assert!(
            !format!("{:?}", target("x".into())).contains("collector-token"),
            "headers never printed"
        );
    }
}
