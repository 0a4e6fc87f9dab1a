//! Keeping weir's own control threads off the workers' CPUs.
//!
//! A poll-mode worker owns its CPU: any other runnable thread the kernel puts
//! there takes the worker off it for up to a scheduler slice (milliseconds),
//! and for that long nothing drains its rings. The control side (control
//! socket, vhost-user message threads, housekeeping, relays) is idle most of
//! the time but not always, so it is confined to the CPUs that run no worker.
//!
//! A thread's CPU mask is inherited by the threads it spawns, so confining the
//! thread that starts everything is enough: workers then pin themselves to
//! their own CPU, and every other thread stays on the rest. Processes spawned
//! meanwhile inherit it too, which is why [`Confined::widen`] exists.
//!
//! Other processes, and the kernel's own movable threads, are not weir's to
//! move by default. `weir bench --isolate` asks for it: [`isolate_others`]
//! moves every thread of the host that may run elsewhere off the workers'
//! CPUs for the length of the run, and puts each back when the returned
//! [`Isolation`] is dropped. That is what a host set up for poll-mode work
//! has from its boot parameters (`isolcpus`) or a tuning profile; here it is
//! done for one run, so that a benchmark measures the switch rather than
//! the memory-compaction and monitoring threads that visit its CPU.

use std::path::Path;

use rustix::process::Pid;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// The calling thread's mask before [`confine_off`] changed it, for
/// [`Confined::widen`].
#[derive(Debug)]
pub struct Confined {
    before: CpuSet,
}

/// Confines the calling thread, and with it every thread it spawns from now
/// on, to the CPUs of its current mask that run no worker. Returns the CPUs
/// left, or `None` (mask unchanged) when every allowed CPU runs a worker or
/// the mask cannot be read or set; the control threads then share the
/// workers' CPUs, and a line in the log says so.
pub fn confine_off(workers: &[usize]) -> Option<(Confined, Vec<usize>)> {
    let before = match sched_getaffinity(None) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "cannot read the CPU mask: {e}; control threads may share the workers' CPUs"
            );
            return None;
        }
    };
    let rest = without(before, workers);
    let left = cpus(&rest);
    if left.is_empty() {
        tracing::info!(
            ?workers,
            "every allowed CPU runs a worker: control threads share them (leave a CPU without a worker for them)"
        );
        return None;
    }
    if let Err(e) = sched_setaffinity(None, &rest) {
        tracing::warn!("cannot confine the control threads to CPUs {left:?}: {e}");
        return None;
    }
    tracing::debug!(cpus = ?left, "control threads confined");
    Some((Confined { before }, left))
}

/// `set` without the CPUs in `workers`.
fn without(mut set: CpuSet, workers: &[usize]) -> CpuSet {
    for &w in workers.iter().filter(|&&w| w < CpuSet::MAX_CPU) {
        set.unset(w);
    }
    set
}

/// The CPUs in `set`, ascending.
fn cpus(set: &CpuSet) -> Vec<usize> {
    (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
}

impl Confined {
    /// Gives the calling thread its earlier mask back for as long as the
    /// returned guard lives (to start a process that must see every CPU, such
    /// as a benchmark peer), then confines it again.
    pub fn widen(&self) -> Widened {
        let now = sched_getaffinity(None).ok();
        if let Err(e) = sched_setaffinity(None, &self.before) {
            tracing::warn!("cannot widen the CPU mask: {e}");
        }
        Widened { now }
    }
}

/// See [`Confined::widen`].
#[derive(Debug)]
pub struct Widened {
    now: Option<CpuSet>,
}

impl Drop for Widened {
    fn drop(&mut self) {
        if let Some(now) = &self.now {
            let _ = sched_setaffinity(None, now);
        }
    }
}

/// Threads of other processes moved off the workers' CPUs by
/// [`isolate_others`]; dropping it gives each its earlier mask back.
#[derive(Debug)]
pub struct Isolation {
    moved: Vec<(Pid, CpuSet)>,
    /// What was done, for the report.
    pub summary: IsolationSummary,
}

/// Counts of what [`isolate_others`] found, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IsolationSummary {
    /// Threads moved off the workers' CPUs.
    pub moved: usize,
    /// Threads allowed only on workers' CPUs: pinned there by someone, and
    /// left alone.
    pub pinned: usize,
    /// Threads the kernel would not move: per-CPU kernel threads (which
    /// serve that CPU) and, without root, other users' processes.
    pub refused: usize,
}

/// Why [`isolate_others`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// Every online CPU is a worker's.
    #[error(
        "cannot isolate CPUs {workers:?}: no other CPU is online to move the host's threads to"
    )]
    NoOtherCpu {
        /// The CPUs to isolate.
        workers: Vec<usize>,
    },
    /// The thread list could not be read.
    #[error("listing {}: {source}", path.display())]
    Proc {
        /// The directory listed.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Moves every thread on the host that is allowed on one of `workers` and
/// on some other CPU too, except the calling process's own (see
/// [`confine_off`]), to its allowed CPUs minus `workers`.
///
/// # Errors
/// If `/proc` cannot be read, or `workers` covers every online CPU (there
/// would be nowhere to move anything to).
pub fn isolate_others(workers: &[usize], online: &[usize]) -> Result<Isolation, IsolateError> {
    if online.iter().all(|c| workers.contains(c)) {
        return Err(IsolateError::NoOtherCpu {
            workers: workers.to_vec(),
        });
    }
    let me = std::process::id();
    let mut iso = Isolation {
        moved: Vec::new(),
        summary: IsolationSummary::default(),
    };
    let proc = Path::new("/proc");
    let threads = all_threads(proc).map_err(|source| IsolateError::Proc {
        path: proc.to_owned(),
        source,
    })?;
    for tid in threads {
        if tid.process == me {
            continue;
        }
        let Some(pid) = Pid::from_raw(tid.thread) else {
            continue;
        };
        // A thread that exited meanwhile has nothing to move.
        let Ok(before) = sched_getaffinity(Some(pid)) else {
            continue;
        };
        let after = without(before, workers);
        if after == before {
            continue;
        }
        if cpus(&after).is_empty() {
            iso.summary.pinned += 1;
            continue;
        }
        match sched_setaffinity(Some(pid), &after) {
            Ok(()) => {
                iso.moved.push((pid, before));
                iso.summary.moved += 1;
            }
            Err(rustix::io::Errno::SRCH) => {}
            Err(_) => iso.summary.refused += 1,
        }
    }
    tracing::debug!(summary = ?iso.summary, ?workers, "host threads moved off the worker CPUs");
    Ok(iso)
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for (pid, before) in self.moved.drain(..) {
            // A thread that has exited since is simply gone.
            let _ = sched_setaffinity(Some(pid), &before);
        }
    }
}

/// A thread of some process, as listed under `/proc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ThreadId {
    process: u32,
    thread: i32,
}

/// Every thread listed under `proc` (`/proc/<pid>/task/<tid>`). Processes
/// that exit while being listed are skipped.
fn all_threads(proc: &Path) -> std::io::Result<Vec<ThreadId>> {
    let numeric = |name: &std::ffi::OsStr| name.to_str().and_then(|n| n.parse::<u32>().ok());
    let mut out = Vec::new();
    for e in std::fs::read_dir(proc)? {
        let Ok(e) = e else { continue };
        let Some(process) = numeric(&e.file_name()) else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(e.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Some(thread) = numeric(&t.file_name()).and_then(|t| i32::try_from(t).ok()) {
                out.push(ThreadId { process, thread });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<usize> {
        cpus(&sched_getaffinity(None).unwrap())
    }

    #[test]
    fn confining_removes_worker_cpus_and_spawned_threads_inherit_it() {
        // In a thread of its own: the mask is per thread.
        std::thread::spawn(|| {
            let all = allowed();
            let worker = *all.last().unwrap();
            let Some((c, left)) = confine_off(&[worker]) else {
                assert_eq!(all.len(), 1, "refused with CPUs to spare: {all:?}");
                return;
            };
            assert!(!left.contains(&worker));
            assert_eq!(left.len(), all.len() - 1);
            assert_eq!(allowed(), left);
            let child = std::thread::spawn(allowed).join().unwrap();
            assert_eq!(child, left, "a spawned thread inherits the mask");
            {
                let _w = c.widen();
                assert_eq!(allowed(), all);
            }
            assert_eq!(allowed(), left, "confined again after widen");
        })
        .join()
        .unwrap();
    }

    fn cpus_of(pid: u32) -> Vec<usize> {
        cpus(&sched_getaffinity(Pid::from_raw(pid as i32)).unwrap())
    }

    /// A child process allowed everywhere is moved off the isolated CPU
    /// while the guard lives and gets its mask back when it is dropped; one
    /// pinned to that CPU is left where it is.
    #[test]
    fn isolation_moves_other_processes_and_puts_them_back() {
        let all = allowed();
        assert!(all.len() >= 2, "the test needs two CPUs, has {all:?}");
        let worker = *all.last().unwrap();
        let mut free = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut pinned = std::process::Command::new("taskset")
            .args(["-c", &worker.to_string(), "sleep", "30"])
            .spawn()
            .unwrap();
        // taskset pins, then execs sleep: wait until the pin is visible.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while cpus_of(pinned.id()) != [worker] {
            assert!(
                std::time::Instant::now() < deadline,
                "taskset never pinned its child"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let before = cpus_of(free.id());
        assert!(before.contains(&worker));
        {
            let iso = isolate_others(&[worker], &all).unwrap();
            assert!(iso.summary.moved >= 1, "{:?}", iso.summary);
            assert!(iso.summary.pinned >= 1, "{:?}", iso.summary);
            let during = cpus_of(free.id());
            assert!(
                !during.contains(&worker),
                "still allowed on {worker}: {during:?}"
            );
            assert_eq!(during.len(), before.len() - 1);
            assert_eq!(cpus_of(pinned.id()), [worker]);
            // This process's own threads are confine_off's business.
            assert_eq!(allowed(), all);
        }
        assert_eq!(cpus_of(free.id()), before, "mask given back");
        for c in [&mut free, &mut pinned] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn isolating_every_online_cpu_is_refused() {
        let all = allowed();
        let e = isolate_others(&all, &all).unwrap_err().to_string();
        assert!(e.contains("no other CPU"), "{e}");
    }

    #[test]
    fn workers_on_every_cpu_leave_the_mask_alone() {
        std::thread::spawn(|| {
            let all = allowed();
            assert!(confine_off(&all).is_none());
            assert_eq!(allowed(), all);
        })
        .join()
        .unwrap();
    }
}
