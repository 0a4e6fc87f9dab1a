//! Unix socket files that appear with their final mode and owner, and never
//! replace anything but a stale socket.
//!
//! Layer: control. Not on the packet path. Used for vhost-user server sockets,
//! weir's control socket, and the private socket that pairs the relay with the
//! vhost-user library.
//!
//! # Scheme
//!
//! [`bind`] never binds at the final path. It creates a fresh directory of
//! mode 0700 next to the path (`mkdir` is exclusive, so the directory is ours
//! and nobody else can enter it), binds the socket inside it, sets the mode
//! and group there (nobody else can reach or swap the file in between), then
//! renames it onto the final path with `RENAME_NOREPLACE`, which fails rather
//! than replace anything that appeared meanwhile. The socket is therefore
//! never reachable under a mode other than its final one, and the umask plays
//! no part.
//!
//! What is at the final path beforehand is examined without following
//! symlinks: nothing is fine; a socket that accepts connections is someone
//! else's live endpoint (another port, the control socket, another daemon) and
//! is refused; a socket that refuses connections is stale and is removed,
//! after checking it is still the same inode; anything else (a regular file, a
//! symlink, a directory, a FIFO) is refused and left alone.
//!
//! [`private_listener`] gives an endpoint pair through a listener that nobody
//! else can ever reach: bound in a fresh 0700 directory, connected once, then
//! unlinked before anyone else is let near it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};

/// Longest `sun_path` (108 bytes with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Why a socket could not be created at a path.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    /// Something accepts connections on the path.
    #[error("{} is a live socket (something accepts connections on it); refusing to take it over", .path.display())]
    Live {
        /// The path.
        path: PathBuf,
    },
    /// The path holds something other than a socket.
    #[error("{} exists and is not a socket; refusing to replace it", .path.display())]
    NotSocket {
        /// The path.
        path: PathBuf,
    },
    /// Something appeared at the path while the socket was being created.
    #[error("{} appeared while the socket was being created; left alone", .path.display())]
    Taken {
        /// The path.
        path: PathBuf,
    },
    /// The path has no file name component.
    #[error("{} does not name a file", .path.display())]
    NoFileName {
        /// The path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("{what} {}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// What is at a socket path, seen without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// Nothing.
    Absent,
    /// A socket that accepts connections (or whose backlog is full).
    Live,
    /// A socket nobody listens on.
    Stale,
    /// Anything else: a file, a symlink, a directory, a FIFO.
    NotSocket,
}

/// The owner settings a socket is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOwner {
    /// Permission bits (at most 0o777).
    pub mode: u32,
    /// Group to give the socket, if any.
    pub gid: Option<u32>,
}

impl Default for SocketOwner {
    /// Mode 0600, the daemon's group: only the daemon's user may connect.
    fn default() -> Self {
        SocketOwner {
            mode: 0o600,
            gid: None,
        }
    }
}

/// A socket file [`bind`] created: its listener and its inode.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listening socket.
    pub listener: UnixListener,
    /// `(dev, ino)` of the socket file, so that a later cleanup removes only
    /// this file ([`remove_if_ours`]).
    pub file_id: (u64, u64),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> SocketPathError {
    let path = path.to_owned();
    move |e| SocketPathError::Io {
        what,
        path,
        source: e.into(),
    }
}

/// The parent directory (`.` for a bare name) and the file name of `path`.
fn split(path: &Path) -> Result<(&Path, &OsStr), SocketPathError> {
    let name = path
        .file_name()
        .ok_or_else(|| SocketPathError::NoFileName {
            path: path.to_owned(),
        })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

fn open_dir(dir: &Path) -> Result<OwnedFd, SocketPathError> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("opening directory", dir))
}

/// Whether a socket at `path` accepts connections. The connect is
/// non-blocking, so a listener with a full backlog (also live) cannot stall
/// the caller.
fn accepts_connections(path: &Path) -> Result<bool, SocketPathError> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(io_err("probing", path))?;
    let addr = SocketAddrUnix::new(path).map_err(io_err("probing", path))?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INPROGRESS => Ok(true),
        Err(e) if e == rustix::io::Errno::CONNREFUSED || e == rustix::io::Errno::NOENT => Ok(false),
        Err(e) => Err(io_err("probing", path)(e)),
    }
}

/// What is at `path`, without following a final symlink.
///
/// # Errors
/// A failed `lstat` (other than "no such file") or connect probe.
pub fn probe(path: &Path) -> Result<PathState, SocketPathError> {
    let (parent, name) = split(path)?;
    let dir = match open_dir(parent) {
        Ok(d) => d,
        Err(SocketPathError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(PathState::Absent)
        }
        Err(e) => return Err(e),
    };
    probe_at(&dir, name, path).map(|(s, _)| s)
}

fn probe_at(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
) -> Result<(PathState, Option<(u64, u64)>), SocketPathError> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok((PathState::Absent, None)),
        Err(e) => return Err(io_err("inspecting", path)(e)),
    };
    let id = Some((st.st_dev, st.st_ino));
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Ok((PathState::NotSocket, id));
    }
    let state = if accepts_connections(path)? {
        PathState::Live
    } else {
        PathState::Stale
    };
    Ok((state, id))
}

/// A fresh mode-0700 directory inside `parent`, removed with its contents on
/// drop.
struct PrivateDir<'a> {
    parent: &'a OwnedFd,
    name: String,
    fd: OwnedFd,
    /// Full path of the directory, for binding inside it.
    path: PathBuf,
}

impl<'a> PrivateDir<'a> {
    fn create(parent: &'a OwnedFd, parent_path: &Path) -> Result<PrivateDir<'a>, SocketPathError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let mut tries = 0;
        loop {
            // Uniqueness, not secrecy: mkdir is exclusive, so a name someone
            // else took only costs a retry.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                ".weir-{:x}-{:x}-{:x}",
                std::process::id(),
                // Relaxed: only uniqueness matters.
                SEQ.fetch_add(1, Ordering::Relaxed),
                nanos
            );
            match rustix::fs::mkdirat(parent, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) if tries < 16 => {
                    tries += 1;
                    continue;
                }
                Err(e) => return Err(io_err("creating a private directory in", parent_path)(e)),
            }
            let fd = match rustix::fs::openat(
                parent,
                name.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = rustix::fs::unlinkat(parent, name.as_str(), AtFlags::REMOVEDIR);
                    return Err(io_err("opening a private directory in", parent_path)(e));
                }
            };
            let path = parent_path.join(&name);
            return Ok(PrivateDir {
                parent,
                name,
                fd,
                path,
            });
        }
    }

    /// A path that reaches `file` inside the directory and fits `sun_path`:
    /// the plain one, or through `/proc/self/fd` when the plain one is too
    /// long.
    fn sun_path(&self, file: &str) -> PathBuf {
        let plain = self.path.join(file);
        if plain.as_os_str().as_bytes().len() <= SUN_PATH_MAX {
            return plain;
        }
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}/{file}", self.fd.as_raw_fd()))
    }
}

impl Drop for PrivateDir<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(&self.fd, "s", AtFlags::empty());
        let _ = rustix::fs::unlinkat(self.parent, self.name.as_str(), AtFlags::REMOVEDIR);
    }
}

/// Creates a listening socket at `path` with `owner`'s mode and group from
/// the moment the path exists (see the module notes for the scheme).
///
/// # Errors
/// [`SocketPathError::Live`] if something accepts connections at `path`,
/// [`SocketPathError::NotSocket`] if anything but a socket is there (a symlink
/// included: it is never followed), or a failed system call. Nothing existing
/// at `path` is changed, except a stale socket, which is removed.
pub fn bind(path: &Path, owner: SocketOwner) -> Result<BoundSocket, SocketPathError> {
    let (parent, name) = split(path)?;
    let dir = open_dir(parent)?;
    match probe_at(&dir, name, path)? {
        (PathState::Absent, _) => {}
        (PathState::Live, _) => {
            return Err(SocketPathError::Live {
                path: path.to_owned(),
            })
        }
        (PathState::NotSocket, _) => {
            return Err(SocketPathError::NotSocket {
                path: path.to_owned(),
            })
        }
        (PathState::Stale, id) => {
            // Remove only the inode judged stale: a directory where others
            // may create files could have swapped it since.
            match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if Some((st.st_dev, st.st_ino)) == id => {
                    rustix::fs::unlinkat(&dir, name, AtFlags::empty())
                        .map_err(io_err("removing stale socket", path))?;
                    tracing::info!(socket = %path.display(), "removed stale socket");
                }
                Ok(_) => {
                    return Err(SocketPathError::NotSocket {
                        path: path.to_owned(),
                    })
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(io_err("inspecting", path)(e)),
            }
        }
    }
    let private = PrivateDir::create(&dir, parent)?;
    let listener =
        UnixListener::bind(private.sun_path("s")).map_err(|source| SocketPathError::Io {
            what: "binding",
            path: path.to_owned(),
            source,
        })?;
    // Nobody else can enter the 0700 directory, so the file the path names
    // here is the one just bound.
    if let Some(gid) = owner.gid {
        rustix::fs::chownat(
            &private.fd,
            "s",
            None,
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_err("setting the group of", path))?;
    }
    rustix::fs::chmodat(
        &private.fd,
        "s",
        Mode::from_raw_mode(owner.mode & 0o777),
        AtFlags::empty(),
    )
    .map_err(io_err("setting the mode of", path))?;
    let st = rustix::fs::statat(&private.fd, "s", AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io_err("inspecting", path))?;
    move_into_place(&private.fd, &dir, name, path)?;
    drop(private);
    Ok(BoundSocket {
        listener,
        file_id: (st.st_dev, st.st_ino),
    })
}

/// Renames `s` in `from` to `name` in `to`, failing if `name` exists.
fn move_into_place(
    from: &OwnedFd,
    to: &OwnedFd,
    name: &OsStr,
    path: &Path,
) -> Result<(), SocketPathError> {
    let taken = || SocketPathError::Taken {
        path: path.to_owned(),
    };
    match rustix::fs::renameat_with(from, "s", to, name, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(taken()),
        // A filesystem without RENAME_NOREPLACE: a hard link is just as
        // exclusive.
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            match rustix::fs::linkat(from, "s", to, name, AtFlags::empty()) {
                Ok(()) => Ok(()),
                Err(rustix::io::Errno::EXIST) => Err(taken()),
                Err(e) => Err(io_err("placing socket at", path)(e)),
            }
        }
        Err(e) => Err(io_err("placing socket at", path)(e)),
    }
}

/// Removes the socket file at `path` if it is still the inode `file_id`
/// (something else may have replaced it since).
pub fn remove_if_ours(path: &Path, file_id: (u64, u64)) {
    let Ok((parent, name)) = split(path) else {
        return;
    };
    let Ok(dir) = open_dir(parent) else { return };
    if let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        if (st.st_dev, st.st_ino) == file_id {
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
        }
    }
}

/// A listener with exactly one connection queued, whose other end is
/// returned, and which nobody else can ever connect to: it is bound in a
/// fresh 0700 directory under `tmp`, connected once, and its name is removed
/// before this returns. This is a socketpair for APIs that want to accept
/// their end from a listener.
///
/// # Errors
/// A failed system call.
pub fn private_listener(tmp: &Path) -> Result<(UnixListener, UnixStream), SocketPathError> {
    let dir = open_dir(tmp)?;
    let private = PrivateDir::create(&dir, tmp)?;
    let at = private.sun_path("s");
    let listener = UnixListener::bind(&at).map_err(|source| SocketPathError::Io {
        what: "binding a private socket in",
        path: tmp.to_owned(),
        source,
    })?;
    let ours = UnixStream::connect(&at).map_err(|source| SocketPathError::Io {
        what: "connecting a private socket in",
        path: tmp.to_owned(),
        source,
    })?;
    // Unlinks the name and the directory: from here on nothing can connect.
    drop(private);
    Ok((listener, ours))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            // Relaxed: only uniqueness matters.
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("weir-sp-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn socket_has_its_final_mode_and_no_private_dir_is_left() {
        let d = TempDir::new();
        let p = d.0.join("a.sock");
        let b = bind(
            &p,
            SocketOwner {
                mode: 0o660,
                gid: Some(0),
            },
        )
        .unwrap();
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o660);
        assert_eq!(md.gid(), 0);
        assert_eq!((md.dev(), md.ino()), b.file_id);
        assert_eq!(std::fs::read_dir(&d.0).unwrap().count(), 1);
        UnixStream::connect(&p).unwrap();
    }

    #[test]
    fn live_socket_is_refused_and_keeps_working() {
        let d = TempDir::new();
        let p = d.0.join("a.sock");
        let first = bind(&p, SocketOwner::default()).unwrap();
        let err = bind(&p, SocketOwner::default()).unwrap_err();
        assert!(matches!(err, SocketPathError::Live { .. }), "{err}");
        let _c = UnixStream::connect(&p).unwrap();
        first.listener.accept().unwrap();
        assert_eq!(probe(&p).unwrap(), PathState::Live);
    }

    #[test]
    fn stale_socket_is_replaced() {
        let d = TempDir::new();
        let p = d.0.join("a.sock");
        drop(UnixListener::bind(&p).unwrap());
        assert_eq!(probe(&p).unwrap(), PathState::Stale);
        let b = bind(&p, SocketOwner::default()).unwrap();
        let _c = UnixStream::connect(&p).unwrap();
        b.listener.accept().unwrap();
    }

    #[test]
    fn symlink_and_regular_file_are_left_alone() {
        let d = TempDir::new();
        let target = d.0.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.0.join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            bind(&link, SocketOwner::default()),
            Err(SocketPathError::NotSocket { .. })
        ));
        assert!(matches!(
            bind(&target, SocketOwner::default()),
            Err(SocketPathError::NotSocket { .. })
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // A symlink to a stale socket is not followed either.
        let stale = d.0.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let link2 = d.0.join("link2.sock");
        std::os::unix::fs::symlink(&stale, &link2).unwrap();
        assert!(bind(&link2, SocketOwner::default()).is_err());
        assert!(std::fs::symlink_metadata(&stale).is_ok());
    }

    #[test]
    fn long_paths_bind_through_proc() {
        let d = TempDir::new();
        let deep =
            d.0.join("x".repeat(SUN_PATH_MAX - 12 - d.0.as_os_str().len()));
        std::fs::create_dir_all(&deep).unwrap();
        // Fits sun_path itself, but not with the private directory's name.
        let p = deep.join("y".repeat(10));
        assert!(p.as_os_str().len() <= SUN_PATH_MAX);
        assert!(deep.join(".weir-0-0-0/s").as_os_str().len() > SUN_PATH_MAX);
        let b = bind(&p, SocketOwner::default()).unwrap();
        let _c = UnixStream::connect(&p).unwrap();
        b.listener.accept().unwrap();
    }

    #[test]
    fn private_listener_has_one_connection_and_no_name() {
        let d = TempDir::new();
        let (l, mut ours) = private_listener(&d.0).unwrap();
        assert_eq!(std::fs::read_dir(&d.0).unwrap().count(), 0);
        let (mut theirs, _) = l.accept().unwrap();
        use std::io::{Read, Write};
        ours.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        theirs.read_exact(&mut b).unwrap();
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_err());
    }
}
