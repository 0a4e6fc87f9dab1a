//! Network namespaces, veth pairs and verified TCP transfers for `weir demo`,
//! the benchmarks and the end-to-end tests: throwaway "hosts" on this
//! machine, removed again on drop.
//!
//! Control path only; shells out to `ip` (iproute2) for setup, and uses
//! `setns(2)` (through rustix) to open sockets inside a namespace from a thread.
//! Below IP, [`frame`] makes and reads frames, [`packet`] sends and receives
//! them on an interface, tags included, and [`capture`] records what an
//! interface sees. `unsafe` is allowed in [`packet`] only, the crate's OS
//! boundary.
#![deny(unsafe_code)]

pub mod capture;
pub mod frame;
pub mod packet;

use std::fs::File;
use std::process::{Command, Stdio};

use std::fmt::Display;

/// What failed, with the context it failed in (a message for people: these
/// helpers set up demos and tests, they are not matched on).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

/// Result of this crate's helpers.
pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an error.
trait Context<T> {
    fn context(self, what: impl Display) -> Result<T>;
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

/// Returns early with an [`Error`] made from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(Error(format!($($arg)*)))
    };
}

impl Error {
    fn from_msg(msg: &str) -> Error {
        Error(msg.to_owned())
    }
}

/// Runs a command, failing with its stderr if it exits non-zero.
///
/// # Errors
/// The command could not be started or failed.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails with a clear message unless running as root with `ip` available.
///
/// # Errors
/// Not root, or iproute2 missing.
pub fn require_root_and_ip() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("this needs root (network namespaces, raw sockets): run it with sudo");
    }
    sh(&["ip", "-V"]).context("iproute2's `ip` is required: apt-get install iproute2")?;
    Ok(())
}

/// Moves the calling thread into the named network namespace.
///
/// # Errors
/// The namespace file cannot be opened or `setns` fails.
pub fn enter(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening namespace {name}"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("entering namespace {name}"))?;
    Ok(())
}

/// A network namespace, deleted on drop (with everything inside it).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (deleting a leftover of the same name first) and
    /// brings its loopback up.
    ///
    /// # Errors
    /// `ip netns add` failed.
    pub fn create(name: &str) -> Result<Netns> {
        let _ = sh(&["ip", "netns", "del", name]);
        sh(&["ip", "netns", "add", name])?;
        let ns = Netns { name: name.into() };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace.
    ///
    /// # Errors
    /// The command failed.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Moves the calling thread into this namespace (sockets it opens afterwards
    /// live there). Use a dedicated thread.
    ///
    /// # Errors
    /// The namespace file cannot be opened or `setns` fails.
    pub fn enter_current_thread(&self) -> Result<()> {
        enter(&self.name)
    }

    /// Reads an interface counter inside the namespace, e.g. `rx_packets`.
    ///
    /// # Errors
    /// The interface or counter does not exist.
    pub fn counter(&self, iface: &str, name: &str) -> Result<u64> {
        let s = self.exec(&["cat", &format!("/sys/class/net/{iface}/statistics/{name}")])?;
        s.trim()
            .parse()
            .with_context(|| format!("parsing {name} of {iface}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A namespace with one veth pair: `host_if` stays in the root namespace (up, no
/// address; weir attaches to it), `eth0` inside gets `addr`.
#[derive(Debug)]
pub struct VethHost {
    /// The namespace (dropped after the link).
    pub ns: Netns,
    /// Root-namespace end of the pair.
    pub host_if: String,
    /// IPv4 address inside, without prefix length.
    pub ip: String,
}

impl VethHost {
    /// Creates namespace `ns_name` and veth `host_if` ↔ `eth0` with `ip/24` inside.
    ///
    /// # Errors
    /// Any `ip` step failed (everything created so far is removed).
    pub fn create(ns_name: &str, host_if: &str, ip: &str) -> Result<VethHost> {
        VethHost::create_with(ns_name, host_if, ip, false)
    }

    /// [`VethHost::create`] with IPv6 off on both ends before they come up,
    /// so that neither stack sends a frame by itself (duplicate address
    /// detection, router solicitations, MLD reports): every frame on the link
    /// is one a test caused, and counters can be compared exactly.
    ///
    /// # Errors
    /// Any `ip` or `sysctl` step failed (everything created so far is
    /// removed).
    pub fn create_quiet(ns_name: &str, host_if: &str, ip: &str) -> Result<VethHost> {
        VethHost::create_with(ns_name, host_if, ip, true)
    }

    fn create_with(ns_name: &str, host_if: &str, ip: &str, quiet: bool) -> Result<VethHost> {
        let _ = sh(&["ip", "link", "del", host_if]);
        let ns = Netns::create(ns_name)?;
        sh(&[
            "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns_name,
        ])?;
        let h = VethHost {
            ns,
            host_if: host_if.into(),
            ip: ip.into(),
        };
        // A kernel without IPv6 has no such settings, and nothing to silence.
        if quiet && std::path::Path::new("/proc/sys/net/ipv6").exists() {
            let off = |iface: &str| format!("net.ipv6.conf.{iface}.disable_ipv6=1");
            sh(&["sysctl", "-qw", &off(host_if)])?;
            h.ns.exec(&["sysctl", "-qw", &off("eth0")])?;
        }
        sh(&["ip", "link", "set", host_if, "up"])?;
        h.ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        h.ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        wait_carrying(|| sh(&["ip", "-o", "link", "show", "dev", host_if]))?;
        wait_carrying(|| h.ns.exec(&["ip", "-o", "link", "show", "dev", "eth0"]))?;
        Ok(h)
    }

    /// The MAC address of `eth0` inside.
    ///
    /// # Errors
    /// The interface is gone.
    pub fn mac(&self) -> Result<String> {
        Ok(self
            .ns
            .exec(&["cat", "/sys/class/net/eth0/address"])?
            .trim()
            .to_string())
    }
}

/// Waits until an interface can carry frames, `show` printing its
/// `ip -o link` line. A veth end that was just set up has its carrier, but
/// the kernel attaches its transmit queue only when its link watcher runs,
/// up to a second later; until then the interface shows `qdisc noop` and
/// drops what is sent through it (a packet socket's first frames, a
/// namespace's first ARP request).
///
/// # Errors
/// `show` failed, or the link is not up with a queue within five seconds.
fn wait_carrying(show: impl Fn() -> Result<String>) -> Result<()> {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = show()?;
        if line.contains("state UP") && !line.contains("qdisc noop") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the link is not ready to carry frames after 5 s: {}",
                line.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for VethHost {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host_if]);
    }
}

/// Moves an existing root-namespace interface (e.g. a TAP weir created) into `ns`
/// as `eth0` with `ip/24`.
///
/// # Errors
/// Any `ip` step failed.
pub fn adopt_into(ns: &Netns, iface: &str, ip: &str) -> Result<()> {
    sh(&[
        "ip",
        "link",
        "set",
        iface,
        "netns",
        ns.name(),
        "name",
        "eth0",
    ])?;
    ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.exec(&["ip", "link", "set", "eth0", "up"])?;
    Ok(())
}

/// Fills `buf` with the verification pattern for stream offset `offset`: byte `i`
/// of the stream is byte `i % 8` of `splitmix64(seed + i / 8)`. Both ends compute
/// it from the offset alone, so the receiver checks every byte without a copy of
/// the data, whatever sizes the reads come in.
pub fn pattern_fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        let i = offset + k as u64;
        let mut z = seed.wrapping_add(i / 8).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        *b = z.to_le_bytes()[(i % 8) as usize];
    }
}

/// Sends `len_bytes` of the [`pattern_fill`] stream from namespace `from` to `to_ip:port` in
/// namespace `to`, over TCP, and verifies every byte at the receiver. Returns the
/// elapsed time.
///
/// # Errors
/// Connection failure, a short transfer, or a byte that differs.
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    port: u16,
    len_bytes: u64,
) -> Result<std::time::Duration> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    let seed = 0x5eed_u64 ^ len_bytes;
    let to_name = to.name().to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || -> Result<u64> {
        let r = (|| {
            enter(&to_name)?;
            let l = TcpListener::bind(("0.0.0.0", port)).context("listening")?;
            let _ = ready_tx.send(());
            let (mut s, _) = l.accept().context("accepting")?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .context("setting a timeout")?;
            let mut buf = vec![0u8; 1 << 16];
            let mut want = vec![0u8; 1 << 16];
            let mut got: u64 = 0;
            loop {
                let n = s.read(&mut buf).context("receiving")?;
                if n == 0 {
                    break;
                }
                pattern_fill(seed, got, &mut want[..n]);
                if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
                    bail!("byte {} of the stream differs", got + i as u64);
                }
                got += n as u64;
            }
            Ok(got)
        })();
        r
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| Error::from_msg("receiver did not start"))?;
    let from_name = from.name().to_string();
    let to_ip = to_ip.to_string();
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> Result<()> {
        let r = (|| {
            enter(&from_name)?;
            let mut s = TcpStream::connect_timeout(
                &format!("{to_ip}:{port}").parse().context("peer address")?,
                Duration::from_secs(10),
            )
            .context("connecting")?;
            s.set_write_timeout(Some(Duration::from_secs(30)))
                .context("setting a timeout")?;
            let mut buf = vec![0u8; 1 << 16];
            let mut sent = 0u64;
            while sent < len_bytes {
                let n = (len_bytes - sent).min(buf.len() as u64) as usize;
                pattern_fill(seed, sent, &mut buf[..n]);
                s.write_all(&buf[..n]).context("sending")?;
                sent += n as u64;
            }
            s.shutdown(std::net::Shutdown::Write)
                .context("closing the stream")?;
            Ok(())
        })();
        r
    });
    sender
        .join()
        .map_err(|_| Error::from_msg("sender panicked"))??;
    let got = receiver
        .join()
        .map_err(|_| Error::from_msg("receiver panicked"))??;
    if got != len_bytes {
        bail!("received {got} of {len_bytes} bytes");
    }
    Ok(start.elapsed())
}
