//! [`on_node`]: run a closure whose allocations land on a NUMA node.

use std::fmt;

use super::memory::prefer_node;
use crate::affinity;
use crate::error::{Error, Result};
use crate::pool::CpuPool;
use crate::stream::panic_message;

/// How a copy made by [`on_node`] was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// By a thread pinned to the node's CPUs whose memory policy preferred the node
    /// (`set_mempolicy(MPOL_PREFERRED)`): its pages are on the node whichever thread touches
    /// them later, unless the node's memory ran out.
    NodePolicy,
    /// By a thread pinned to the node's CPUs, by first touch only (the kernel's default policy
    /// puts a page on the node of the CPU that first writes it): the memory policy could not
    /// be set, for the reason given (e.g. a seccomp profile, or a node the kernel does not
    /// have).
    FirstTouch {
        /// Why the node's memory policy was not set.
        why: String,
    },
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::NodePolicy => f.write_str("node policy"),
            Placement::FirstTouch { why } => write!(f, "first touch; no node policy: {why}"),
        }
    }
}

/// Runs `f` on a new thread pinned to `cpus` (a node's CPUs) whose memory policy prefers
/// `node`, and returns what it returned and how its allocations were placed. The thread exits
/// when `f` returns; memory `f` allocated stays where it was placed.
///
/// ```
/// use corestream::numa::{on_node, page_nodes};
/// use corestream::CpuPool;
///
/// let node0 = CpuPool::from_node(0)?;
/// let (weights, placement) = on_node(0, &node0, || vec![0.5f64; 1 << 16])?;
/// assert!(page_nodes(&weights)?.all_on(0), "{placement}");
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Affinity`] when the thread cannot be pinned, [`Error::Spawn`] when it cannot be
/// started, [`Error::Panicked`] when `f` panics.
pub fn on_node<R: Send>(
    node: usize,
    cpus: &CpuPool,
    f: impl FnOnce() -> R + Send,
) -> Result<(R, Placement)> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(format!("corestream-numa{node}"))
            .spawn_scoped(scope, || {
                affinity::set_current_cpus(cpus.cpus())?;
                let placement = match prefer_node(node) {
                    Ok(()) => Placement::NodePolicy,
                    Err(e) => Placement::FirstTouch { why: e.to_string() },
                };
                Ok((f(), placement))
            })
            .map_err(|source| Error::Spawn {
                name: format!("corestream-numa{node}"),
                source,
            })?;
        thread
            .join()
            .unwrap_or_else(|p| Err(Error::Panicked(panic_message(p.as_ref()))))
    })
}
