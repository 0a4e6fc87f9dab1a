//! The socket between weir's relay and the vhost-user library is nobody
//! else's: no abstract-namespace name (those are open to every local user and
//! carry no permissions), no path left behind.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

use dataplane::Mempool;
use vhost_user::create;
use vhost_user::testguest;

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(256))
}

/// Abstract-namespace names bound by this process's sockets, from
/// /proc/net/unix (its path column starts with `@`).
fn abstract_names() -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (inode, path) = (f.get(6)?, f.get(7)?);
            (path.starts_with('@') && inodes.iter().any(|i| i == inode)).then(|| path.to_string())
        })
        .collect()
}

/// Sends GET_FEATURES and returns the feature bits the library answers.
fn get_features(s: &mut UnixStream) -> u64 {
    let mut msg = Vec::new();
    for v in [1u32, 1, 0] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&msg).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = [0u8; 20];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(u32::from_le_bytes(reply[0..4].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(reply[8..12].try_into().unwrap()), 8);
    u64::from_le_bytes(reply[12..20].try_into().unwrap())
}

#[test]
fn library_pairing_has_no_abstract_name_and_leaves_no_path() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dev.sock");
    let cfg = testguest::server_config(sock.clone());
    let before = abstract_names();
    let dev = create("pair", &cfg, pool()).unwrap();
    for round in 0..3 {
        let mut s = UnixStream::connect(&sock).unwrap();
        // The library answers through the private pairing.
        assert_ne!(get_features(&mut s), 0);
        let new: Vec<String> = abstract_names()
            .into_iter()
            .filter(|n| !before.contains(n))
            .collect();
        assert!(new.is_empty(), "round {round}: abstract sockets {new:?}");
        let stray: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!(".weir-{:x}-", std::process::id()))
            })
            .map(|e| e.path())
            .collect();
        assert!(stray.is_empty(), "round {round}: left behind {stray:?}");
    }
    drop(dev);
    // The device's own socket is gone with it.
    assert!(!sock.exists());
}
