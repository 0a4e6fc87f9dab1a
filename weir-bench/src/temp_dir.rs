//! The private directory each switch under test keeps its sockets (and a
//! peer its logs and database) in. Control side only.

use std::path::{Path, PathBuf};

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

/// The directory could not be created.
#[derive(Debug, thiserror::Error)]
#[error("creating {}", path.display())]
pub struct TempDirError {
    /// The directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl TempDir {
    /// Creates `weir-bench-<pid>-<tag>` (mode 0755, so a daemon running as
    /// another user can create sockets only if it is root; bench as root or
    /// point `TMPDIR` at a shared place).
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn new(tag: &str) -> Result<TempDir, TempDirError> {
        let path = std::env::temp_dir().join(format!("weir-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        match std::fs::create_dir_all(&path) {
            Ok(()) => Ok(TempDir(path)),
            Err(source) => Err(TempDirError { path, source }),
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
