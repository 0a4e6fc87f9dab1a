//! On-CPU time of threads, from `/proc/<pid>/task/<tid>/stat` (`utime` +
//! `stime`, in clock ticks of 10 ms).
//!
//! Control side, read before and after a trial, never per packet. On a shared
//! machine the TSC-based busy counters also count time a thread was
//! preempted; CPU time does not, so the ratio of the two shows how much of its
//! CPU each side really got, and CPU time per frame is comparable across
//! switches that keep no counters of their own (testpmd, OVS).

use std::path::Path;

/// Linux's USER_HZ on every architecture weir targets.
const NS_PER_TICK: u64 = 10_000_000;

/// `utime + stime` of the thread or process whose `stat` file is `path`, in
/// nanoseconds.
fn stat_cpu_ns(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * NS_PER_TICK)
}

/// CPU time of the calling thread.
pub fn this_thread_ns() -> Option<u64> {
    stat_cpu_ns(Path::new("/proc/thread-self/stat"))
}

/// Which threads to account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threads {
    /// Process id; None: this process.
    pub pid: Option<u32>,
    /// Only threads whose name starts with this; None: all.
    pub name_prefix: Option<String>,
}

impl Threads {
    /// Summed CPU time of the selected threads; None if none could be read.
    pub fn cpu_ns(&self) -> Option<u64> {
        let dir = match self.pid {
            Some(p) => format!("/proc/{p}/task"),
            None => "/proc/self/task".into(),
        };
        let mut total = None;
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            if let Some(prefix) = &self.name_prefix {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if !comm.starts_with(prefix.as_str()) {
                    continue;
                }
            }
            if let Some(ns) = stat_cpu_ns(&e.path().join("stat")) {
                *total.get_or_insert(0) += ns;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_accumulates_cpu_time() {
        let before = this_thread_ns().unwrap();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(this_thread_ns().unwrap() >= before);
        let all = Threads {
            pid: None,
            name_prefix: None,
        };
        assert!(all.cpu_ns().is_some());
    }
}
