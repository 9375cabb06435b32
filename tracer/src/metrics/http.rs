//! `GET /metrics` on hyper's HTTP/1 server. The listener sleeps in `accept` (epoll) while
//! nobody scrapes: no timer, no polling.
//!
//! The DaemonSet binds every address of the node, so anyone who can reach the port may hold
//! connections open without a word. A connection that has sent no request (since it opened, or
//! since its last answer) is idle; idle connections are bounded in number, per peer address and
//! in all, and the longest idle is closed to make room for a new one. A scraper sends its
//! request as soon as it connects, so it is answered however many idle connections are held.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::{CONTENT_TYPE, Metrics};

/// How long a client may take to send a request's head, and how many connections it may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// To send a request's line and headers, from when the connection opened or its last
    /// answer was sent.
    pub header_timeout: Duration,
    /// Connections one peer address may hold open.
    pub per_peer: usize,
    /// Connections held open in all.
    pub total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(5),
            per_peer: 32,
            total: 256,
        }
    }
}

/// Binds `addr`, only that address (the user chooses loopback or the network), and serves
/// the metrics there from the current runtime.
pub(crate) async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
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
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let open = Arc::new(Mutex::new(OpenConnections::default()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(8192);
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
        let Some(connection) = lock(&open).admit(peer.ip(), limits) else {
            log::debug!("metrics: {peer}: every connection of it is busy; closed");
            continue;
        };
        let service = {
            let metrics = Arc::clone(&metrics);
            let connection = Arc::clone(&connection);
            hyper::service::service_fn(move |request| {
                connection.busy();
                let response = respond(&request, &metrics);
                connection.idle();
                async move { Ok::<_, Infallible>(response) }
            })
        };
        let served = builder.serve_connection(TokioIo::new(stream), service);
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            tokio::select! {
                result = served => {
                    if let Err(err) = result {
                        log::debug!("metrics: {peer}: {err}");
                    }
                }
                // Idle the longest while others wait: closed without a word.
                () = connection.closing.notified() => {}
            }
            lock(&open).remove(connection.id);
        });
    }
}

/// One open connection, as the accept loop and its own task see it.
struct Connection {
    id: u64,
    peer: IpAddr,
    /// Since when it has had no request in progress; 0 while it has one.
    idle_since: AtomicU64,
    closing: Notify,
    epoch: Instant,
}

impl Connection {
    fn busy(&self) {
        self.idle_since.store(0, Ordering::Relaxed);
    }

    fn idle(&self) {
        let since = self.epoch.elapsed().as_nanos().max(1) as u64;
        self.idle_since.store(since, Ordering::Relaxed);
    }

    fn idle_since(&self) -> Option<u64> {
        Some(self.idle_since.load(Ordering::Relaxed)).filter(|&since| since > 0)
    }
}

#[derive(Default)]
struct OpenConnections {
    by_id: HashMap<u64, Arc<Connection>>,
    next_id: u64,
    epoch: Option<Instant>,
}

impl OpenConnections {
    /// A new connection from `peer`, once there is room for it: the longest idle of that peer
    /// (if it holds its share), else of all (if all are held), is closed. `None` when every
    /// connection that would have to go is busy.
    fn admit(&mut self, peer: IpAddr, limits: Limits) -> Option<Arc<Connection>> {
        let peers = self.by_id.values().filter(|open| open.peer == peer).count();
        if peers >= limits.per_peer.max(1) && !self.close_longest_idle(Some(peer)) {
            return None;
        }
        if self.by_id.len() >= limits.total.max(1) && !self.close_longest_idle(None) {
            return None;
        }
        let epoch = *self.epoch.get_or_insert_with(Instant::now);
        let connection = Arc::new(Connection {
            id: self.next_id,
            peer,
            idle_since: AtomicU64::new(0),
            closing: Notify::new(),
            epoch,
        });
        // Idle until its first request comes.
        connection.idle();
        self.next_id += 1;
        self.by_id.insert(connection.id, Arc::clone(&connection));
        Some(connection)
    }

    fn close_longest_idle(&mut self, of: Option<IpAddr>) -> bool {
        let longest = self
            .by_id
            .values()
            .filter(|open| of.is_none_or(|peer| open.peer == peer))
            .filter_map(|open| Some((open.idle_since()?, open.id)))
            .min();
        let Some((_, id)) = longest else {
            return false;
        };
        if let Some(open) = self.by_id.remove(&id) {
            open.closing.notify_one();
        }
        true
    }

    fn remove(&mut self, id: u64) {
        self.by_id.remove(&id);
    }
}

fn lock(open: &Mutex<OpenConnections>) -> std::sync::MutexGuard<'_, OpenConnections> {
    open.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// What to answer a request: the metrics for `GET /metrics`, else an error.
pub(crate) fn respond<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return error(StatusCode::NOT_FOUND);
    }
    if request.method() != Method::GET {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED);
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

fn error(status: StatusCode) -> Response<Full<Bytes>> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut response = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
