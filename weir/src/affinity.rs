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
    let mut rest = before;
    for &w in workers {
        if w < CpuSet::MAX_CPU {
            rest.unset(w);
        }
    }
    let left: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| rest.is_set(c)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<usize> {
        let s = sched_getaffinity(None).unwrap();
        (0..CpuSet::MAX_CPU).filter(|&c| s.is_set(c)).collect()
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
