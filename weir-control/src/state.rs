//! The state file: the running configuration saved after every change made
//! over the control socket (`[control] state`, docs/operations.md,
//! "Persistence").
//!
//! Control plane only. [`write_atomic`] replaces the file so that a crash
//! or power loss at any moment leaves either the old contents or the new,
//! never a mix or a truncated file: the text goes to a temporary file in
//! the same directory (mode 0600 from its creation), is flushed to disk,
//! renamed over the old file, and the directory is flushed so the rename
//! itself survives.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the state file: it lists every tenant's ports and ACLs.
pub const STATE_FILE_MODE: u32 = 0o600;
/// Mode of a state directory the daemon creates.
pub const STATE_DIR_MODE: u32 = 0o700;

/// The state file could not be written. The change it records stands; the
/// file keeps what it held before.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state file's directory could not be created.
    #[error("creating state directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path has no file name (it ends in `..` or is `/`).
    #[error("state file path {} names no file", path.display())]
    NoFileName {
        /// The path.
        path: PathBuf,
    },
    /// The temporary file could not be created, written or flushed.
    #[error("writing {}", path.display())]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The temporary file could not be renamed over the state file.
    #[error("replacing {}", path.display())]
    Rename {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory could not be flushed after the rename.
    #[error("flushing directory {}", path.display())]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Replaces the file at `path` with `contents`, atomically and durably, with
/// mode 0600 ([`STATE_FILE_MODE`]). A missing parent directory is created
/// with mode 0700. On failure the file at `path` is as it was and no
/// temporary file is left behind.
///
/// # Errors
///
/// The step that failed ([`StateError`]).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    let name = path.file_name().ok_or_else(|| StateError::NoFileName {
        path: path.to_owned(),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(STATE_DIR_MODE)
            .create(&dir)
            .and_then(|()| {
                // The mode given to mkdir is masked by the umask.
                fs::set_permissions(&dir, fs::Permissions::from_mode(STATE_DIR_MODE))
            })
            .map_err(|source| StateError::CreateDir {
                path: dir.clone(),
                source,
            })?;
    }
    // One writer at a time (the control lock), so the process id makes the
    // name unique; a leftover of a daemon that died mid-write is replaced.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = write_synced(&tmp, contents)
        .map_err(|source| StateError::Write {
            path: tmp.clone(),
            source,
        })
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|source| StateError::Rename {
                path: path.to_owned(),
                source,
            })
        });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::SyncDir { path: dir, source })
}

/// Creates `tmp` with mode 0600 (replacing a leftover), writes `contents`
/// and flushes it to disk.
fn write_synced(tmp: &Path, contents: &[u8]) -> io::Result<()> {
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // `create_new`: never follow a symlink planted at the temporary name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(STATE_FILE_MODE)
        .open(tmp)?;
    // The mode given to open is masked by the umask; 0600 is what it must be.
    file.set_permissions(fs::Permissions::from_mode(STATE_FILE_MODE))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh temporary directory, removed on drop.
    struct TempDir(tempfile::TempDir);

    impl TempDir {
        fn new() -> Self {
            TempDir(
                tempfile::Builder::new()
                    .prefix("weir-state-")
                    .tempdir()
                    .unwrap(),
            )
        }

        fn join(&self, p: &str) -> PathBuf {
            self.0.path().join(p)
        }

        fn entries(&self, sub: &str) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_file_is_private_and_its_new_directory_too() {
        let dir = TempDir::new();
        let path = dir.join("lib/weir/state.toml");
        write_atomic(&path, b"[[bridge]]\nname = \"br0\"\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"[[bridge]]\nname = \"br0\"\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(dir.entries("lib/weir"), ["state.toml"]);
    }

    #[test]
    fn a_write_replaces_the_whole_file_and_makes_it_private() {
        let dir = TempDir::new();
        let path = dir.join("state.toml");
        fs::write(&path, "a much longer old text than the new one\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(dir.entries(""), ["state.toml"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_file() {
        let dir = TempDir::new();
        // A rename cannot replace a non-empty directory.
        let path = dir.join("state.toml");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "old").unwrap();
        let err = write_atomic(&path, b"new\n").unwrap_err();
        assert!(matches!(err, StateError::Rename { .. }), "{err}");
        assert_eq!(fs::read(path.join("keep")).unwrap(), b"old");
        assert_eq!(dir.entries(""), ["state.toml"]);
        // A leftover temporary file of a daemon that died mid-write (same
        // pid after a reboot) does not stop the next write.
        let path = dir.join("other.toml");
        let leftover = dir.join(&format!(".other.toml.tmp-{}", std::process::id()));
        fs::write(&leftover, "half a fi").unwrap();
        write_atomic(&path, b"whole\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"whole\n");
        assert!(!leftover.exists());
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = write_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(matches!(err, StateError::NoFileName { .. }), "{err}");
    }
}
