//! `GET /metrics` over HTTP/1.x: one request per connection, bounded in size, time and
//! concurrency. The listener sleeps in `accept` (epoll) while nobody scrapes: no timer, no
//! polling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{CONTENT_TYPE, Metrics};

/// How much and how long a scraper may take to send its request, and how many may be served
/// at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The request line and headers; a scrape sends a few hundred bytes.
    pub max_request_bytes: usize,
    /// To send the request, and again to take the response.
    pub timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 8 * 1024,
            timeout: Duration::from_secs(5),
            max_connections: 16,
        }
    }
}

/// Binds `addr`, only that address (the user chooses loopback or the network), and serves
/// the metrics there from the current runtime.
pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics scrapes on {addr}"))?;
    log::info!(
        "serving Prometheus metrics at http://{}/metrics",
        listener.local_addr().unwrap_or(addr)
    );
    tokio::spawn(serve(listener, metrics, Limits::default()));
    Ok(())
}

/// Serves scrapes until the runtime stops.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: wait before trying again rather than spin.
                log::warn!("metrics: accepting a connection: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            log::debug!("metrics: {peer}: too many connections, closed");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            if let Err(err) = connection(stream, &metrics, limits).await {
                log::debug!("metrics: {peer}: {err}");
            }
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    metrics: &Metrics,
    limits: Limits,
) -> std::io::Result<()> {
    let response = match tokio::time::timeout(
        limits.timeout,
        read_head(&mut stream, limits.max_request_bytes),
    )
    .await
    {
        Ok(Ok(Some(head))) => respond(&head, metrics),
        // Closed without a word.
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(HeadError::TooLarge)) => Response::error(431, "Request Header Fields Too Large"),
        Ok(Err(HeadError::Truncated)) => Response::error(400, "Bad Request"),
        Ok(Err(HeadError::Io(err))) => return Err(err),
        Err(_) => Response::error(408, "Request Timeout"),
    };
    let written = tokio::time::timeout(limits.timeout, async {
        stream.write_all(&response.to_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the response was not taken in time",
        )),
    }
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    /// The connection ended mid-request.
    Truncated,
    Io(std::io::Error),
}

/// The request line and headers, up to the blank line; `None` if the peer sent nothing.
async fn read_head(stream: &mut TcpStream, max: usize) -> Result<Option<Vec<u8>>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if read == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Truncated)
            };
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head_end(&head) {
            head.truncate(end);
            return Ok(Some(head));
        }
        if head.len() >= max {
            return Err(HeadError::TooLarge);
        }
    }
}

fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = bytes.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// One response, always followed by closing the connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    reason: &'static str,
    content_type: &'static str,
    pub body: String,
}

impl Response {
    fn error(status: u16, reason: &'static str) -> Self {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: format!("{reason}\n"),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let allow = if self.status == 405 {
            "Allow: GET\r\n"
        } else {
            ""
        };
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// What to answer a request head: the metrics for `GET /metrics`, else an error.
pub fn respond(head: &[u8], metrics: &Metrics) -> Response {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let mut parts = head[..line_end].split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::error(400, "Bad Request");
    };
    if !version.starts_with(b"HTTP/1.") {
        return Response::error(400, "Bad Request");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path != b"/metrics" {
        return Response::error(404, "Not Found");
    }
    if method != b"GET" {
        return Response::error(405, "Method Not Allowed");
    }
    Response {
        status: 200,
        reason: "OK",
        content_type: CONTENT_TYPE,
        body: metrics.encode(),
    }
}
