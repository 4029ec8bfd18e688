//! Thread affinity: read and set the calling thread's CPU mask, [`pin`] and [`PinGuard`].
//!
//! This is the only module that makes affinity system calls. On Linux it uses
//! `sched_getaffinity`/`sched_setaffinity` on arbitrary CPU sets (core_affinity can only pin to
//! a single core). Elsewhere it degrades: single-CPU sets are pinned through core_affinity,
//! larger sets leave the thread unpinned, and reads report every CPU.

use std::marker::PhantomData;

use crate::error::Result;
use crate::pool::CpuPool;

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
/// Prefer [`pin`] or [`CpuPool::pin_current`], which restore the previous mask.
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

/// Runs `f` with the calling thread bound to `pool`, then restores the previous mask, also when
/// `f` panics. Calls nest: each level restores what it found.
///
/// The counterpart of the anchor's `with ipex.cpu.runtime.pin(pool):`. With an OpenMP runtime
/// in the process (see [`omp`](crate::omp)), the calling thread's OpenMP team size is set to
/// `pool.len()` and its team is bound to the pool too (with libiomp5 and libomp, team thread
/// `t`, the calling thread being thread 0, to exactly the pool's CPU `t`, as in IPEX); the team
/// size and every team thread's mask are restored afterwards.
///
/// ```
/// use corestream::{pin, CpuPool};
///
/// let pool = CpuPool::new([0])?;
/// let inside = pin(&pool, || corestream::affinity::current_cpus())??;
/// assert_eq!(inside, [0]);
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Affinity`](crate::Error::Affinity) when the mask cannot be read or set, and the
/// [`omp`](crate::omp) errors (a bad `CORESTREAM_OMP_LIB`, a team thread that cannot be bound);
/// `f` is not run then.
pub fn pin<R>(pool: &CpuPool, f: impl FnOnce() -> R) -> Result<R> {
    let guard = pool.pin_current()?;
    let out = f();
    guard.restore()?;
    Ok(out)
}

/// Restores the calling thread's previous CPU mask when dropped (see
/// [`CpuPool::pin_current`]). It is neither `Send` nor `Sync`: it must be dropped on the
/// thread it pinned.
#[must_use = "the thread is unpinned again as soon as the guard is dropped"]
#[derive(Debug)]
pub struct PinGuard {
    previous: Vec<usize>,
    /// The OpenMP team state to restore, with a runtime in the process.
    team: Option<crate::omp::SavedTeam>,
    restored: bool,
    _not_send: PhantomData<*const ()>,
}

impl PinGuard {
    pub(crate) fn pin(cpus: &[usize]) -> Result<PinGuard> {
        let previous = current_cpus()?;
        // The OpenMP team is saved and bound before this thread's mask changes (team threads it
        // creates start from the old mask); binding the team binds this thread too.
        let team = crate::omp::pin_team(cpus, &previous)?;
        if team.is_none() {
            set_current_cpus(cpus)?;
        }
        Ok(PinGuard {
            previous,
            team,
            restored: false,
            _not_send: PhantomData,
        })
    }

    /// The mask that will be restored.
    pub fn previous_cpus(&self) -> &[usize] {
        &self.previous
    }

    /// Restores the previous mask now and reports whether that worked (dropping the guard
    /// does the same but cannot report a failure).
    ///
    /// # Errors
    ///
    /// [`Error::Affinity`](crate::Error::Affinity) when the kernel refuses the old mask (for
    /// example after its CPUs went offline), [`Error::OmpBind`](crate::Error::OmpBind) when an
    /// OpenMP team thread cannot get its old mask back.
    pub fn restore(mut self) -> Result<()> {
        self.restored = true;
        self.undo()
    }

    /// The OpenMP team (if any), then this thread's mask; the first error is returned.
    fn undo(&mut self) -> Result<()> {
        let team = self
            .team
            .take()
            .map_or(Ok(()), |team| team.restore(&self.previous));
        let mask = set_current_cpus(&self.previous);
        team.and(mask)
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if !self.restored {
            // Drop cannot report; `restore` is the checked path. The old mask was valid when
            // read, so this only fails if its CPUs went offline meanwhile.
            let _ = self.undo();
        }
    }
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
