//! A blocking client of the control socket.

use std::io::{BufReader, ErrorKind, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::framing::{deadline_hook, read_line_bounded, LineRead, MAX_RESPONSE_BYTES};
use crate::{Request, Response};

/// How long the client waits for a reply.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket path (or the daemon refused).
    #[error("cannot reach weir at {path}: is `weir run` running? (set --socket or WEIR_SOCKET)")]
    NotRunning {
        /// The control socket's path.
        path: PathBuf,
    },
    /// The socket is not open to this user.
    #[error(
        "cannot reach weir at {path}: permission denied \
         (the control socket is only open to the daemon's user)"
    )]
    PermissionDenied {
        /// The control socket's path.
        path: PathBuf,
    },
    /// Any other error connecting, sending or reading.
    #[error("{what} weir at {path}: {source}")]
    Io {
        /// What failed ("cannot reach", "sending request to", ...).
        what: &'static str,
        /// The control socket's path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The daemon closed the connection before replying.
    #[error("weir at {path} closed the connection without replying")]
    Closed {
        /// The control socket's path.
        path: PathBuf,
    },
    /// No reply within [`CLIENT_TIMEOUT`].
    #[error("weir at {path} did not reply within {} s", CLIENT_TIMEOUT.as_secs())]
    Timeout {
        /// The control socket's path.
        path: PathBuf,
    },
    /// The reply line exceeds [`MAX_RESPONSE_BYTES`].
    #[error("reply from weir exceeds {MAX_RESPONSE_BYTES} bytes")]
    TooLong,
    /// The request could not be encoded or the reply is not a [`Response`].
    #[error("malformed {what}: {source}")]
    Json {
        /// "request" or "reply from weir".
        what: &'static str,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// A client connection to the daemon; several requests may share it.
#[derive(Debug)]
pub struct Client {
    /// Writes requests; also sets the socket's read timeout.
    stream: UnixStream,
    /// Reads replies (a second handle to the same socket).
    reader: BufReader<UnixStream>,
    path: PathBuf,
}

impl Client {
    /// Connects to the daemon at `socket`.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotRunning`] if nothing listens there,
    /// [`ClientError::PermissionDenied`], or another I/O error.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let path = socket.to_owned();
        let stream = UnixStream::connect(socket).map_err(|e| {
            tracing::debug!("connect {}: {e}", socket.display());
            match e.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning { path: path.clone() }
                }
                ErrorKind::PermissionDenied => ClientError::PermissionDenied { path: path.clone() },
                _ => ClientError::Io {
                    what: "cannot reach",
                    path: path.clone(),
                    source: e,
                },
            }
        })?;
        let configure = |e| ClientError::Io {
            what: "configuring the connection to",
            path: path.clone(),
            source: e,
        };
        stream
            .set_write_timeout(Some(CLIENT_TIMEOUT))
            .map_err(configure)?;
        let reader = stream.try_clone().map_err(configure)?;
        Ok(Client {
            stream,
            reader: BufReader::new(reader),
            path,
        })
    }

    /// Process id of the daemon at the other end (the socket's peer
    /// credentials, `SO_PEERCRED`); None if the kernel does not say.
    pub fn peer_pid(&self) -> Option<u32> {
        rustix::net::sockopt::socket_peercred(&self.stream)
            .ok()
            .map(|c| c.pid.as_raw_nonzero().get().unsigned_abs())
    }

    /// Sends `req` and waits for its response.
    ///
    /// # Errors
    ///
    /// I/O errors, a timeout, or a reply that is not a [`Response`]. A
    /// request the daemon rejects is an `Ok` response with `ok: false`.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let mut buf = serde_json::to_vec(req).map_err(|source| ClientError::Json {
            what: "request",
            source,
        })?;
        buf.push(b'\n');
        (&self.stream)
            .write_all(&buf)
            .map_err(|source| ClientError::Io {
                what: "sending request to",
                path: self.path.clone(),
                source,
            })?;
        self.next_response()
    }

    /// Reads the next response of a stream (a [`Request::Capture`]), or the
    /// one to the request [`Client::call`] sent.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub fn next_response(&mut self) -> Result<Response, ClientError> {
        let mut line = Vec::new();
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let read = read_line_bounded(
            &mut self.reader,
            &mut line,
            MAX_RESPONSE_BYTES,
            deadline_hook(&self.stream, deadline),
        );
        match read {
            Ok(LineRead::Line) => {}
            Ok(LineRead::Eof) => {
                return Err(ClientError::Closed {
                    path: self.path.clone(),
                })
            }
            Ok(LineRead::TooLong) => return Err(ClientError::TooLong),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ClientError::Timeout {
                    path: self.path.clone(),
                })
            }
            Err(source) => {
                return Err(ClientError::Io {
                    what: "reading reply from",
                    path: self.path.clone(),
                    source,
                })
            }
        }
        serde_json::from_slice(&line).map_err(|source| ClientError::Json {
            what: "reply from weir",
            source,
        })
    }
}

/// Sends one request to the daemon at `socket` and returns its response.
///
/// # Errors
///
/// See [`Client::connect`] and [`Client::call`].
pub fn request(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    Client::connect(socket)?.call(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_daemon_error_names_socket() {
        let path = std::env::temp_dir().join(format!("weir-api-none-{}.sock", std::process::id()));
        let err = request(&path, &Request::PortList).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach weir at {}: is `weir run` running? (set --socket or WEIR_SOCKET)",
                path.display()
            )
        );
    }
}
