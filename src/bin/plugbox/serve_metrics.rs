//! `plugbox serve --metrics ADDR`: answers `GET /metrics` on a loopback address with the
//! engine's metrics in the Prometheus text format ([`Engine::metrics_text`]).
//!
//! Loopback only: the metrics name the plugins loaded and their traffic, and the endpoint has
//! no authentication, so a non-loopback address is refused at start (put a proxy in front to
//! export it further). One connection is answered at a time, each within
//! [`CONNECTION_TIMEOUT`], and a request head is read up to [`MAX_HEAD_BYTES`]: a client that
//! stalls or floods delays only the next scrape, never the engine.

use plugbox::engine::metrics::CONTENT_TYPE;
use plugbox::engine::Engine;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long one connection may take, from accept to the last byte written.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Binds `addr` (`IP:PORT`, a loopback IP; port 0 picks a free one) and says where on stderr:
/// `plugbox: metrics on http://127.0.0.1:9464/metrics`.
pub async fn bind(addr: &str) -> Result<TcpListener, String> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| format!("--metrics {addr:?}: expected IP:PORT, such as 127.0.0.1:9464"))?;
    if !parsed.ip().is_loopback() {
        return Err(format!(
            "--metrics {parsed}: not a loopback address; the metrics endpoint has no authentication, so it listens on 127.0.0.1 or ::1 only"
        ));
    }
    let listener = TcpListener::bind(parsed)
        .await
        .map_err(|e| format!("--metrics {parsed}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("plugbox: metrics on http://{local}/metrics");
    Ok(listener)
}

/// Answers scrapes on `listener` until the runtime ends.
pub async fn serve(listener: TcpListener, engine: Engine) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if let Err(e) = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &engine)).await {
            tracing::debug!("metrics: connection dropped: {e}");
        }
    }
}

/// Reads one request head and answers it; the connection is closed after.
async fn answer(mut stream: TcpStream, engine: &Engine) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD_BYTES {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(b"");
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
    let (status, body, kind) = match (method, target) {
        (b"GET", b"/metrics") => ("200 OK", engine.metrics_text(), CONTENT_TYPE),
        (b"GET", _) => ("404 Not Found", "try /metrics\n".to_owned(), "text/plain"),
        _ => (
            "405 Method Not Allowed",
            "GET only\n".to_owned(),
            "text/plain",
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}
