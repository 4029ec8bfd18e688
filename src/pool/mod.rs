//! The pool layer: [`CpuPool`] (a set of logical CPUs as a value), the near-equal partition
//! rule [`split_sizes`] that cuts pools into streams and batches into parts, and the pinning
//! policy in [`pin`](mod@pin) ([`pin()`](crate::pin) and [`PinGuard`]).
//!
//! It sits above the platform code ([`affinity`](crate::affinity), [`topology`](crate::topology),
//! [`omp`](crate::omp)) and below everything that runs work.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

mod pin;

pub use pin::{pin, PinGuard};

use crate::cpulist::CpuList;
use crate::error::{Error, Result};
use crate::topology::{self, Topology};

/// An ordered, non-empty set of logical CPUs that this process may run on.
///
/// Pools are cheap to clone values (the list is shared); the constructors validate against the
/// process's allowed CPUs, so a pool never names a CPU the kernel would refuse. The order is
/// kept: [`split`](CpuPool::split) cuts contiguous slices of it, and a stream's intra-op worker
/// `t` is bound to the stream pool's CPU `t`.
///
/// ```
/// use corestream::CpuPool;
///
/// let pool = CpuPool::all()?;                    // every allowed physical core
/// let streams = pool.split(pool.len())?;         // one core per stream
/// assert_eq!(streams.len(), pool.len());
/// println!("{pool} -> {streams:?}");             // CpuPool[0-1] -> [CpuPool[0], CpuPool[1]]
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CpuPool {
    cpus: Arc<[usize]>,
}

impl CpuPool {
    /// A pool of exactly these logical CPU ids, in this order.
    ///
    /// Unlike IPEX, which silently drops unavailable ids, a bad list is an error.
    ///
    /// ```
    /// let pool = corestream::CpuPool::new([0])?;
    /// assert_eq!(pool.cpus(), [0]);
    /// # Ok::<(), corestream::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::EmptyPool`] for an empty list, [`Error::DuplicateCpu`] when an id repeats,
    /// [`Error::CpuNotAllowed`] for an id that is offline, absent or outside the process's
    /// affinity mask (the message lists the allowed CPUs).
    pub fn new(cpus: impl IntoIterator<Item = usize>) -> Result<CpuPool> {
        CpuPool::new_in(topology::system()?, cpus)
    }

    /// [`CpuPool::new`] checked against the given topology instead of the live machine.
    ///
    /// # Errors
    ///
    /// As [`CpuPool::new`].
    pub fn new_in(topology: &Topology, cpus: impl IntoIterator<Item = usize>) -> Result<CpuPool> {
        let cpus: Vec<usize> = cpus.into_iter().collect();
        if cpus.is_empty() {
            return Err(Error::EmptyPool {
                allowed: topology.allowed().to_vec(),
            });
        }
        let mut seen = HashSet::with_capacity(cpus.len());
        for &cpu in &cpus {
            if !seen.insert(cpu) {
                return Err(Error::DuplicateCpu { cpu });
            }
            if !topology.is_allowed(cpu) {
                return Err(Error::CpuNotAllowed {
                    cpu,
                    allowed: topology.allowed().to_vec(),
                });
            }
        }
        Ok(CpuPool { cpus: cpus.into() })
    }

    /// The physical cores of NUMA node `node`: one logical CPU per core (the lowest allowed SMT
    /// sibling), restricted to the process's allowed CPUs, ascending.
    ///
    /// Unlike IPEX, "node" is the kernel's NUMA node, not a socket computed from `lscpu`.
    ///
    /// ```
    /// let pool = corestream::CpuPool::from_node(0)?;
    /// assert!(!pool.is_empty());
    /// # Ok::<(), corestream::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`] for a node the machine does not have, [`Error::EmptyNode`] when
    /// none of its cores is allowed.
    pub fn from_node(node: usize) -> Result<CpuPool> {
        CpuPool::from_node_in(topology::system()?, node)
    }

    /// [`CpuPool::from_node`] on the given topology.
    ///
    /// # Errors
    ///
    /// As [`CpuPool::from_node`].
    pub fn from_node_in(topology: &Topology, node: usize) -> Result<CpuPool> {
        let nodes = topology.nodes();
        if !nodes.contains(&node) {
            return Err(Error::UnknownNode { node, nodes });
        }
        let cpus = topology.node_cores(node);
        if cpus.is_empty() {
            return Err(Error::EmptyNode {
                node,
                node_cpus: topology.node_cpus(node),
                allowed: topology.allowed().to_vec(),
            });
        }
        Ok(CpuPool { cpus: cpus.into() })
    }

    /// Every allowed physical core of the machine, one logical CPU each, over all nodes.
    ///
    /// Under Kubernetes' static CPU manager policy or `taskset`, this is exactly the
    /// container's or command's CPU set (SMT siblings left out).
    ///
    /// # Errors
    ///
    /// [`Error::Topology`] or [`Error::Affinity`] when the machine cannot be read.
    pub fn all() -> Result<CpuPool> {
        CpuPool::all_in(topology::system()?)
    }

    /// [`CpuPool::all`] on the given topology.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyPool`] when no CPU is allowed.
    pub fn all_in(topology: &Topology) -> Result<CpuPool> {
        let cpus = topology.all_cores();
        if cpus.is_empty() {
            return Err(Error::EmptyPool {
                allowed: topology.allowed().to_vec(),
            });
        }
        Ok(CpuPool { cpus: cpus.into() })
    }

    /// The logical CPU ids, in pool order.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The number of CPUs.
    pub fn len(&self) -> usize {
        self.cpus.len()
    }

    /// Always `false`: a pool has at least one CPU. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_empty()
    }

    /// Cuts the pool into `parts` contiguous slices in pool order; with `r = len % parts`, the
    /// first `r` slices get one CPU more (IPEX's rule).
    ///
    /// ```
    /// # use corestream::{CpuPool, Topology};
    /// # let dir = tempfile::tempdir().map_err(|e| corestream::Error::Topology { path: "tmp".into(), message: e.to_string() })?;
    /// # for cpu in 0..3 {
    /// #     let t = dir.path().join(format!("devices/system/cpu/cpu{cpu}/topology"));
    /// #     std::fs::create_dir_all(&t).unwrap();
    /// #     std::fs::write(t.join("core_id"), cpu.to_string()).unwrap();
    /// # }
    /// // A machine with cpus 0-2 (here a fake sysfs tree).
    /// let topo = Topology::from_sysfs(dir.path(), 0..3)?;
    /// let pool = CpuPool::new_in(&topo, [0, 1, 2])?;
    /// let parts = pool.split(2)?;
    /// assert_eq!(parts[0].cpus(), [0, 1]);
    /// assert_eq!(parts[1].cpus(), [2]);
    /// # Ok::<(), corestream::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSplit`] when `parts` is 0 or exceeds the pool's size.
    pub fn split(&self, parts: usize) -> Result<Vec<CpuPool>> {
        if parts == 0 || parts > self.len() {
            return Err(Error::InvalidSplit {
                parts,
                cpus: self.len(),
            });
        }
        let mut out = Vec::with_capacity(parts);
        let mut start = 0;
        for size in split_sizes(self.len(), parts) {
            out.push(CpuPool {
                cpus: self.cpus[start..start + size].into(),
            });
            start += size;
        }
        Ok(out)
    }

    /// Binds the calling thread to this pool until the returned guard is dropped, which
    /// restores the previous mask. Guards nest.
    ///
    /// ```
    /// let pool = corestream::CpuPool::new([0])?;
    /// {
    ///     let _guard = pool.pin_current()?;
    ///     assert_eq!(corestream::affinity::current_cpus()?, [0]);
    /// }
    /// # Ok::<(), corestream::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Affinity`] when the mask cannot be read or set.
    pub fn pin_current(&self) -> Result<PinGuard> {
        PinGuard::pin(&self.cpus)
    }
}

/// The part sizes for `total` rows over `parts` streams: `total / parts` each, the first
/// `total % parts` one more; when `total < parts`, only the first `total` streams, one row
/// each (so the result has `min(total, parts)` entries and no zero).
///
/// IPEX's rule, used for both cores to streams ([`CpuPool::split`]) and rows to streams
/// (re-exported as `corestream::batch::split_sizes`).
///
/// ```
/// use corestream::batch::split_sizes;
/// assert_eq!(split_sizes(4, 3), [2, 1, 1]);
/// assert_eq!(split_sizes(7, 3), [3, 2, 2]);
/// assert_eq!(split_sizes(2, 3), [1, 1]);
/// ```
pub fn split_sizes(total: usize, parts: usize) -> Vec<usize> {
    let used = total.min(parts);
    if used == 0 {
        return Vec::new();
    }
    let (base, rem) = (total / used, total % used);
    (0..used).map(|i| base + usize::from(i < rem)).collect()
}

// ===== impl Display, Debug for CpuPool =====

impl fmt::Display for CpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuPool[{}]", CpuList(&self.cpus))
    }
}

impl fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
