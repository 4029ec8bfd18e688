//! How long should an idle stream poll before it parks? A sweep of the polling window
//! (`TaskBuilder::spin`) against the time the caller spends between two jobs.
//!
//! One caller pinned to the first CPU, one stream pinned to the last, a no-op model. For each
//! window W and gap G the caller runs jobs one at a time (`submit(x).wait()`, which polls for
//! the same window), doing G of its own work (a busy loop, as pre- and post-processing would)
//! between two jobs. Reported per (W, G):
//!
//! - the round trip of one job in microseconds (mean over the run): about one wake-up of a
//!   parked thread (tens of microseconds across CPUs) when the stream has parked, about one
//!   microsecond when it was still polling;
//! - the stream thread's CPU time per job in microseconds, from
//!   `/proc/self/task/<tid>/schedstat`: what the polling costs. It is bounded by W per job.
//!
//! The default window (`DEFAULT_SPIN`) is the one after which longer windows stop paying:
//! round trips stay low for every gap shorter than it, and an idle stream parks after it.
//!
//! Run: `cargo bench --bench idle` (`CORESTREAM_BENCH_JOBS`, default 2000 jobs per cell;
//! `CORESTREAM_COTENANT=1` beside one busy thread per CPU). Needs
//! 2 or more CPUs; on one CPU it prints a note and exits.

use std::fs;
use std::hint::black_box;
use std::time::{Duration, Instant};

use corestream::{module_fn, CpuPool, Task, DEFAULT_SPIN};

const WINDOWS_US: [u64; 7] = [0, 10, 25, 50, 100, 200, 400];
const GAPS_US: [u64; 7] = [0, 10, 25, 50, 100, 200, 1000];

/// Nanoseconds on a CPU of the thread named `name`.
fn cpu_ns(name: &str) -> u64 {
    for entry in fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = entry.expect("task entry").path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = fs::read_to_string(dir.join("schedstat")).expect("schedstat");
            return stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .expect("schedstat run time");
        }
    }
    panic!("no thread named {name}");
}

/// Busy work on the caller's side for `gap`.
fn work_for(gap: Duration) {
    let start = Instant::now();
    while start.elapsed() < gap {
        std::hint::spin_loop();
    }
}

fn main() {
    // CORESTREAM_COTENANT=1: the sweep beside one busy thread per CPU.
    let _neighbour = corestream::Cotenant::from_env().expect("start the neighbour");
    let all = CpuPool::all().expect("CpuPool::all");
    if all.len() < 2 {
        println!(
            "idle: skipped, CpuPool::all() has {} CPU (needs 2)",
            all.len()
        );
        return;
    }
    let jobs: u64 = std::env::var("CORESTREAM_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let cpus = all.cpus();
    let caller = CpuPool::new([cpus[0]]).expect("caller pool");
    let worker = CpuPool::new([cpus[cpus.len() - 1]]).expect("worker pool");
    let _pin = caller.pin_current().expect("pin the caller");

    println!(
        "idle: round trip us / stream CPU us per job, {jobs} jobs per cell, default window {} us",
        DEFAULT_SPIN.as_micros()
    );
    print!("{:>10}", "window\\gap");
    for gap in GAPS_US {
        print!("{:>16}", format!("{gap} us"));
    }
    println!();
    for window in WINDOWS_US {
        let name = format!("cs-idle-{window}");
        let task = Task::builder(module_fn(|x: u64| Ok(x + 1)))
            .pool(worker.clone())
            .name(name.as_str())
            .spin(Duration::from_micros(window))
            .build()
            .expect("start the stream");
        print!("{:>10}", format!("{window} us"));
        for gap in GAPS_US {
            let gap = Duration::from_micros(gap);
            // Warm up, then let the stream park before the measured run.
            for i in 0..100 {
                black_box(task.submit(i).wait().expect("ok"));
            }
            std::thread::sleep(Duration::from_millis(5));
            let cpu_before = cpu_ns(&name);
            let mut in_jobs = Duration::ZERO;
            for i in 0..jobs {
                let start = Instant::now();
                black_box(task.submit(black_box(i)).wait().expect("ok"));
                in_jobs += start.elapsed();
                work_for(gap);
            }
            let cpu = cpu_ns(&name) - cpu_before;
            print!(
                "{:>16}",
                format!(
                    "{:.1} / {:.1}",
                    in_jobs.as_secs_f64() * 1e6 / jobs as f64,
                    cpu as f64 / 1e3 / jobs as f64
                )
            );
        }
        println!();
    }
}
