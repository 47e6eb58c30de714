//! A minimal HTTP/1.1 responder for Prometheus scrapes: `GET /metrics`, one request per connection.
//! No web framework: the whole protocol surface is a request line, a bounded header block and a
//! response with Content-Length.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::MetricsHub;
use super::prometheus::{self, CONTENT_TYPE};

/// Request line and headers; a scrape request is a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Slow or stuck clients are dropped after this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 32;

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, hub: Arc<MetricsHub>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept a Prometheus connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: too many scrapers at once
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, &hub)).await;
        });
    }
}

async fn handle(mut stream: TcpStream, hub: &MetricsHub) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            )
            .await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let mut body = prometheus::render(&hub.history.latest_all());
            body.push_str(&hub.render_expositions());
            respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes(), method == "HEAD").await
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"use GET\n", false).await,
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"metrics are at /metrics\n", false).await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}
