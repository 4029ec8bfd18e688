//! Thread affinity system calls: read and set the calling thread's CPU mask.
//!
//! The leaf of the placement layer: it imports nothing from the crate but [`Error`](crate::Error),
//! and holds no policy (pinning with restore is [`pin`](crate::pin) and
//! [`PinGuard`](crate::PinGuard), in the pool layer). It is the only module that makes affinity
//! system calls. On Linux it uses
//! `sched_getaffinity`/`sched_setaffinity` on arbitrary CPU sets (core_affinity can only pin to
//! a single core). Elsewhere it degrades: single-CPU sets are pinned through core_affinity,
//! larger sets leave the thread unpinned, and reads report every CPU.

use crate::error::Result;

/// The CPUs the calling thread may run on, ascending.
///
/// ```
/// let cpus = corestream::affinity::current_cpus()?;
/// assert!(!cpus.is_empty());
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Affinity`](crate::Error::Affinity) when the kernel refuses to report the mask.
pub fn current_cpus() -> Result<Vec<usize>> {
    sys::get(sys::CALLING_THREAD)
}

/// Binds the calling thread to exactly `cpus` (any order; duplicates are harmless).
///
/// Prefer [`pin`](crate::pin) or [`CpuPool::pin_current`](crate::CpuPool::pin_current), which
/// restore the previous mask.
///
/// ```
/// let before = corestream::affinity::current_cpus()?;
/// corestream::affinity::set_current_cpus(&before[..1])?;
/// assert_eq!(corestream::affinity::current_cpus()?, before[..1]);
/// corestream::affinity::set_current_cpus(&before)?;
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Affinity`](crate::Error::Affinity) when the set is empty, names a CPU beyond the
/// kernel's mask size, or none of its CPUs is usable by this process.
pub fn set_current_cpus(cpus: &[usize]) -> Result<()> {
    sys::set(cpus)
}

/// The CPU the calling thread runs on right now, where the platform reports it.
pub(crate) fn current_cpu() -> Option<usize> {
    sys::current_cpu()
}

/// The process's allowed CPUs: the main thread's mask, which `taskset`, `numactl -C` and cgroup
/// cpusets set and corestream's pinning never narrows.
#[cfg(target_os = "linux")]
pub(crate) fn process_allowed() -> Result<Vec<usize>> {
    sys::get(sys::main_thread())
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::mem;

    use crate::error::{Error, Result};

    /// `pid` argument that means the calling thread.
    pub(super) const CALLING_THREAD: libc::pid_t = 0;

    /// The main thread's id is the process id.
    pub(super) fn main_thread() -> libc::pid_t {
        // SAFETY: getpid has no preconditions and cannot fail.
        unsafe { libc::getpid() }
    }

    pub(super) fn current_cpu() -> Option<usize> {
        // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }

    fn max_cpus() -> usize {
        8 * mem::size_of::<libc::cpu_set_t>()
    }

    pub(super) fn get(pid: libc::pid_t) -> Result<Vec<usize>> {
        // SAFETY: cpu_set_t is a plain bit array; all-zero is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
        // SAFETY: `set` is a live, writable cpu_set_t and the size passed is its exact size.
        let rc = unsafe { libc::sched_getaffinity(pid, mem::size_of_val(&set), &mut set) };
        if rc != 0 {
            return Err(Error::Affinity {
                op: "get",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `set` is initialised and every index is below CPU_SETSIZE.
        Ok((0..max_cpus())
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
            .collect())
    }

    pub(super) fn set(cpus: &[usize]) -> Result<()> {
        let invalid = |msg: String| Error::Affinity {
            op: "set",
            source: io::Error::new(io::ErrorKind::InvalidInput, msg),
        };
        if cpus.is_empty() {
            return Err(invalid("the cpu set is empty".into()));
        }
        // SAFETY: all-zero is a valid empty cpu_set_t.
        let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
        for &cpu in cpus {
            if cpu >= max_cpus() {
                return Err(invalid(format!(
                    "cpu {cpu} is beyond the kernel mask size; allowed cpus: 0-{}",
                    max_cpus() - 1
                )));
            }
            // SAFETY: `cpu` was checked to be below CPU_SETSIZE.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t and the size passed is its exact size; pid 0 is
        // the calling thread.
        let rc = unsafe { libc::sched_setaffinity(0, mem::size_of_val(&set), &set) };
        if rc != 0 {
            return Err(Error::Affinity {
                op: "set",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use crate::error::Result;

    pub(super) const CALLING_THREAD: i32 = 0;

    pub(super) fn current_cpu() -> Option<usize> {
        None
    }

    pub(super) fn get(_pid: i32) -> Result<Vec<usize>> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok((0..n).collect())
    }

    pub(super) fn set(cpus: &[usize]) -> Result<()> {
        if let [cpu] = cpus {
            core_affinity::set_for_current(core_affinity::CoreId { id: *cpu });
        }
        Ok(())
    }
}
