//! gRPC's transport to a runtime on this node: one HTTP/2 connection over its unix socket, made
//! by hyper, wrapped as the service tonic's generated clients call. (tonic's own `Channel`
//! would bring load balancing and reconnection machinery that one local socket does not need.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;

/// gRPC needs an authority; the socket is the real address.
const ORIGIN: &str = "http://localhost";

/// A connection's sending half: cheap to clone, all clones share the connection.
#[derive(Clone, Debug)]
pub struct UnixChannel {
    send: SendRequest<Body>,
}

impl UnixChannel {
    /// Connects and does the HTTP/2 handshake. The connection is driven by a task of its own,
    /// which ends when the runtime closes it (e.g. it restarted); calls fail from then on.
    pub async fn connect(socket: &str) -> std::io::Result<Self> {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::debug!("CRI connection closed: {err}");
            }
        });
        Ok(UnixChannel { send })
    }

    pub fn origin() -> http::Uri {
        http::Uri::from_static(ORIGIN)
    }

    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

impl tower_service::Service<http::Request<Body>> for UnixChannel {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}
