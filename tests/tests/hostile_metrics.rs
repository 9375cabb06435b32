//! Idle connections held open against the metrics endpoint (16, then 500, reopened as the
//! server closes them) while a scraper scrapes: at least 95 % of the scrapes are answered.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use oomtrace_tests::http::free_loopback_port;
use oomtrace_tests::{Agent, require_root};

const SCRAPES: usize = 25;

/// Holds `count` connections open without a word, reopening each one the server closes, until
/// `stop` is set.
fn hold_idle(addr: SocketAddr, count: usize, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            held.retain(|stream| {
                let mut byte = [0u8; 1];
                // Closed by the server (0 bytes) or reset: reopen it.
                matches!(stream.peek(&mut byte), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
            });
            while held.len() < count {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                    Ok(stream) => {
                        let _ = stream.set_nonblocking(true);
                        held.push(stream);
                    }
                    Err(_) => break,
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
    })
}

/// One scrape, as Prometheus makes it; whether a 200 with the metrics came back within 5 s.
fn scrape(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200 OK") && response.contains("oomtrace_build_info")
}

fn scrapes_answered_while_held(idle: usize) {
    require_root();
    let addr = free_loopback_port();
    let addr_arg = addr.to_string();
    let agent = Agent::start_with(&["--metrics-addr", &addr_arg]);
    assert!(
        scrape(addr),
        "a scrape with nothing held; log:\n{}",
        agent.log()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let holder = hold_idle(addr, idle, Arc::clone(&stop));
    thread::sleep(Duration::from_secs(2));
    let mut answered = 0;
    for _ in 0..SCRAPES {
        if scrape(addr) {
            answered += 1;
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    holder.join().expect("the holder thread");
    agent.stop();
    assert!(
        answered * 100 >= SCRAPES * 95,
        "{answered} of {SCRAPES} scrapes answered while {idle} idle connections were held"
    );
    println!("{answered} of {SCRAPES} scrapes answered while {idle} idle connections were held");
}

#[test]
fn scrapes_are_answered_while_16_idle_connections_are_held() {
    scrapes_answered_while_held(16);
}

#[test]
fn scrapes_are_answered_while_500_idle_connections_are_held() {
    scrapes_answered_while_held(500);
}
