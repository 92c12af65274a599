//! `palisade probe URL`: an HTTP GET to a loopback admin endpoint, exit 0 on a 2xx answer. For
//! Kubernetes exec probes in the distroless image (no shell, no curl), so that the admin listener
//! never has to leave the pod's loopback.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn run(url: &str, timeout: Duration) -> anyhow::Result<ExitCode> {
    let uri: http::Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs (an admin listener on loopback)"
    );
    let authority = uri.authority().context("the URL has no host:port")?.clone();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 32];
        let mut read = 0;
        while read < 12 {
            let n = stream.read(&mut head[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..read]).to_string())
    };
    let head = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(head)) => head,
        Ok(Err(error)) => {
            eprintln!("probe {url}: {error}");
            return Ok(ExitCode::from(1));
        }
        Err(_) => {
            eprintln!("probe {url}: no answer within {timeout:?}");
            return Ok(ExitCode::from(1));
        }
    };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(code) if (200..300).contains(&code) => Ok(ExitCode::SUCCESS),
        Some(code) => {
            eprintln!("probe {url}: HTTP {code}");
            Ok(ExitCode::from(1))
        }
        None => {
            eprintln!("probe {url}: not an HTTP answer");
            Ok(ExitCode::from(1))
        }
    }
}
