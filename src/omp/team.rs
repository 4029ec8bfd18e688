//! Team binding: confining the OpenMP team of a thread to CPUs, and the hooks that stream
//! threads ([`bind_stream`]) and [`pin`](crate::pin) ([`pin_team`], [`SavedTeam`]) call.
//!
//! Unsafe boundary: `GOMP_parallel` runs [`team_entry`] on every team thread with a `void *`
//! to a [`TeamJob`] on the opening thread's stack. Invariants: the job outlives the call
//! (`GOMP_parallel` returns only after every team thread has left the region), the callback
//! never unwinds into the runtime's C frames (panics are caught), and team thread `t` only
//! writes the result slot `t`.

use std::ffi::{c_int, c_uint, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

use super::search;
use super::symbols::Omp;
use crate::affinity;
use crate::error::{Error, Result};

// ===== hooks for streams and pin =====

/// Run by every stream thread right after corestream pinned it to `cpus`: sets its team size to
/// `cpus.len()` and binds its team (see the module docs). Does nothing without a runtime.
pub(crate) fn bind_stream(cpus: &[usize]) -> Result<()> {
    let Some(omp) = search::active()? else {
        return Ok(());
    };
    omp.ensure_initialized();
    omp.set_team_size(c_int::try_from(cpus.len()).unwrap_or(c_int::MAX));
    omp.bind_team(cpus, false).1
}

/// The OpenMP state of a thread before [`pin_team`], restored by [`SavedTeam::restore`].
#[derive(Debug)]
pub(crate) struct SavedTeam {
    omp: &'static Omp,
    max_threads: c_int,
    /// The masks of team threads `1..k` before binding (index = team thread).
    masks: Vec<Option<Vec<usize>>>,
}

/// For [`pin`](crate::pin): saves the calling thread's team size and team masks, then sets the
/// team size to `cpus.len()` and binds the team, the calling thread included. `None` without a
/// runtime (the caller binds the thread itself then). Call it before changing the calling
/// thread's mask, so that team threads created here start from the caller's old mask.
///
/// On error the team threads and the team size are restored and the calling thread is given
/// `previous` back.
pub(crate) fn pin_team(cpus: &[usize], previous: &[usize]) -> Result<Option<SavedTeam>> {
    let Some(omp) = search::active()? else {
        return Ok(None);
    };
    omp.ensure_initialized();
    let max_threads = omp.max_threads();
    let (masks, bound) = omp.bind_team(cpus, true);
    let saved = SavedTeam {
        omp,
        max_threads,
        masks,
    };
    match bound {
        Ok(()) => {
            omp.set_team_size(c_int::try_from(cpus.len()).unwrap_or(c_int::MAX));
            Ok(Some(saved))
        }
        Err(e) => {
            let _ = saved.restore(previous);
            Err(e)
        }
    }
}

impl SavedTeam {
    /// Restores the calling thread's mask (`master`), the team threads' masks and the team
    /// size.
    pub(crate) fn restore(self, master: &[usize]) -> Result<()> {
        let team = self.omp.restore_team(master, &self.masks);
        self.omp.set_team_size(self.max_threads);
        team
    }
}

// ===== impl Omp: team binding =====

impl Omp {
    /// kmp runtimes take the mask of the thread that initialises them as the set of CPUs they
    /// will ever bind to, and their full initialisation (at the first parallel region of the
    /// process) resets every registered thread to that mask. Initialise fully (if nobody did
    /// yet) on the process's allowed CPUs rather than on a stream's, then put the calling thread
    /// back.
    fn ensure_initialized(&self) {
        static INIT: Once = Once::new();
        if self.kmp.is_none() {
            return;
        }
        INIT.call_once(|| {
            let widened = (|| {
                let before = affinity::current_cpus().ok()?;
                let allowed = crate::topology::system().ok()?.allowed().to_vec();
                affinity::set_current_cpus(&allowed).ok()?;
                Some(before)
            })();
            self.max_threads();
            if let Some(parallel) = self.parallel {
                extern "C" fn nothing(_: *mut c_void) {}
                // SAFETY: `nothing` matches `void (*)(void *)` and ignores its (null) argument; a
                // one-thread region runs it on the calling thread only.
                unsafe { parallel(nothing, std::ptr::null_mut(), 1, 0) };
            }
            if let Some(before) = widened {
                let _ = affinity::set_current_cpus(&before);
            }
        });
    }

    /// Binds the calling thread to `cpus`: through the kmp API when there is one, falling back
    /// to (or else using) the kernel.
    fn bind_thread(&self, cpus: &[usize]) -> std::result::Result<(), String> {
        let kmp_error = match &self.kmp {
            Some(kmp) => match kmp.bind_current(cpus) {
                Ok(()) => return Ok(()),
                Err(e) => Some(e),
            },
            None => None,
        };
        affinity::set_current_cpus(cpus).map_err(|e| match kmp_error {
            Some(k) => format!("{k}; sched_setaffinity: {e}"),
            None => e.to_string(),
        })
    }

    /// What team thread `t` of a team on `cpus` is bound to.
    fn target<'c>(&self, cpus: &'c [usize], t: usize) -> &'c [usize] {
        if self.kmp.is_some() {
            cpus.get(t..=t).unwrap_or(cpus)
        } else {
            cpus
        }
    }

    /// Runs `work(t)` on every team thread `t` of a parallel region of `threads` threads opened
    /// by the calling thread (team thread 0). Returns each thread's result by `t` (`None` for
    /// threads the runtime did not start). Without `GOMP_parallel`, runs `work(0)` on the
    /// calling thread only.
    ///
    /// The master's work runs inside the region too, as in IPEX: libiomp5 may re-place a thread
    /// when it opens its first region, so binding before that would not last.
    fn on_team<R: Send + Sync>(
        &self,
        threads: usize,
        work: &(dyn Fn(usize) -> R + Sync),
    ) -> Vec<Option<R>> {
        let threads = threads.max(1);
        let slots: Vec<OnceLock<R>> = (0..threads).map(|_| OnceLock::new()).collect();
        if let Some(parallel) = self.parallel {
            let job = TeamJob {
                omp: self,
                work: &|t| {
                    if let Some(slot) = slots.get(t) {
                        let _ = slot.set(work(t));
                    }
                },
            };
            let data = (&job as *const TeamJob<'_>).cast_mut().cast::<c_void>();
            let n = c_uint::try_from(threads).unwrap_or(c_uint::MAX);
            // SAFETY: `team_entry` matches GOMP_parallel's `void (*)(void *)`; `data` points at
            // `job`, which outlives the call because GOMP_parallel returns only after every
            // team thread has finished the region; `team_entry` never unwinds.
            unsafe { parallel(team_entry, data, n, 0) };
        } else {
            let _ = slots[0].set(work(0));
        }
        slots.into_iter().map(OnceLock::into_inner).collect()
    }

    /// Binds team threads `0..cpus.len()` (see [`Omp::target`]), recording the mask of each
    /// thread but the master first when `record`. Returns the recorded masks and the first
    /// binding error.
    #[allow(clippy::type_complexity)]
    fn bind_team(&self, cpus: &[usize], record: bool) -> (Vec<Option<Vec<usize>>>, Result<()>) {
        let results = self.on_team(cpus.len(), &|t| {
            let previous = if record && t > 0 {
                affinity::current_cpus().ok()
            } else {
                None
            };
            (previous, self.bind_thread(self.target(cpus, t)))
        });
        let mut masks = Vec::with_capacity(results.len());
        let mut outcome = Ok(());
        for (t, result) in results.into_iter().enumerate() {
            let (previous, bound) = result.unwrap_or((None, Ok(())));
            masks.push(previous);
            if let (Err(message), Ok(())) = (bound, &outcome) {
                outcome = Err(Error::OmpBind {
                    thread: t,
                    cpus: self.target(cpus, t).to_vec(),
                    message,
                });
            }
        }
        (masks, outcome)
    }

    /// Gives the calling thread (team thread 0) the mask `master` and team threads `t >= 1`
    /// the masks in `masks[t]`.
    fn restore_team(&self, master: &[usize], masks: &[Option<Vec<usize>>]) -> Result<()> {
        let target = |t: usize| match (t, masks.get(t)) {
            (0, _) => Some(master),
            (_, Some(Some(mask))) => Some(mask.as_slice()),
            _ => None,
        };
        let results = self.on_team(masks.len(), &|t| match target(t) {
            Some(mask) => self.bind_thread(mask),
            None => Ok(()),
        });
        for (t, result) in results.into_iter().enumerate() {
            if let Some(Err(message)) = result {
                return Err(Error::OmpBind {
                    thread: t,
                    cpus: target(t).unwrap_or_default().to_vec(),
                    message,
                });
            }
        }
        Ok(())
    }
}

// ===== parallel-region entry =====

/// What a parallel region's callback needs: read through the `void *` of `GOMP_parallel`.
struct TeamJob<'a> {
    omp: &'a Omp,
    work: &'a (dyn Fn(usize) + Sync),
}

/// The body of corestream's parallel regions, run by every team thread.
extern "C" fn team_entry(data: *mut c_void) {
    // SAFETY: `data` is the `&TeamJob` that `Omp::on_team` passed to GOMP_parallel, alive until
    // that call returns, which is after every team thread has left this function.
    let job = unsafe { &*data.cast_const().cast::<TeamJob<'_>>() };
    // Inside a region, omp_get_thread_num is the team index.
    let t = job.omp.thread_num();
    if let Ok(t) = usize::try_from(t) {
        // A panic must not unwind into the runtime's C frames; the slot stays empty then.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| (job.work)(t)));
    }
}
