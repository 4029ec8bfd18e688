//! Live affinity on this machine, checked through the kernel's own report
//! (`/proc/thread-self/status`, `Cpus_allowed_list`): pin, the guard, nesting, panic-restore,
//! and the process's allowed set under `taskset` (a child process).

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::process::Command;

use corestream::{pin, CpuPool, Error};

/// The calling thread's mask as the kernel reports it.
fn kernel_mask() -> Vec<usize> {
    common::cpus_allowed(&std::fs::read_to_string("/proc/thread-self/status").unwrap())
}

/// Runs `f` on a fresh thread, so that tests never disturb each other's masks.
fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().unwrap();
}

fn last_cpu() -> CpuPool {
    let all = CpuPool::all().unwrap();
    CpuPool::new([*all.cpus().last().unwrap()]).unwrap()
}

#[test]
fn pin_binds_for_the_closure_and_restores() {
    on_fresh_thread(|| {
        let before = kernel_mask();
        let pool = last_cpu();
        let inside = pin(&pool, kernel_mask).unwrap();
        assert_eq!(inside, pool.cpus());
        assert_eq!(kernel_mask(), before);
    });
}

#[test]
fn the_guard_restores_on_drop_and_on_restore() {
    on_fresh_thread(|| {
        let before = kernel_mask();
        let pool = last_cpu();
        {
            let guard = pool.pin_current().unwrap();
            assert_eq!(kernel_mask(), pool.cpus());
            assert_eq!(guard.previous_cpus(), before);
        }
        assert_eq!(kernel_mask(), before);
        let guard = pool.pin_current().unwrap();
        guard.restore().unwrap();
        assert_eq!(kernel_mask(), before);
    });
}

#[test]
fn nested_pins_restore_level_by_level() {
    on_fresh_thread(|| {
        let before = kernel_mask();
        let all = CpuPool::all().unwrap();
        let one = CpuPool::new([all.cpus()[0]]).unwrap();
        let mut sorted_all = all.cpus().to_vec();
        sorted_all.sort_unstable();
        pin(&all, || {
            assert_eq!(kernel_mask(), sorted_all);
            pin(&one, || assert_eq!(kernel_mask(), one.cpus())).unwrap();
            assert_eq!(
                kernel_mask(),
                sorted_all,
                "inner exit restores the outer pin"
            );
        })
        .unwrap();
        assert_eq!(kernel_mask(), before);
    });
}

#[test]
fn a_panic_inside_pin_restores_the_mask() {
    on_fresh_thread(|| {
        let before = kernel_mask();
        let pool = last_cpu();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            pin(&pool, || -> () { panic!("model blew up") })
        }));
        assert!(caught.is_err());
        assert_eq!(kernel_mask(), before);
    });
}

#[test]
fn pinning_a_worker_thread_does_not_narrow_the_process_allowed_set() {
    on_fresh_thread(|| {
        let all = CpuPool::all().unwrap();
        let _guard = last_cpu().pin_current().unwrap();
        // Pools are checked against the process's set, not this thread's mask.
        assert_eq!(CpuPool::all().unwrap(), all);
        let allowed = corestream::Topology::detect().unwrap();
        assert!(all.cpus().iter().all(|c| allowed.is_allowed(*c)));
        CpuPool::new(all.cpus().to_vec()).unwrap();
    });
}

const CHILD_ENV: &str = "CORESTREAM_TASKSET_CHILD";

/// Runs only inside the child process started by `taskset_limits_the_allowed_set`.
#[test]
fn taskset_child() {
    let Ok(cpu) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cpu: usize = cpu.parse().unwrap();
    assert_eq!(CpuPool::all().unwrap().cpus(), [cpu]);
    assert_eq!(corestream::Topology::detect().unwrap().allowed(), [cpu]);
    let online = corestream::Topology::detect().unwrap().cpus().len();
    if online >= 2 {
        let other = corestream::Topology::detect()
            .unwrap()
            .cpus()
            .iter()
            .map(|c| c.id)
            .find(|&id| id != cpu)
            .unwrap();
        let err = CpuPool::new([other]).unwrap_err();
        assert!(
            matches!(&err, Error::CpuNotAllowed { cpu: c, allowed } if *c == other && *allowed == [cpu]),
            "{err}"
        );
    }
}

#[test]
fn taskset_limits_the_allowed_set() {
    if Command::new("taskset").arg("--version").output().is_err() {
        eprintln!("taskset is not installed; skipping the child-process check");
        assert!(std::env::var_os("CI").is_none(), "CI must have taskset");
        return;
    }
    let cpu = CpuPool::all().unwrap().cpus()[0];
    let out = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "taskset_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, cpu.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}
