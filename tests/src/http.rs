//! A minimal HTTP client over a plain TCP connection, for the agent's metrics endpoint and
//! Prometheus's API: enough for a test, without an HTTP library.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A loopback address with a port nothing listens on right now.
pub fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("the bound address")
}

/// `GET path` over one connection: the status line and the body. HTTP/1.0, so that the server
/// sends the body as it is and closes the connection after it (no chunked encoding).
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|err| panic!("connecting to {addr} for {path}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("setting a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: oomtrace-tests\r\n\r\n"
    )
    .expect("sending the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|err| panic!("reading the response from {addr}{path}: {err}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// `text` as a URL query value: everything but unreserved characters percent-encoded.
pub fn query_value(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
