//! A vhost-user frontend that shrinks its guest memory under the real
//! `weir run` daemon: the daemon takes SIGBUS on its next access to that
//! memory and must survive it with only that port in error, while the other
//! ports keep forwarding.
//!
//! The frontends are weir's own (`vhost_user::frontend`, one memfd each). The
//! hostile one truncates its memfd through `/proc/self/fd` and is never touched
//! again by this process (its own mapping would fault too).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost_user::defs::NET_HDR_BYTES;
use vhost_user::frontend::{FrontendConfig, VirtioNetFrontend};

mod common;
use common::Daemon;

/// The memfds this process holds that are frontend memory.
fn frontend_memfds() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_string_lossy()
                .starts_with("/memfd:weir-frontend")
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

fn connect(dir: &Path, name: &str) -> VirtioNetFrontend {
    let cfg = FrontendConfig {
        queue_size: 64,
        max_frame_bytes: 1518,
        hugepages: false,
    };
    VirtioNetFrontend::connect(&dir.join(format!("{name}.sock")), &cfg).unwrap()
}

/// A broadcast frame from `src`.
fn frame(src: u8, seq: u8) -> [u8; 64] {
    let mut f = [0u8; 64];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, src, seq]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

fn send(fe: &mut VirtioNetFrontend, f: &[u8]) {
    fe.tx_reclaim();
    assert!(fe.tx_send(&[0; NET_HDR_BYTES], f));
    fe.tx_publish();
}

/// Waits until `fe` received a frame equal to `want`.
fn receives(fe: &mut VirtioNetFrontend, want: &[u8], secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let mut hit = false;
        fe.rx_take(64, |_, f| hit |= f == want);
        if hit {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// (link, state, port-error drops) of one port.
fn port(d: &Daemon, name: &str) -> (String, String, u64) {
    let p = d.port_json(name);
    (
        p["link"].as_str().unwrap().to_owned(),
        p["state"].as_str().unwrap().to_owned(),
        p["stats"]["drops"]["port-error"].as_u64().unwrap_or(0),
    )
}

#[test]
fn a_frontend_shrinking_its_memory_breaks_only_its_port() {
    let dir = std::env::temp_dir().join(format!("weir-shrink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut d = Daemon::start(
        &dir,
        &common::vhost_config(&dir, &["ga", "gb", "gc"], "server", 1, 4096),
    );
    let before = frontend_memfds();
    let ga = connect(&dir, "ga");
    // The memfd and the mapping's duplicate of it: one file.
    let ga_mem: Vec<String> = frontend_memfds().difference(&before).cloned().collect();
    let inodes: BTreeSet<u64> = ga_mem
        .iter()
        .map(|fd| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino()
        })
        .collect();
    assert_eq!(inodes.len(), 1, "ga's memfd: {ga_mem:?}");
    let mut gb = connect(&dir, "gb");
    let mut gc = connect(&dir, "gc");
    d.wait_up(&["ga", "gb", "gc"]);

    // Healthy: gb's broadcast reaches gc (and ga).
    let f = frame(0xb, 0);
    send(&mut gb, &f);
    assert!(receives(&mut gc, &f, 10), "{}", d.log());

    // ga's frontend shrinks its memory to nothing under weir.
    OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{}", ga_mem[0]))
        .unwrap()
        .set_len(0)
        .unwrap();

    // gb keeps sending: weir floods each frame to ga (a write into the lost
    // memory: SIGBUS in a worker) and to gc.
    let end = Instant::now() + Duration::from_secs(15);
    let mut seq = 1u8;
    loop {
        let f = frame(0xb, seq);
        send(&mut gb, &f);
        assert!(
            receives(&mut gc, &f, 10),
            "gc lost frame {seq}: {}",
            d.log()
        );
        assert!(d.alive(), "weir died: {}", d.log());
        let (link, state, _) = port(&d, "ga");
        if link == "down" && state.starts_with("error: ") {
            break;
        }
        assert!(Instant::now() < end, "ga never in error: {link} {state}");
        seq = seq.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, state, drops) = port(&d, "ga");
    assert!(
        state.contains("guest memory file shrunk under its mapping"),
        "{state}"
    );
    assert!(drops > 0, "no port-error drop counted on ga");
    for name in ["gb", "gc"] {
        let (link, state, drops) = port(&d, name);
        assert_eq!(
            (link.as_str(), state.as_str(), drops),
            ("up", "ok", 0),
            "{name}"
        );
    }

    // And keeps forwarding between the healthy ports.
    let f = frame(0xb, 0xff);
    send(&mut gb, &f);
    assert!(receives(&mut gc, &f, 10), "{}", d.log());
    assert!(d.alive(), "weir died: {}", d.log());
    // This process must not touch ga's (shrunk) memory either: leak the
    // frontend rather than let anything in it run.
    std::mem::forget(ga);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
