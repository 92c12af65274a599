//! Audit events to a syslog collector: RFC 5424 messages over TCP (RFC 6587 octet counting) or TLS
//! (RFC 5425), facility 13 (log audit). The connection is opened lazily and reopened after a failure;
//! a write that fails loses its batch, which the writer counts and later reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::event::AuditEvent;

/// RFC 5424 facility 13: log audit.
const FACILITY_LOG_AUDIT: u8 = 13;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a syslog sink sends events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    /// `host:port` of the collector.
    pub address: String,
    /// TLS to the collector: the CA bundle to verify it with (`None`: the Mozilla roots) and the
    /// name to verify. Absent: plain TCP.
    pub tls: Option<(Option<PathBuf>, String)>,
    /// HOSTNAME field of each message.
    pub hostname: String,
}

type Stream = Box<dyn AsyncWrite + Send + Sync + Unpin>;

pub struct Syslog {
    target: SyslogTarget,
    connector: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    stream: Option<Stream>,
}

impl Syslog {
    /// Prepares the sink; a TLS setup problem (unreadable CA) is an error now, not at the first event.
    pub fn new(target: SyslogTarget) -> std::io::Result<Syslog> {
        let connector = match &target.tls {
            None => None,
            Some((ca, name)) => Some(tls_connector(ca.as_ref(), name)?),
        };
        Ok(Syslog {
            target,
            connector,
            stream: None,
        })
    }

    /// Writes framed messages; on failure the connection is dropped (the next batch reconnects).
    pub async fn write(&mut self, messages: &[u8]) -> std::io::Result<()> {
        if self.stream.is_none() {
            self.stream = Some(self.connect().await?);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        let written = async {
            stream.write_all(messages).await?;
            stream.flush().await
        }
        .await;
        if written.is_err() {
            self.stream = None;
        }
        written
    }

    async fn connect(&self) -> std::io::Result<Stream> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.target.address))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let _ = tcp.set_nodelay(true);
        match &self.connector {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                Ok(Box::new(tls))
            }
        }
    }

    /// One event as an octet-counted RFC 5424 message.
    pub fn frame(&self, event: &AuditEvent, json: &[u8], out: &mut Vec<u8>) {
        let severity = match event.severity_id {
            0 | 1 => 6, // informational
            2 => 5,     // notice
            3 => 4,     // warning
            4 => 3,     // error
            _ => 2,     // critical
        };
        let priority = FACILITY_LOG_AUDIT * 8 + severity;
        let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(event.time));
        let message_id = serde_json::to_value(event.unmapped.event)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "-".into());
        let header = format!(
            "<{priority}>1 {time} {} palisade {} {message_id} - ",
            printable_or_dash(&self.target.hostname),
            std::process::id()
        );
        let length = header.len() + json.len();
        out.extend_from_slice(format!("{length} ").as_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(json);
    }
}

/// RFC 5424 header fields are printable US-ASCII without spaces; anything else becomes `-`.
fn printable_or_dash(text: &str) -> &str {
    if !text.is_empty() && text.len() <= 255 && text.bytes().all(|b| (33..=126).contains(&b)) {
        text
    } else {
        "-"
    }
}

fn tls_connector(
    ca: Option<&PathBuf>,
    name: &str,
) -> std::io::Result<(tokio_rustls::TlsConnector, ServerName<'static>)> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let trust = match ca {
        Some(path) => palisade_tls::Trust::Only(path),
        None => palisade_tls::Trust::WebRoots,
    };
    let config = palisade_tls::client_config(palisade_tls::ClientSettings::new(trust))
        .map_err(|e| invalid(format!("syslog TLS: {e}")))?;
    let name = ServerName::try_from(name.to_string()).map_err(|_| invalid(format!("{name:?} is not a server name")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, AuditMetrics, AuditSink, EventKind};
    use tokio::io::{AsyncRead, AsyncReadExt};

    /// Reads one octet-counted frame.
    async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> String {
        let mut length = Vec::new();
        loop {
            let byte = stream.read_u8().await.unwrap();
            if byte == b' ' {
                break;
            }
            length.push(byte);
        }
        let length: usize = String::from_utf8(length).unwrap().parse().unwrap();
        let mut message = vec![0; length];
        stream.read_exact(&mut message).await.unwrap();
        String::from_utf8(message).unwrap()
    }

    fn event() -> AuditEvent {
        AuditEvent::new(EventKind::IpBlocked, Some("ip_denied"), "GET / refused: ip_denied")
    }

    fn target(address: String, tls: Option<(Option<PathBuf>, String)>) -> SyslogTarget {
        SyslogTarget {
            address,
            tls,
            hostname: "gw-1".into(),
        }
    }

    #[tokio::test]
    async fn events_arrive_as_octet_counted_rfc5424_messages_over_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let log = AuditLog::start(
            vec![AuditSink::Syslog(target(address, None))],
            64,
            AuditMetrics::default(),
        )
        .await
        .unwrap();
        log.record(event());
        let (mut stream, _) = listener.accept().await.unwrap();
        let message = read_frame(&mut stream).await;
        // facility 13 (log audit) × 8 + severity 5 (notice, for a Low event)
        assert!(message.starts_with("<109>1 "), "{message}");
        let fields: Vec<&str> = message.splitn(8, ' ').collect();
        assert_eq!(&fields[2..4], ["gw-1", "palisade"]);
        assert_eq!(fields[5], "ip_blocked", "MSGID");
        assert_eq!(fields[6], "-", "no structured data");
        let json: serde_json::Value = serde_json::from_str(fields[7]).unwrap();
        assert_eq!(json["class_uid"], 4002);
    }

    #[tokio::test]
    async fn a_collector_that_was_down_gets_a_report_of_what_was_lost() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener); // down
        let metrics = AuditMetrics::default();
        let sink = AuditSink::Syslog(target(address.to_string(), None));
        let log = AuditLog::start(vec![sink], 64, metrics.clone()).await.unwrap();
        log.record(event());
        for _ in 0..100 {
            if metrics.dropped.get() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            metrics.dropped.get(),
            1,
            "the event the collector could not take is counted"
        );
        let listener = tokio::net::TcpListener::bind(address).await.unwrap(); // back
        log.record(event());
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut kinds = vec![read_frame(&mut stream).await, read_frame(&mut stream).await];
        kinds.sort();
        assert!(
            kinds
                .iter()
                .any(|m| m.contains(" audit_events_dropped - ") && m.contains("\"count\":1")),
            "{kinds:?}"
        );
        assert!(kinds.iter().any(|m| m.contains(" ip_blocked - ")), "{kinds:?}");
    }

    #[tokio::test]
    async fn tls_collectors_are_verified_and_receive_the_same_messages() {
        let certified = rcgen::generate_simple_self_signed(vec!["collector.test".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("palisade-syslog-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("collector.pem");
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();

        let wrong_name = target(address.clone(), Some((Some(ca.clone()), "other.test".into())));
        let metrics = AuditMetrics::default();
        let log = AuditLog::start(vec![AuditSink::Syslog(wrong_name)], 8, metrics.clone())
            .await
            .unwrap();
        log.record(event());
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(
            acceptor.accept(tcp).await.is_err(),
            "a collector with another name is not trusted"
        );

        let right = target(address, Some((Some(ca), "collector.test".into())));
        let log = AuditLog::start(vec![AuditSink::Syslog(right)], 8, AuditMetrics::default())
            .await
            .unwrap();
        log.record(event());
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await.unwrap();
        assert!(read_frame(&mut stream).await.contains(" ip_blocked - "));
    }
}
