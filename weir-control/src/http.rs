//! The metrics endpoint's HTTP/1.1 server: `GET /metrics` and nothing else.
//!
//! Control plane only: one accept thread, started by [`crate::run`] after
//! the control socket (so it inherits the mask that keeps it off the
//! workers' CPUs), and one short-lived thread per connection under a cap.
//! The server never trusts its peer: a request's head is read into a
//! bounded buffer ([`MAX_REQUEST_BYTES`]) under one deadline
//! ([`REQUEST_TIMEOUT`]), every connection carries one request and is
//! closed, and a client that is slow, sends garbage or goes away costs
//! only its own connection.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::metrics::Format;

/// Most bytes of a request head (request line and headers) read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A request must arrive whole, and its answer leave, within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 16;

/// The metrics endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The address could not be bound (in use, not local, no permission).
    #[error("metrics endpoint: cannot listen on {addr}")]
    Bind {
        /// `[metrics] listen`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The accept thread could not be started.
    #[error("metrics endpoint: starting its thread")]
    Thread(#[source] io::Error),
}

/// What the endpoint serves: the scrape's text in the format asked for.
pub type Render = dyn Fn(Format) -> String + Send + Sync;

/// A bound metrics endpoint, not yet serving.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// [`MetricsError::Bind`] if the address cannot be bound.
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let bind = |source| MetricsError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind)?;
        // Non-blocking accept: the loop checks the stop flag between polls.
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        Ok(MetricsServer { listener, addr })
    }

    /// The address bound (with the port the kernel chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on a thread of its own until `stop` is set.
    ///
    /// # Errors
    /// [`MetricsError::Thread`] if the thread cannot be started.
    pub fn spawn(
        self,
        render: Arc<Render>,
        stop: Arc<AtomicBool>,
    ) -> Result<thread::JoinHandle<()>, MetricsError> {
        thread::Builder::new()
            .name("weir-metrics".into())
            .spawn(move || self.serve(&render, &stop))
            .map_err(MetricsError::Thread)
    }

    fn serve(self, render: &Arc<Render>, stop: &AtomicBool) {
        let active = Arc::new(AtomicUsize::new(0));
        tracing::info!(listen = %self.addr, "metrics endpoint listening");
        // Relaxed: the flag carries no data; it only ends the loop.
        while !stop.load(Ordering::Relaxed) {
            let Some(stream) = crate::server::accepted(self.listener.accept(), "metrics endpoint")
            else {
                continue;
            };
            // Relaxed: the count is only a limit; no data is published through it.
            if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::Relaxed);
                let _ = stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(1))));
                let _ = respond(&stream, Reply::error(503, "too many connections"));
                continue;
            }
            let conn_active = Arc::clone(&active);
            let render = Arc::clone(render);
            let spawned = thread::Builder::new()
                .name("weir-metrics-conn".into())
                .spawn(move || {
                    serve_connection(stream, &*render);
                    // Relaxed: see above.
                    conn_active.fetch_sub(1, Ordering::Relaxed);
                });
            if let Err(e) = spawned {
                // The closure (and its stream) is gone with the error.
                active.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!("metrics endpoint: cannot start a connection thread: {e}");
            }
        }
        tracing::info!(listen = %self.addr, "metrics endpoint closed");
    }
}

/// A response: status, content type and body.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    /// `Allow` header (405 only).
    allow: Option<&'static str>,
}

impl Reply {
    fn error(status: u16, text: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{text}\n"),
            allow: None,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn respond(mut stream: &TcpStream, reply: Reply) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    if let Some(allow) = reply.allow {
        head.push_str("Allow: ");
        head.push_str(allow);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(reply.body.as_bytes())?;
    stream.flush()
}

/// How reading a request head ended.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The head, without the blank line that ends it.
    Complete(String),
    /// Longer than [`MAX_REQUEST_BYTES`].
    TooLong,
    /// Not there by the deadline.
    TimedOut,
    /// The peer closed or reset the connection first.
    Closed,
}

/// Reads a request head (up to the blank line) within `deadline`.
fn read_head(mut stream: &TcpStream, deadline: Instant) -> Head {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            return Head::Complete(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
        if len == buf.len() {
            return Head::TooLong;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Head::TimedOut;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Head::Closed,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Head::TimedOut
            }
            Err(_) => return Head::Closed,
        }
    }
}

/// Where the head in `buf` ends (before `\r\n\r\n`, or a bare `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The reply to a request head.
fn answer(head: &str, render: &Render) -> Reply {
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Reply::error(400, "bad request line");
    };
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/1.") {
        return Reply::error(400, "bad request line");
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Reply::error(404, "not found; metrics are at /metrics");
    }
    if method != "GET" {
        return Reply {
            allow: Some("GET"),
            ..Reply::error(405, "only GET is served")
        };
    }
    let accept = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| value.trim())
    });
    let format = Format::for_accept(accept);
    Reply {
        status: 200,
        content_type: format.content_type(),
        body: render(format),
        allow: None,
    }
}

fn serve_connection(stream: TcpStream, render: &Render) {
    // Accepted sockets may inherit O_NONBLOCK from the listener on some
    // systems; the timeouts below rely on blocking I/O.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let reply = match read_head(&stream, deadline) {
        Head::Complete(head) => answer(&head, render),
        Head::TooLong => Reply::error(
            431,
            &format!("request head longer than {MAX_REQUEST_BYTES} bytes"),
        ),
        Head::TimedOut => Reply::error(408, "request not received in time"),
        Head::Closed => return,
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    if stream.set_write_timeout(Some(left)).is_ok() {
        if let Err(e) = respond(&stream, reply) {
            tracing::debug!("metrics endpoint: writing a response: {e}");
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a free loopback port rendering `body` in the format
    /// asked for; stopped when the guard drops.
    struct Running {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn start() -> Running {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let render: Arc<Render> = Arc::new(|f: Format| format!("body {f:?}\n"));
        let thread = server.spawn(render, Arc::clone(&stop)).unwrap();
        Running {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Sends `request` raw and returns the whole response.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // The server may answer (and close) before taking all of an
        // oversized request: a failed write is fine, the reply is read.
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status(response: &str) -> &str {
        response.split(' ').nth(1).unwrap_or("")
    }

    #[test]
    fn get_metrics_serves_openmetrics_when_asked_and_text_otherwise() {
        let r = start();
        let om = exchange(
            r.addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        );
        assert_eq!(status(&om), "200", "{om}");
        assert!(
            om.contains(
                "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
            ),
            "{om}"
        );
        assert!(om.ends_with("\r\n\r\nbody OpenMetrics\n"), "{om}");
        let plain = exchange(r.addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert_eq!(status(&plain), "200", "{plain}");
        assert!(
            plain.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{plain}"
        );
        assert!(plain.contains("Content-Length: 20\r\n"), "{plain}");
        assert!(plain.ends_with("body PrometheusText\n"), "{plain}");
    }

    #[test]
    fn bad_request_lines_get_400() {
        let r = start();
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1 extra\r\n\r\n",
        ] {
            let resp = exchange(r.addr, bad);
            assert_eq!(
                status(&resp),
                "400",
                "{:?}: {resp}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn wrong_path_gets_404_and_wrong_method_405() {
        let r = start();
        let resp = exchange(r.addr, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(status(&resp), "404", "{resp}");
        let resp = exchange(r.addr, b"GET /metrics/../etc HTTP/1.1\r\n\r\n");
        assert_eq!(status(&resp), "404", "{resp}");
        let resp = exchange(
            r.addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(status(&resp), "405", "{resp}");
        assert!(resp.contains("Allow: GET\r\n"), "{resp}");
    }

    #[test]
    fn oversized_request_gets_431_and_the_endpoint_keeps_serving() {
        let r = start();
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        big.resize(MAX_REQUEST_BYTES * 4, b'a');
        let resp = exchange(r.addr, &big);
        assert_eq!(status(&resp), "431", "{resp}");
        let ok = exchange(r.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&ok), "200", "{ok}");
    }

    #[test]
    fn a_silent_client_does_not_stop_others() {
        let r = start();
        // Connected, half a request line, then nothing: its thread waits
        // out its own deadline while others are served.
        let mut silent = TcpStream::connect(r.addr).unwrap();
        silent.write_all(b"GET /met").unwrap();
        let gone = TcpStream::connect(r.addr).unwrap();
        drop(gone);
        let ok = exchange(r.addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&ok), "200", "{ok}");
    }

    #[test]
    fn bind_failure_names_the_address() {
        let first = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = MetricsServer::bind(first.local_addr()).unwrap_err();
        let msg = crate::error_chain(&err);
        assert!(
            msg.starts_with(&format!(
                "metrics endpoint: cannot listen on {}: ",
                first.local_addr()
            )),
            "{msg}"
        );
    }
}
