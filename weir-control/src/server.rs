//! The control socket: a Unix stream socket carrying one JSON [`Request`]
//! per line, each answered by one JSON [`Response`] line.
//!
//! Control plane only. The server never trusts its peer: lines are read into
//! a bounded buffer ([`MAX_MESSAGE_BYTES`]), malformed requests get an error
//! reply and leave the connection usable, idle connections time out, and
//! each connection has its own thread under a cap
//! ([`DEFAULT_MAX_CONNECTIONS`]), so a slow client cannot stall others.
//! The daemon supplies the [`Handler`].

use std::fs;
use std::io::{self, BufReader, ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use vhost_user::socket_path::SocketPathError;

use weir_api::framing::{deadline_hook, read_line_bounded, LineRead, MAX_MESSAGE_BYTES};
use weir_api::{Request, Response};

/// A connection idle this long (or stuck mid-line) is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more are told so and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// How often the accept loop checks the stop flag when idle.
const ACCEPT_POLL: Duration = Duration::from_millis(25);

/// The connection a non-blocking `accept` returned, or None after waiting
/// [`ACCEPT_POLL`] when there is none yet or the call failed (EMFILE and
/// friends are logged, naming `what`; the loop backs off rather than spins).
/// Shared by the control socket and the metrics endpoint.
pub(crate) fn accepted<S, A>(result: io::Result<(S, A)>, what: &str) -> Option<S> {
    match result {
        Ok((stream, _)) => Some(stream),
        Err(e) if e.kind() == ErrorKind::Interrupted => None,
        Err(e) => {
            if e.kind() != ErrorKind::WouldBlock {
                tracing::warn!("{what}: accept failed: {e}");
            }
            thread::sleep(ACCEPT_POLL);
            None
        }
    }
}

/// The control socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The socket's directory could not be created.
    #[error("creating {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket directory's mode could not be set.
    #[error("setting mode of {}", path.display())]
    SetDirMode {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("another weir daemon is running on {}", path.display())]
    Live {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be bound.
    #[error("binding control socket {}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: SocketPathError,
    },
    /// Something other than a dead socket is at the path (a file, a
    /// symlink), which is left alone.
    #[error(transparent)]
    Path(SocketPathError),
    /// The listener could not be made non-blocking.
    #[error("making the control socket non-blocking")]
    NonBlocking(#[source] io::Error),
}

/// Answers control requests; implemented by the daemon.
///
/// Called concurrently from one thread per connection.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request. Errors go in the response, never in a panic.
    fn handle(&self, req: Request) -> Response;

    /// Answers a request whose reply is a stream ([`Request::streams`]):
    /// writes each response with `send` until the stream ends or `send`
    /// fails (the client left). The default answers with
    /// [`Handler::handle`].
    fn stream(&self, req: Request, send: &mut dyn FnMut(&Response) -> io::Result<()>) {
        let _ = send(&self.handle(req));
    }
}

impl<F> Handler for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, req: Request) -> Response {
        self(req)
    }
}

/// A bound control socket, ready to [`serve`](ControlServer::serve).
///
/// Dropping it removes the socket file, unless another process has since
/// replaced it.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// `(dev, ino)` of the socket file we created.
    file_id: (u64, u64),
    idle_timeout: Duration,
    max_connections: usize,
}

impl ControlServer {
    /// Binds the control socket at `path`.
    ///
    /// Creates the parent directory (mode 0755) if missing. An existing
    /// socket file is replaced only if nothing accepts connections on it;
    /// any other existing file (a symlink included) is left alone. The socket
    /// has mode 0600 from the moment it appears
    /// ([`vhost_user::socket_path::bind`]): the control API is for the
    /// daemon's owner only.
    ///
    /// # Errors
    ///
    /// If another daemon answers on `path`, `path` is not a socket, or a
    /// filesystem or socket call fails.
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        ControlServer::bind_owned(path, vhost_user::SocketOwner::default())
    }

    /// [`bind`](Self::bind) with the socket's mode and group set to `owner`
    /// (`[control] socket_group`), again before it appears at `path`.
    ///
    /// # Errors
    /// As [`bind`](Self::bind).
    pub fn bind_owned(path: &Path, owner: vhost_user::SocketOwner) -> Result<Self, ServerError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|source| ServerError::CreateDir {
                        path: parent.to_owned(),
                        source,
                    })?;
                // The mode passed to mkdir is masked by the umask.
                fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).map_err(
                    |source| ServerError::SetDirMode {
                        path: parent.to_owned(),
                        source,
                    },
                )?;
            }
        }
        // Created with mode 0600 before it appears at `path` (no window with
        // the umask's mode); a live socket or any other file is left alone.
        let bound = match vhost_user::socket_path::bind(path, owner) {
            Ok(b) => b,
            Err(SocketPathError::Live { .. }) => {
                return Err(ServerError::Live {
                    path: path.to_owned(),
                })
            }
            Err(source @ SocketPathError::Io { .. }) => {
                return Err(ServerError::Bind {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(e) => return Err(ServerError::Path(e)),
        };
        let listener = bound.listener;
        // Non-blocking so the accept loop can notice the stop flag.
        listener
            .set_nonblocking(true)
            .map_err(ServerError::NonBlocking)?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            file_id: bound.file_id,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        })
    }

    /// Sets how long a connection may sit idle or mid-line before it is closed.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets how many connections are served at once (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts and serves connections until `stop` is set, then removes
    /// the socket file. Connections already open keep their threads until
    /// the peer disconnects or the idle timeout closes them.
    pub fn serve(self, handler: Arc<dyn Handler>, stop: Arc<AtomicBool>) {
        let active = Arc::new(AtomicUsize::new(0));
        tracing::info!(socket = %self.path.display(), "control socket listening");
        // Relaxed: the flag carries no data; it only ends the loop.
        while !stop.load(Ordering::Relaxed) {
            let Some(stream) = accepted(self.listener.accept(), "control socket") else {
                continue;
            };
            // Relaxed: the count is only a limit; no data is published through it.
            if active.load(Ordering::Relaxed) >= self.max_connections {
                tracing::warn!(
                    max = self.max_connections,
                    "control connection refused: too many connections"
                );
                reject(
                    stream,
                    &format!(
                        "too many control connections (max {})",
                        self.max_connections
                    ),
                );
                continue;
            }
            // Relaxed: see above.
            active.fetch_add(1, Ordering::Relaxed);
            let guard = ActiveGuard(Arc::clone(&active));
            let handler = Arc::clone(&handler);
            let idle = self.idle_timeout;
            let spawned = thread::Builder::new()
                .name("weir-control".into())
                .spawn(move || {
                    let _guard = guard;
                    serve_connection(stream, &*handler, idle);
                });
            if let Err(e) = spawned {
                tracing::warn!("cannot start control connection thread: {e}");
            }
        }
        tracing::info!(socket = %self.path.display(), "control socket closed");
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Remove only our own socket: a second daemon may have replaced a
        // file it found dead.
        vhost_user::socket_path::remove_if_ours(&self.path, self.file_id);
    }
}

/// Decrements the connection count when a connection thread ends.
struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        // Relaxed: the count is only a limit.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells a connection over the limit why it is closed.
fn reject(stream: UnixStream, message: &str) {
    // A fresh socket's send buffer takes one short line without blocking;
    // the timeout only guards against surprises.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = write_response(&stream, &Response::error(message));
}

fn write_response(mut writer: impl Write, resp: &Response) -> io::Result<()> {
    let mut buf = serde_json::to_vec(resp).map_err(io::Error::other)?;
    buf.push(b'\n');
    writer.write_all(&buf)?;
    writer.flush()
}

/// Serves requests on one connection until EOF, an I/O error, a timeout or
/// an oversized line. Each request line must arrive within `idle_timeout`
/// of the previous reply.
fn serve_connection(stream: UnixStream, handler: &dyn Handler, idle_timeout: Duration) {
    // Accepted sockets should not inherit O_NONBLOCK on Linux; make sure,
    // since the timeouts below rely on blocking reads.
    if let Err(e) = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(idle_timeout)))
    {
        tracing::warn!("cannot configure control connection: {e}");
        return;
    }
    let mut reader = BufReader::with_capacity(8 * 1024, &stream);
    let mut line = Vec::new();
    loop {
        let deadline = Instant::now() + idle_timeout;
        let read = read_line_bounded(
            &mut reader,
            &mut line,
            MAX_MESSAGE_BYTES,
            deadline_hook(&stream, deadline),
        );
        match read {
            Ok(LineRead::Line) => {}
            Ok(LineRead::Eof) => return,
            Ok(LineRead::TooLong) => {
                tracing::debug!("control request too long; closing connection");
                let msg = format!("message too long (max {MAX_MESSAGE_BYTES} bytes)");
                let _ = write_response(&stream, &Response::error(msg));
                return;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                tracing::debug!("control connection idle; closing");
                return;
            }
            Err(e) => {
                tracing::debug!("control connection read failed: {e}");
                return;
            }
        }
        let req = match decode(&line) {
            Ok(Some(req)) => req,
            Ok(None) => continue,
            Err(resp) => {
                if let Err(e) = write_response(&stream, &resp) {
                    tracing::debug!("control connection write failed: {e}");
                    return;
                }
                continue;
            }
        };
        if req.streams() {
            let cmd = req.cmd();
            tracing::debug!(cmd, "control request (stream)");
            let mut failed = false;
            let mut send = |resp: &Response| {
                let r = write_response(&stream, resp);
                failed |= r.is_err();
                r
            };
            let streamed = panic::catch_unwind(AssertUnwindSafe(|| handler.stream(req, &mut send)));
            if streamed.is_err() {
                tracing::error!(cmd, "control handler panicked");
                let msg = format!("internal error while handling `{cmd}`");
                failed |= write_response(&stream, &Response::error(msg)).is_err();
            }
            if failed {
                return;
            }
            continue;
        }
        let resp = run_handler(req, handler);
        if let Err(e) = write_response(&stream, &resp) {
            tracing::debug!("control connection write failed: {e}");
            return;
        }
    }
}

/// Decodes one request line: `None` for a blank line, the error response
/// for one that is not a request.
fn decode(line: &[u8]) -> Result<Option<Request>, Response> {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => {
            return Err(Response::error(format!(
                "invalid request: not valid UTF-8 (at byte {})",
                e.valid_up_to()
            )))
        }
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match serde_json::from_str(text) {
        Ok(req) => Ok(Some(req)),
        Err(e) => Err(Response::error(format!("invalid request: {e}"))),
    }
}

/// Runs the handler on one request.
fn run_handler(req: Request, handler: &dyn Handler) -> Response {
    let cmd = req.cmd();
    tracing::debug!(cmd, "control request");
    // A handler panic is a daemon bug; report it and keep the connection.
    panic::catch_unwind(AssertUnwindSafe(|| handler.handle(req))).unwrap_or_else(|_| {
        tracing::error!(cmd, "control handler panicked");
        Response::error(format!("internal error while handling `{cmd}`"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read};
    use std::sync::atomic::AtomicU32;
    use std::thread::JoinHandle;
    use weir_api::{request, Client};

    /// A unique temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            // Relaxed: only uniqueness matters.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("weir-ctl-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fake_handler(req: Request) -> Response {
        match req {
            Request::PortDel { name } => Response::error(format!("no such port `{name}`")),
            Request::Version => Response::with_data(&weir_api::VersionView {
                version: "test".into(),
            }),
            Request::Stats => panic!("boom"),
            other => Response::with_data(&other.cmd()),
        }
    }

    struct Running {
        _dir: TempDir,
        path: PathBuf,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Running {
        fn start(configure: impl FnOnce(ControlServer) -> ControlServer) -> Self {
            let dir = TempDir::new();
            let path = dir.0.join("run/weir.sock");
            let server = configure(ControlServer::bind(&path).unwrap());
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = thread::spawn(move || server.serve(Arc::new(fake_handler), flag));
            Running {
                _dir: dir,
                path,
                stop,
                thread: Some(thread),
            }
        }

        fn stop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Writes raw bytes and reads one reply line.
    fn raw_exchange(stream: &mut UnixStream, bytes: &[u8]) -> Response {
        stream.write_all(bytes).unwrap();
        read_reply(stream)
    }

    fn read_reply(stream: &UnixStream) -> Response {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The server sends nothing unsolicited, so nothing past this line is
        // lost when the reader is dropped.
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    #[test]
    fn round_trip() {
        let server = Running::start(|s| s);
        let resp = request(&server.path, &Request::PortList).unwrap();
        assert_eq!(resp.decode::<String>().unwrap(), "port-list");
        let resp = request(&server.path, &Request::PortDel { name: "p9".into() }).unwrap();
        assert!(!resp.ok);
        assert_eq!(resp.error.as_deref(), Some("no such port `p9`"));
    }

    #[test]
    fn several_requests_share_a_connection() {
        let server = Running::start(|s| s);
        let mut client = Client::connect(&server.path).unwrap();
        for _ in 0..3 {
            let resp = client.call(&Request::Version).unwrap();
            assert_eq!(
                resp.decode::<weir_api::VersionView>().unwrap().version,
                "test"
            );
        }
    }

    #[test]
    fn handler_panic_becomes_error() {
        let server = Running::start(|s| s);
        let mut client = Client::connect(&server.path).unwrap();
        let resp = client.call(&Request::Stats).unwrap();
        assert_eq!(
            resp.error.as_deref(),
            Some("internal error while handling `stats`")
        );
        assert!(client.call(&Request::BridgeList).unwrap().ok);
    }

    #[test]
    fn garbage_gets_error_and_connection_survives() {
        let server = Running::start(|s| s);
        let mut stream = UnixStream::connect(&server.path).unwrap();
        let resp = raw_exchange(&mut stream, b"this is not json\n");
        assert!(!resp.ok);
        assert!(resp.error.unwrap().starts_with("invalid request: "));
        let resp = raw_exchange(&mut stream, b"{\"cmd\":\"reboot\"}\n");
        assert!(resp.error.unwrap().contains("unknown variant `reboot`"));
        // Blank lines are skipped, not answered.
        let resp = raw_exchange(&mut stream, b"\n\r\n{\"cmd\":\"bridge-list\"}\r\n");
        assert_eq!(resp.data, Some(serde_json::json!("bridge-list")));
    }

    #[test]
    fn invalid_utf8_gets_error() {
        let server = Running::start(|s| s);
        let mut stream = UnixStream::connect(&server.path).unwrap();
        let resp = raw_exchange(&mut stream, b"{\"cmd\":\"\xff\xfe\"}\n");
        assert_eq!(
            resp.error.as_deref(),
            Some("invalid request: not valid UTF-8 (at byte 8)")
        );
        let resp = raw_exchange(&mut stream, b"{\"cmd\":\"port-list\"}\n");
        assert!(resp.ok);
    }

    #[test]
    fn oversized_line_is_refused_and_server_keeps_serving() {
        let server = Running::start(|s| s);
        let mut stream = UnixStream::connect(&server.path).unwrap();
        // The server may close before taking all of it; that is fine.
        let _ = stream.write_all(&vec![b'x'; 100 * 1024]);
        let resp = read_reply(&stream);
        assert_eq!(
            resp.error.as_deref(),
            Some("message too long (max 65536 bytes)")
        );
        // The connection is closed afterwards.
        let mut rest = Vec::new();
        let n = stream.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0);
        // Others are still served.
        assert!(request(&server.path, &Request::PortList).unwrap().ok);
    }

    #[test]
    fn line_at_the_limit_is_accepted() {
        let server = Running::start(|s| s);
        let mut stream = UnixStream::connect(&server.path).unwrap();
        let body = r#"{"cmd":"port-list"}"#;
        let mut line = body.as_bytes().to_vec();
        line.resize(MAX_MESSAGE_BYTES, b' ');
        line.push(b'\n');
        let resp = raw_exchange(&mut stream, &line);
        assert!(resp.ok, "{resp:?}");
    }

    #[test]
    fn stalled_client_does_not_block_others() {
        let server = Running::start(|s| s);
        let mut stalled = UnixStream::connect(&server.path).unwrap();
        stalled.write_all(b"{\"cmd\":\"port-").unwrap();
        let start = Instant::now();
        assert!(request(&server.path, &Request::PortList).unwrap().ok);
        assert!(start.elapsed() < Duration::from_secs(5));
        // The stalled client can still finish its request.
        let resp = raw_exchange(&mut stalled, b"list\"}\n");
        assert!(resp.ok);
    }

    #[test]
    fn idle_connection_is_closed() {
        let server = Running::start(|s| s.with_idle_timeout(Duration::from_millis(200)));
        let mut stream = UnixStream::connect(&server.path).unwrap();
        stream.write_all(b"{\"cmd\":").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn trickling_client_is_cut_off() {
        let server = Running::start(|s| s.with_idle_timeout(Duration::from_millis(300)));
        let mut stream = UnixStream::connect(&server.path).unwrap();
        let start = Instant::now();
        // One byte every 50 ms never trips a per-read timeout, but the
        // line as a whole must arrive within the idle timeout.
        let closed = (0..200).any(|_| {
            thread::sleep(Duration::from_millis(50));
            stream.write_all(b" ").is_err()
        });
        assert!(closed, "connection never closed");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn connections_over_the_cap_are_refused() {
        let server = Running::start(|s| s.with_max_connections(1));
        let mut first = Client::connect(&server.path).unwrap();
        assert!(first.call(&Request::PortList).unwrap().ok);
        let mut second = UnixStream::connect(&server.path).unwrap();
        let resp = read_reply(&second);
        assert_eq!(
            resp.error.as_deref(),
            Some("too many control connections (max 1)")
        );
        let mut rest = Vec::new();
        assert_eq!(second.read_to_end(&mut rest).unwrap_or(0), 0);
        drop(first);
        // The slot frees once the first connection's thread ends.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match request(&server.path, &Request::PortList) {
                Ok(resp) if resp.ok => break,
                _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                other => panic!("slot never freed: {other:?}"),
            }
        }
    }

    #[test]
    fn socket_is_private_and_dir_is_created() {
        let server = Running::start(|s| s);
        let mode = fs::metadata(&server.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(server.path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);
    }

    #[test]
    fn socket_is_removed_on_stop() {
        let mut server = Running::start(|s| s);
        assert!(server.path.exists());
        server.stop();
        assert!(!server.path.exists());
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = TempDir::new();
        let path = dir.0.join("weir.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = ControlServer::bind(&path).unwrap();
        assert_eq!(server.path(), path);
    }

    #[test]
    fn live_socket_is_refused() {
        let server = Running::start(|s| s);
        let err = ControlServer::bind(&server.path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "another weir daemon is running on {}",
                server.path.display()
            )
        );
        // The running server still works.
        assert!(request(&server.path, &Request::PortList).unwrap().ok);
    }

    #[test]
    fn non_socket_file_is_not_replaced() {
        let dir = TempDir::new();
        let path = dir.0.join("weir.sock");
        fs::write(&path, b"keep me").unwrap();
        let err = ControlServer::bind(&path).unwrap_err();
        assert!(matches!(err, ServerError::Path(_)), "{err}");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"keep me");
    }
}
