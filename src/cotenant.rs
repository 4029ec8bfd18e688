//! [`Cotenant`]: a controlled busy neighbour, for measuring corestream (or anything) beside
//! other work, as users' machines rarely are idle.

use std::fmt;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::affinity;
use crate::error::{Error, Result};
use crate::pool::CpuPool;

/// One busy thread per CPU of a pool, each pinned to its CPU, at the priority of the thread
/// that starts them (no `nice`), running plain integer arithmetic that never sleeps, yields or
/// makes a system call: the in-process twin of one `sh -c 'while :; do :; done'` per CPU. The
/// threads stop and are joined when the `Cotenant` is dropped.
///
/// The benches (`CORESTREAM_COTENANT=1`) and `corestream bench --cotenant` use it, so that
/// figures beside a neighbour can be reproduced.
///
/// ```
/// use corestream::{module_fn, CpuPool, Task, Cotenant};
///
/// let pool = CpuPool::all()?;
/// let task = Task::new(module_fn(|x: u32| Ok(x + 1)), pool.clone())?;
/// let neighbour = Cotenant::start(&pool)?;     // every CPU now has a busy thread too
/// assert_eq!(task.run_sync(1)?, 2);
/// drop(neighbour);                              // stopped and joined
/// # Ok::<(), corestream::Error>(())
/// ```
pub struct Cotenant {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pool: CpuPool,
}

impl fmt::Debug for Cotenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cotenant")
            .field("pool", &self.pool)
            .finish()
    }
}

impl Cotenant {
    /// Starts one busy thread per CPU of `pool`, named `cotenant-{cpu}`, and returns once each
    /// is pinned.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when a thread cannot be started, [`Error::Affinity`] when one cannot be
    /// pinned (the threads started so far are stopped).
    pub fn start(pool: &CpuPool) -> Result<Cotenant> {
        let mut cotenant = Cotenant {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::with_capacity(pool.len()),
            pool: pool.clone(),
        };
        for &cpu in pool.cpus() {
            let stop = Arc::clone(&cotenant.stop);
            let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
            let name = format!("cotenant-{cpu}");
            let thread = thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    let pinned = affinity::set_current_cpus(&[cpu]);
                    let ok = pinned.is_ok();
                    let _ = pinned_tx.send(pinned);
                    if ok {
                        busy(&stop);
                    }
                })
                .map_err(|source| Error::Spawn { name, source })?;
            cotenant.threads.push(thread);
            // The sender is dropped only after sending, unless the thread panicked.
            pinned_rx.recv().unwrap_or(Ok(()))?;
        }
        Ok(cotenant)
    }

    /// A `Cotenant` on every allowed CPU ([`CpuPool::all`]) when the environment variable
    /// `CORESTREAM_COTENANT` is `1`, else `None`: how the benches run beside a neighbour
    /// without a second build.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start) and [`CpuPool::all`].
    pub fn from_env() -> Result<Option<Cotenant>> {
        match std::env::var("CORESTREAM_COTENANT") {
            Ok(v) if v == "1" => Ok(Some(Cotenant::start(&CpuPool::all()?)?)),
            _ => Ok(None),
        }
    }

    /// The CPUs that have a busy thread.
    pub fn pool(&self) -> &CpuPool {
        &self.pool
    }
}

impl Drop for Cotenant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Integer work until `stop` is set: never sleeps, yields or enters the kernel.
fn busy(stop: &AtomicBool) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1024 {
            x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}
