//! Readiness and state notifications to a service manager (systemd's
//! `sd_notify` protocol): one datagram of `KEY=VALUE` lines to the Unix
//! socket named by `$NOTIFY_SOCKET`, a path or, with a leading `@`, an
//! abstract name.
//!
//! `weir run` under `Type=notify` sends `READY=1` once its control socket
//! accepts connections, `STATUS=` lines as it changes state and `STOPPING=1`
//! when it begins to shut down. Without `$NOTIFY_SOCKET` every call is a
//! no-op, so the same binary runs in a terminal, in a container or under any
//! other supervisor.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// Where notifications go, read once from the environment.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr, String)>,
}

/// Why `$NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Neither an absolute path nor `@name`.
    #[error("NOTIFY_SOCKET={0:?}: neither an absolute path nor @abstract-name")]
    BadAddress(String),
    /// The socket address or the local socket could not be made.
    #[error("NOTIFY_SOCKET={0:?}: {1}")]
    Socket(String, #[source] io::Error),
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier { target: None }
    }

    /// From `$NOTIFY_SOCKET`: none when unset or empty.
    ///
    /// # Errors
    /// If the variable is set to something that is not a socket address.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier::none()),
            Some(v) if v.is_empty() => Ok(Notifier::none()),
            Some(v) => Notifier::to(&v),
        }
    }

    /// To the socket `addr`, written as `$NOTIFY_SOCKET` is.
    ///
    /// # Errors
    /// If `addr` is not an absolute path or `@name`, or no datagram socket
    /// can be opened.
    pub fn to(addr: &OsStr) -> Result<Notifier, NotifyError> {
        use std::os::unix::ffi::OsStrExt;
        let shown = addr.to_string_lossy().into_owned();
        let bytes = addr.as_bytes();
        let sockaddr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(PathBuf::from(addr)),
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])
            }
            _ => return Err(NotifyError::BadAddress(shown)),
        }
        .map_err(|e| NotifyError::Socket(shown.clone(), e))?;
        let sock = UnixDatagram::unbound().map_err(|e| NotifyError::Socket(shown.clone(), e))?;
        Ok(Notifier {
            target: Some((sock, sockaddr, shown)),
        })
    }

    /// Whether a service manager listens.
    pub fn active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). A failure is
    /// logged and otherwise ignored: a service manager that went away must
    /// not stop the switch.
    pub fn send(&self, state: &str) {
        let Some((sock, addr, shown)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
            tracing::warn!(socket = %shown, %e, "cannot notify the service manager");
        }
    }

    /// `READY=1` with `STATUS=` and this process's pid.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}",
            one_line(status),
            std::process::id()
        ));
    }

    /// `STATUS=`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with `STATUS=`.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }
}

/// A `STATUS=` value is one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).expect("utf-8")
    }

    #[test]
    fn sends_ready_status_and_stopping_to_a_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier::to(path.as_os_str()).expect("notifier");
        assert!(n.active());
        n.ready("2 ports\nup");
        let msg = recv(&listener);
        assert!(
            msg.starts_with("READY=1\nSTATUS=2 ports up\nMAINPID="),
            "{msg}"
        );
        n.status("busy");
        assert_eq!(recv(&listener), "STATUS=busy");
        n.stopping("bye");
        assert_eq!(recv(&listener), "STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("weir-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier::to(OsStr::new(&format!("@{name}"))).expect("notifier");
        n.status("x");
        assert_eq!(recv(&listener), "STATUS=x");
    }

    #[test]
    fn refuses_a_relative_address_and_survives_a_missing_listener() {
        assert!(matches!(
            Notifier::to(OsStr::new("run/notify")),
            Err(NotifyError::BadAddress(_))
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let n = Notifier::to(dir.path().join("nobody").as_os_str()).expect("notifier");
        n.ready("no one listens"); // logged, not fatal
        let none = Notifier::none();
        assert!(!none.active());
        none.ready("nothing sent");
    }
}
