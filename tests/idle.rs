//! The idle strategy: a stream polls for a bounded window after each job, then parks; with
//! `spin(Duration::ZERO)` it never polls. CPU time is read per thread from
//! `/proc/self/task/<tid>/schedstat` (nanoseconds on a CPU, kernel time included).
#![cfg(target_os = "linux")]

use std::fs;
use std::thread;
use std::time::Duration;

use corestream::{module_fn, CpuPool, Task, DEFAULT_SPIN};

/// Nanoseconds the thread named `name` has run, or `None` when it is not found.
fn cpu_ns(name: &str) -> Option<u64> {
    for entry in fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = fs::read_to_string(dir.join("schedstat")).ok()?;
            return stat.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// A task on the last allowed CPU with the given window, named `name`.
fn task(
    name: &str,
    spin: Option<Duration>,
) -> Task<impl corestream::Module<Input = u64, Output = u64>> {
    let all = CpuPool::all().unwrap();
    let last = *all.cpus().last().unwrap();
    let mut builder = Task::builder(module_fn(|x: u64| Ok(x + 1)))
        .pool(CpuPool::new([last]).unwrap())
        .name(name);
    if let Some(spin) = spin {
        builder = builder.spin(spin);
    }
    builder.build().unwrap()
}

/// Runs `jobs` jobs `gap` apart and returns the stream's CPU time over them, in ns.
fn cpu_over_jobs(
    task: &Task<impl corestream::Module<Input = u64, Output = u64>>,
    name: &str,
    jobs: u64,
    gap: Duration,
) -> u64 {
    task.run_sync(0).unwrap();
    thread::sleep(Duration::from_millis(20));
    let before = cpu_ns(name).expect("stream thread found");
    for i in 0..jobs {
        assert_eq!(task.run_sync(i).unwrap(), i + 1);
        thread::sleep(gap);
    }
    cpu_ns(name).expect("stream thread found") - before
}

#[test]
fn an_idle_stream_stops_polling_after_its_window() {
    let name = "cs-idle-default";
    let task = task(name, None);
    assert_eq!(task.run_sync(1).unwrap(), 2);
    // Far beyond the window: the stream is parked.
    thread::sleep(DEFAULT_SPIN * 100);
    let before = cpu_ns(name).expect("stream thread found");
    thread::sleep(Duration::from_millis(500));
    let idle = cpu_ns(name).unwrap() - before;
    // Under 0.4% of a CPU (a parked thread accumulates nothing; slack for a stray wake-up).
    assert!(idle < 2_000_000, "idle stream ran {idle} ns in 500 ms");
}

#[test]
fn zero_spin_never_polls_and_a_window_does() {
    let gap = Duration::from_millis(5);
    let jobs = 20;
    let parked = task("cs-idle-zero", Some(Duration::ZERO));
    let zero = cpu_over_jobs(&parked, "cs-idle-zero", jobs, gap);
    // Each job is a few microseconds plus a park/unpark: far below one polling window each.
    assert!(
        zero < jobs * 500_000,
        "spin(ZERO): {zero} ns of CPU for {jobs} trivial jobs"
    );
    // Positive control: a 2 ms window polls for about 2 ms after every job, when nobody else
    // wants the stream's CPU. On one CPU the caller does (it is woken there after each job),
    // and the stream rightly stops polling: `tests/cotenant.rs` covers that case.
    let all = CpuPool::all().unwrap();
    if all.len() < 2 {
        eprintln!("positive control skipped: one CPU");
        return;
    }
    let _pin = CpuPool::new([all.cpus()[0]])
        .unwrap()
        .pin_current()
        .unwrap();
    let polling = task("cs-idle-2ms", Some(Duration::from_millis(2)));
    let window = cpu_over_jobs(&polling, "cs-idle-2ms", jobs, gap);
    assert!(
        window > jobs * 1_000_000,
        "spin(2ms): only {window} ns of CPU for {jobs} jobs 5 ms apart"
    );
    assert!(
        window > 4 * zero,
        "spin(2ms) {window} ns vs spin(ZERO) {zero} ns"
    );
}
