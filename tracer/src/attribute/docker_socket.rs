//! The Docker Engine API's unix socket, bounded: bollard's transport of one connection per
//! request, whose answer may take at most [`ANSWER_TIMEOUT`] and [`MAX_ANSWER_BYTES`]; and the
//! event stream, read here line by line, each line at most [`MAX_EVENT_BYTES`].
//!
//! bollard bounds a request until the answer's headers; it then reads the whole body into
//! memory, with neither a time nor a size limit, and keeps an unfinished event line whole,
//! parsing it again at each read. Whoever can listen at the socket (a runtime gone wrong, a
//! container with the host's socket mounted) could otherwise answer without end, and the agent
//! would keep it all, spend its time parsing it, or hold a listing open forever.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bollard::BollardRequest;
use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use futures_util::stream::{self, BoxStream, Stream, StreamExt as _};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::time::Sleep;

/// The most one answer (a listing, an inspection) may be: a node's listing of a thousand
/// containers is a few MiB.
pub(super) const MAX_ANSWER_BYTES: u64 = 32 << 20;
/// The most one event (one line of the stream) may be: a container's event is well under a KiB,
/// even with all its labels.
pub(super) const MAX_EVENT_BYTES: usize = 1 << 20;
/// How long one answer, headers and body, may take. The event stream has no end.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What bollard's custom transport returns for a request.
type Answer = Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, BollardError>> + Send>>;

/// bollard's custom transport for the socket at `socket`.
pub(super) fn transport(socket: &str) -> impl Fn(BollardRequest) -> Answer + Send + Sync + 'static {
    let socket = PathBuf::from(socket);
    move |request| Box::pin(send(socket.clone(), request))
}

async fn send(
    socket: PathBuf,
    request: BollardRequest,
) -> Result<http::Response<Incoming>, BollardError> {
    let request = origin_form(request)?;
    connect(&socket, Bound::Answer(MAX_ANSWER_BYTES), request).await
}

/// One request on a connection of its own.
async fn connect(
    socket: &Path,
    bound: Bound,
    request: BollardRequest,
) -> Result<http::Response<Incoming>, BollardError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => {
                BollardError::SocketNotFoundError(socket.display().to_string())
            }
            // A socket file nobody listens at (a stopped daemon): said as such by the caller.
            _ => BollardError::from(err),
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(Bounded::new(stream, bound))).await?;
    // Driven by a task of its own; it ends with the answer (the sender is dropped below, and
    // the connection closes once its one exchange is over) or when the body is dropped.
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            log::debug!("Docker API connection: {}", chain(&err));
        }
    });
    Ok(sender.send_request(request).await?)
}

/// bollard writes `http://localhost/v1.43/…`; a connection of our own sends the path and a
/// `Host`, as HTTP/1.1 servers expect.
fn origin_form(request: BollardRequest) -> Result<BollardRequest, BollardError> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    parts.uri = path.parse::<http::Uri>()?;
    parts.headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("localhost"),
    );
    Ok(BollardRequest::from_parts(parts, body))
}

/// An error and its causes, on one line: hyper's own message does not say what the
/// connection's reader reported.
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The Engine API's container events since `since` (whole seconds since the epoch), API
/// version `version`, from the socket at `socket`: each line parsed as it ends, none longer
/// than [`MAX_EVENT_BYTES`]. Errors say what went wrong, never what was read.
pub(super) fn events(
    socket: &str,
    version: &bollard::ClientVersion,
    since: u64,
) -> BoxStream<'static, Result<EventMessage, String>> {
    // `filters={"type":["container"]}`
    let path = format!(
        "/v{version}/events?since={since}&filters=%7B%22type%22%3A%5B%22container%22%5D%7D"
    );
    let socket = PathBuf::from(socket);
    let started = async move {
        let request = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(http_body_util::Either::Left(http_body_util::Full::new(
                bytes::Bytes::new(),
            )))
            .map_err(|err| err.to_string())?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, connect(&socket, Bound::Stream, request))
            .await
            .map_err(|_| format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()))?
            .map_err(|err| chain(&err))?;
        if !answer.status().is_success() {
            return Err(format!("the event stream was refused: {}", answer.status()));
        }
        Ok(answer.into_body())
    };
    stream::once(started)
        .flat_map(|started| match started {
            Ok(body) => lines(body).boxed(),
            Err(err) => stream::once(async move { Err(err) }).boxed(),
        })
        .boxed()
}

/// The events of a stream's body, one a line; the stream ends after its first error.
fn lines(body: Incoming) -> impl Stream<Item = Result<EventMessage, String>> {
    let reading = Some((body, Vec::new(), VecDeque::new()));
    stream::unfold(reading, |reading| async move {
        let (mut body, mut line, mut complete): (Incoming, Vec<u8>, VecDeque<Vec<u8>>) = reading?;
        loop {
            if let Some(event) = complete.pop_front() {
                let parsed = serde_json::from_slice::<EventMessage>(&event).map_err(|err| {
                    format!(
                        "an event that is not the Engine API's ({:?} error at column {})",
                        err.classify(),
                        err.column()
                    )
                });
                return Some((parsed, Some((body, line, complete))));
            }
            let data = match body.frame().await {
                None => return None,
                Some(Err(err)) => return Some((Err(chain(&err)), None)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers: nothing to read.
                    Err(_) => continue,
                },
            };
            if let Err(err) = split_lines(&data, &mut line, &mut complete) {
                return Some((Err(err), None));
            }
        }
    })
}

/// Moves `data` into `line`, and each line it ends (blank ones aside) into `complete`.
fn split_lines(
    data: &[u8],
    line: &mut Vec<u8>,
    complete: &mut VecDeque<Vec<u8>>,
) -> Result<(), String> {
    for piece in data.split_inclusive(|&byte| byte == b'\n') {
        line.extend_from_slice(piece);
        let ended = piece.ends_with(b"\n");
        if line.len() - usize::from(ended) > MAX_EVENT_BYTES {
            return Err(format!(
                "an event longer than {MAX_EVENT_BYTES} bytes; the stream is not read further"
            ));
        }
        if ended {
            let event = std::mem::take(line);
            if !event.trim_ascii().is_empty() {
                complete.push_back(event);
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Bound {
    /// At most this many bytes, within [`ANSWER_TIMEOUT`].
    Answer(u64),
    /// An event stream: bounded line by line by its reader, with no end in time.
    Stream,
}

/// A connection that fails its reads once the answer is too large or too late. Says so without
/// quoting what was read.
struct Bounded {
    stream: UnixStream,
    bound: Bound,
    /// Bytes read so far.
    counted: u64,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Bounded {
    fn new(stream: UnixStream, bound: Bound) -> Self {
        let deadline = match bound {
            Bound::Answer(_) => Some(Box::pin(tokio::time::sleep(ANSWER_TIMEOUT))),
            Bound::Stream => None,
        };
        Bounded {
            stream,
            bound,
            counted: 0,
            deadline,
        }
    }

    fn count(&mut self, read: &[u8]) -> io::Result<()> {
        let Bound::Answer(limit) = self.bound else {
            return Ok(());
        };
        self.counted += read.len() as u64;
        if self.counted > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an answer longer than {limit} bytes; not read further"),
            ));
        }
        Ok(())
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no whole answer within {} s", ANSWER_TIMEOUT.as_secs()),
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        let filled = buf.filled();
        Poll::Ready(this.count(&filled[before..]))
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::docker::DockerApi;
    use crate::attribute::runtime::{ContainerRuntime as _, RuntimeError, RuntimeEvent};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::UnixListener;

    /// A fake Engine API: each connection gets `answer` after its request's headers.
    fn serve(
        answer: impl Fn(UnixStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + 'static,
    ) -> (crate::history::tests::TempDir, String) {
        serve_requests(move |stream, _| answer(stream))
    }

    /// As [`serve`]; `answer` also gets the request's head.
    fn serve_requests(
        answer: impl Fn(UnixStream, String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + 'static,
    ) -> (crate::history::tests::TempDir, String) {
        let dir = crate::history::tests::temp_dir();
        let path = dir.join("docker.sock");
        let listener = UnixListener::bind(&path).expect("binding the fake socket");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::spawn(answer(
                    stream,
                    String::from_utf8_lossy(&request).into_owned(),
                ));
            }
        });
        (dir, path.display().to_string())
    }

    /// A whole HTTP answer with a JSON body.
    fn answer(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    const PING: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nApi-Version: 1.43\r\n\r\nOK";

    async fn endless_chunks(mut stream: UnixStream, with_newlines: bool) {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        let line = if with_newlines { b'\n' } else { b' ' };
        let mut chunk = format!("{:x}\r\n", 64 << 10).into_bytes();
        chunk.extend(std::iter::repeat_n(b' ', (64 << 10) - 1));
        chunk.push(line);
        chunk.extend_from_slice(b"\r\n");
        while stream.write_all(&chunk).await.is_ok() {}
    }

    async fn connected(socket: &str) -> DockerApi {
        let api = DockerApi::new(socket);
        api.connect().await.expect("the fake answers /_ping");
        api
    }

    #[tokio::test]
    async fn a_socket_that_never_answers_costs_a_bounded_time() {
        let (_dir, socket) = serve(|stream| {
            Box::pin(async move {
                // Holds the connection, says nothing.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(stream);
            })
        });
        let api = DockerApi::new(&socket);
        let started = Instant::now();
        let err = api.connect().await.expect_err("nothing answered");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "waited {:?}",
            started.elapsed()
        );
        assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_at_its_bound() {
        let pinged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (_dir, socket) = serve(move |stream| {
            let pinged = std::sync::Arc::clone(&pinged);
            Box::pin(async move {
                let mut stream = stream;
                if !pinged.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let _ = stream.write_all(PING).await;
                    return;
                }
                // Newlines do not reset an answer's bound.
                endless_chunks(stream, true).await;
            })
        });
        let api = connected(&socket).await;
        let started = Instant::now();
        let err = api.list().await.expect_err("an endless listing");
        let RuntimeError::Unavailable(why) = &err else {
            panic!("{err:?}");
        };
        assert!(why.contains("longer than"), "{why}");
        assert!(
            started.elapsed() < ANSWER_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_answer_is_given_up_in_time() {
        let pinged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (_dir, socket) = serve(move |mut stream| {
            let pinged = std::sync::Arc::clone(&pinged);
            Box::pin(async move {
                if !pinged.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let _ = stream.write_all(PING).await;
                    return;
                }
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                let _ = stream.write_all(head).await;
                // One byte a second, forever.
                while stream.write_all(b"1\r\n \r\n").await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
        let api = connected(&socket).await;
        let started = tokio::time::Instant::now();
        let err = api.list().await.expect_err("a listing that never ends");
        let RuntimeError::Unavailable(why) = &err else {
            panic!("{err:?}");
        };
        assert!(why.contains("no whole answer within"), "{why}");
        assert!(
            started.elapsed() <= ANSWER_TIMEOUT + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_endless_event_line_ends_the_stream() {
        let pinged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (_dir, socket) = serve(move |mut stream| {
            let pinged = std::sync::Arc::clone(&pinged);
            Box::pin(async move {
                if !pinged.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let _ = stream.write_all(PING).await;
                    return;
                }
                endless_chunks(stream, false).await;
            })
        });
        let api = connected(&socket).await;
        let started = Instant::now();
        let mut events = api.events(std::time::SystemTime::now());
        let first = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("the stream ends once a line is too long");
        let Some(Err(RuntimeError::Unavailable(why))) = &first else {
            panic!("{first:?}");
        };
        assert!(why.contains("an event longer than"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    /// Docker refuses a client newer than itself, the event stream included: the stream is
    /// asked in the version `/version` gave, also when it is asked before the agent's own
    /// `/version` call (which runs beside it) has answered.
    #[tokio::test]
    async fn the_event_stream_speaks_the_daemons_older_api_version() {
        let (_dir, socket) = serve_requests(|mut stream, request| {
            let line = request.lines().next().unwrap_or_default().to_owned();
            Box::pin(async move {
                if line.contains("/_ping") {
                    let _ = stream.write_all(PING).await;
                } else if line.contains("/version") {
                    let body = r#"{"Version":"20.10.24","ApiVersion":"1.41"}"#;
                    let _ = stream.write_all(&answer("200 OK", body)).await;
                } else if line.contains("/v1.41/events") {
                    let event = r#"{"Type":"container","Action":"start","Actor":{"ID":"c0ffee","Attributes":{"name":"web"}},"time":1}"#;
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                    let chunk = format!("{:x}\r\n{event}\n\r\n", event.len() + 1);
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(chunk.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                } else {
                    let body = r#"{"message":"client version 1.53 is too new"}"#;
                    let _ = stream.write_all(&answer("400 Bad Request", body)).await;
                }
            })
        });
        let api = connected(&socket).await;
        let mut events = api.events(std::time::SystemTime::now());
        let first = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s");
        assert!(
            matches!(first, Some(Ok(RuntimeEvent::Changed { ref id, .. })) if id == "c0ffee"),
            "{first:?}"
        );
    }

    /// What the daemon says, its error text and what fails to parse alike, is never quoted:
    /// errors name the kind and the path.
    #[tokio::test]
    async fn a_hostile_answer_is_not_quoted_in_errors() {
        let (_dir, socket) = serve_requests(|mut stream, request| {
            let line = request.lines().next().unwrap_or_default().to_owned();
            let reply = if line.contains("/_ping") {
                PING.to_vec()
            } else if line.contains("/version") {
                // The Engine API's error shape, with a terminal escape in it.
                answer(
                    "400 Bad Request",
                    r#"{"message":"SECRET-version \u001b]0;owned\u0007"}"#,
                )
            } else if line.contains("/containers/json") {
                // Well-formed JSON whose field has the wrong type: serde's message quotes it.
                answer("200 OK", r#"[{"Id":"c0ffee","Created":"SECRET-listing"}]"#)
            } else {
                // Not JSON at all: bollard keeps the whole body as the daemon's message.
                answer(
                    "500 Internal Server Error",
                    "SECRET-inspect: /etc/shadow says …",
                )
            };
            Box::pin(async move {
                let _ = stream.write_all(&reply).await;
            })
        });
        let api = connected(&socket).await;
        let identified = api.identify().await.expect_err("a refused /version");
        let listed = api.list().await.expect_err("a listing of the wrong shape");
        let inspected = api
            .inspect("c0ffee")
            .await
            .expect_err("a failed inspection");
        for (err, path) in [
            (&identified, "GET /version"),
            (&listed, "GET /containers/json"),
            (&inspected, "GET /containers/c0ffee/json"),
        ] {
            let text = err.to_string();
            assert!(!text.contains("SECRET"), "quotes the answer: {text}");
            assert!(!text.contains('\u{1b}'), "quotes the answer: {text:?}");
            assert!(text.contains(path), "names no path: {text}");
        }
        assert_eq!(
            identified.to_string(),
            "unavailable: GET /version: refused with HTTP status 400"
        );
        assert!(
            matches!(&listed, RuntimeError::Garbage(why) if why.contains("not the Engine API's")),
            "{listed:?}"
        );
        assert_eq!(
            inspected.to_string(),
            "unavailable: GET /containers/c0ffee/json: refused with HTTP status 500"
        );

        // A /_ping answered with an error: the connection fails, just as wordlessly.
        let (_dir, socket) = serve(|mut stream| {
            Box::pin(async move {
                let reply = answer("500 Internal Server Error", r#"{"message":"SECRET-ping"}"#);
                let _ = stream.write_all(&reply).await;
            })
        });
        let err = DockerApi::new(&socket)
            .connect()
            .await
            .expect_err("a failing /_ping");
        assert_eq!(
            err.to_string(),
            "unavailable: GET /_ping: refused with HTTP status 500"
        );
    }

    #[test]
    fn answers_are_bounded_in_all() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (a, _b) = UnixStream::pair().expect("a socket pair");
            let mut bounded = Bounded::new(a, Bound::Answer(16));
            bounded.count(b"1234567\n").expect("8 bytes");
            bounded.count(b"1234567\n").expect("16 bytes");
            let err = bounded.count(b"\n").expect_err("17 bytes, newlines or not");
            assert_eq!(
                err.to_string(),
                "an answer longer than 16 bytes; not read further"
            );
        });
    }

    #[test]
    fn event_lines_are_split_and_bounded_one_by_one() {
        let mut line = Vec::new();
        let mut complete = VecDeque::new();
        split_lines(b"{\"a\":1}\n\n{\"b\"", &mut line, &mut complete).expect("short lines");
        split_lines(b":2}\r\n{", &mut line, &mut complete).expect("short lines");
        assert_eq!(
            complete,
            [b"{\"a\":1}\n".to_vec(), b"{\"b\":2}\r\n".to_vec()]
        );
        assert_eq!(line, b"{");
        // Many lines, each short: never too long, however many.
        let short = vec![b' '; MAX_EVENT_BYTES - 1];
        for _ in 0..8 {
            split_lines(&short, &mut line, &mut complete).expect("a line below the bound");
            split_lines(b"\n", &mut line, &mut complete).expect("its end");
        }
        let err = split_lines(&short, &mut line, &mut complete)
            .and_then(|()| split_lines(b"  ", &mut line, &mut complete))
            .expect_err("a line past the bound");
        assert!(err.contains("an event longer than"), "{err}");
    }
}
