//! Shared by the loom model checks (`tests/loom_*.rs`): running a model and counting the
//! interleavings it explored, and the settings that make corestream's threads loom's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use corestream::CpuPool;

/// Runs `model` under loom with at most `LOOM_MAX_PREEMPTIONS` preemptions per interleaving
/// (`default_bound` when unset) and prints how many interleavings it explored.
pub fn check(name: &str, default_bound: usize, model: impl Fn() + Sync + Send + 'static) {
    let iterations = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&iterations);
    let mut builder = loom::model::Builder::new();
    let bound = *builder.preemption_bound.get_or_insert(default_bound);
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        model();
    });
    println!(
        "loom model {name}: {} interleavings (preemption bound {bound})",
        iterations.load(Ordering::Relaxed)
    );
}

/// The process's CPUs, read once (topology detection is not what is being checked).
pub fn pool() -> CpuPool {
    static POOL: OnceLock<CpuPool> = OnceLock::new();
    POOL.get_or_init(|| CpuPool::all().expect("pool of all cpus"))
        .clone()
}
