//! The daemon keeps its control threads (control socket, vhost-user message
//! threads, relays, housekeeping) off the CPUs its workers poll on, so the
//! kernel never puts one of them in a worker's way.

mod common;

use common::{vhost_config, Daemon};

/// `Cpus_allowed_list` of every thread of `pid`, by thread name.
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(t) = t else { continue };
        let t = t.path();
        // A short-lived thread may exit between the listing and these
        // reads: it has no affinity left to check, so it is skipped.
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(t.join("comm")),
            std::fs::read_to_string(t.join("status")),
        ) else {
            continue;
        };
        let Some(cpus) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        else {
            continue;
        };
        out.push((comm.trim().to_owned(), cpus.trim().to_owned()));
    }
    out
}

#[test]
fn control_threads_stay_off_the_worker_cpu() {
    let online = std::thread::available_parallelism().unwrap().get();
    assert!(online >= 2, "this test needs two CPUs (one for the worker)");
    let dir = std::env::temp_dir().join(format!("weir-affinity-{}", std::process::id()));
    // The worker on CPU 1; a vhost-user port, so its message threads exist.
    let cfg = vhost_config(&dir, &["vm1"], "server", 1, 4096)
        .replace("[dataplane]\n", "[dataplane]\nworkers = \"1\"\n");
    let d = Daemon::start(&dir, &cfg);
    let threads = thread_cpus(d.pid());
    let workers: Vec<_> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("weir-worker"))
        .collect();
    assert_eq!(workers.len(), 1, "{threads:?}");
    assert_eq!(
        workers[0].1, "1",
        "the worker is pinned to CPU 1: {threads:?}"
    );
    let others: Vec<_> = threads
        .iter()
        .filter(|(n, _)| !n.starts_with("weir-worker"))
        .collect();
    assert!(
        others.len() >= 3,
        "control, vhost-user and housekeeping threads: {threads:?}"
    );
    for (name, cpus) in others {
        let list: Vec<usize> = cpus
            .split(',')
            .flat_map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
                None => vec![r.parse().unwrap()],
            })
            .collect();
        assert!(
            !list.contains(&1),
            "{name} may run on the worker's CPU: {cpus}"
        );
        assert!(!list.is_empty(), "{name}: {cpus}");
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
