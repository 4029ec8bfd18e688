//! Pinning policy: [`pin`] and [`PinGuard`], which bind the calling thread (and its OpenMP team)
//! to a [`CpuPool`] and restore what they found.
//!
//! Invariant: a guard restores exactly the mask (and OpenMP team) it saved, on the thread that
//! made it, once: by [`PinGuard::restore`] or by its drop, never both.

use std::marker::PhantomData;

use super::CpuPool;
use crate::affinity::{current_cpus, set_current_cpus};
use crate::error::Result;
use crate::omp;

/// Runs `f` with the calling thread bound to `pool`, then restores the previous mask, also when
/// `f` panics. Calls nest: each level restores what it found.
///
/// The counterpart of IPEX's `with ipex.cpu.runtime.pin(pool):`. With an OpenMP runtime
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
/// thread it pinned, so moving it to another thread does not compile:
///
/// ```compile_fail
/// let guard = corestream::CpuPool::new([0])?.pin_current()?;
/// std::thread::spawn(move || drop(guard)); // error: `*const ()` cannot be sent between threads
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// let guard = corestream::CpuPool::new([0])?.pin_current()?;
/// shared(&guard); // error: `*const ()` cannot be shared between threads
/// # Ok::<(), corestream::Error>(())
/// ```
#[must_use = "the thread is unpinned again as soon as the guard is dropped"]
#[derive(Debug)]
pub struct PinGuard {
    previous: Vec<usize>,
    /// The OpenMP team state to restore, with a runtime in the process.
    team: Option<omp::SavedTeam>,
    restored: bool,
    _not_send: PhantomData<*const ()>,
}

impl PinGuard {
    pub(crate) fn pin(cpus: &[usize]) -> Result<PinGuard> {
        let previous = current_cpus()?;
        // The OpenMP team is saved and bound before this thread's mask changes (team threads it
        // creates start from the old mask); binding the team binds this thread too.
        let team = omp::pin_team(cpus, &previous)?;
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
