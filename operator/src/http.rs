//! The operator's HTTP endpoints: `/healthz` (alive), `/readyz` (initialised: standby replicas are
//! ready too) and `/metrics` (Prometheus text format). A deliberately small HTTP/1.1 responder: one
//! request per connection, GET only, request heads up to 8 KiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

const MAX_HEAD: usize = 8 * 1024;

/// What the endpoints report.
#[derive(Debug, Default)]
pub struct HttpState {
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Set once the operator is initialised (connected, capabilities discovered).
    pub ready: AtomicBool,
}

/// Serves `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(Duration::from_secs(10), handle(stream, &state)).await.is_err() {
                tracing::debug!("an HTTP client was too slow");
            }
        });
    }
}

/// The response to `GET path`: status line, content type, body.
pub fn respond(path: &str, state: &HttpState) -> (&'static str, &'static str, String) {
    match path {
        "/healthz" | "/livez" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" if state.ready.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ready\n".into()),
        "/readyz" => ("503 Service Unavailable", "text/plain", "starting\n".into()),
        "/metrics" => match state.metrics.encode() {
            Ok(text) => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
            Err(_) => ("500 Internal Server Error", "text/plain", "metrics encoding failed\n".into()),
        },
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

async fn handle(mut stream: TcpStream, state: &HttpState) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => respond(path.split('?').next().unwrap_or(path), state),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState::default());
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state.clone(), stop.clone()));
        assert!(get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 200 OK"));
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 503"));
        state.ready.store(true, Ordering::Relaxed);
        assert!(
            get(addr, "GET /readyz?verbose HTTP/1.1\r\nHost: x\r\n\r\n").await.starts_with("HTTP/1.1 200 OK")
        );
        state.metrics.set_leader(true);
        let metrics = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(metrics.contains("drakkar_operator_leader 1"), "{metrics}");
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
        server.await.unwrap();
    }
}
