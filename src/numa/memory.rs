//! Memory-policy system calls: prefer a node for the calling thread's allocations
//! (`set_mempolicy`), and ask where a buffer's pages are ([`page_nodes`]: `move_pages` in query
//! mode, else `/proc/self/numa_maps`). The only unsafe code of [`numa`](super).

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use crate::error::{Error, Result};

/// Where a buffer's pages are: resident pages per NUMA node; see [`page_nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PageNodes {
    /// Node -> resident pages on it.
    pub nodes: BTreeMap<usize, usize>,
    /// Pages not resident (never touched, or swapped out).
    pub absent: usize,
    /// How the kernel was asked.
    pub source: PageSource,
}

/// How [`page_nodes`] read the placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageSource {
    /// `move_pages(2)` with no target nodes: the node of each page of the buffer.
    MovePages,
    /// `/proc/self/numa_maps`: the counts of the whole mapping that holds the buffer (used
    /// where `move_pages` is refused, e.g. by a container's seccomp profile).
    NumaMaps,
}

impl PageNodes {
    /// Whether every resident page is on `node` (and at least one is resident).
    pub fn all_on(&self, node: usize) -> bool {
        self.nodes.keys().all(|&n| n == node) && self.nodes.get(&node).is_some_and(|&p| p > 0)
    }
}

impl fmt::Display for PageNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (node, pages) in &self.nodes {
            write!(f, "N{node}={pages} ")?;
        }
        write!(f, "absent={} ({:?})", self.absent, self.source)
    }
}

/// Where the pages of `data` are, by NUMA node.
///
/// ```
/// let weights = vec![1.0f32; 1 << 16]; // 256 KiB, written: resident
/// let placed = corestream::numa::page_nodes(&weights)?;
/// let pages = placed.nodes.values().sum::<usize>() + placed.absent;
/// assert!(pages >= 64, "{placed}"); // 4 KiB pages (one more where the buffer is not aligned)
/// # Ok::<(), corestream::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Numa`] when neither `move_pages` nor `/proc/self/numa_maps` answers (non-Linux
/// systems, kernels without NUMA support).
pub fn page_nodes<T>(data: &[T]) -> Result<PageNodes> {
    let (address, len) = (data.as_ptr() as usize, std::mem::size_of_val(data));
    if len == 0 {
        return Ok(PageNodes {
            nodes: BTreeMap::new(),
            absent: 0,
            source: PageSource::MovePages,
        });
    }
    match sys::move_pages_query(address, len) {
        Ok(statuses) => {
            let mut nodes = BTreeMap::new();
            let mut absent = 0;
            for status in statuses {
                match usize::try_from(status) {
                    Ok(node) => *nodes.entry(node).or_insert(0) += 1,
                    Err(_) => absent += 1,
                }
            }
            Ok(PageNodes {
                nodes,
                absent,
                source: PageSource::MovePages,
            })
        }
        Err(refused) => super::maps::mapping_nodes(address as u64)
            .map(|nodes| PageNodes {
                nodes,
                absent: 0,
                source: PageSource::NumaMaps,
            })
            .map_err(|source| Error::Numa {
                op: "page_nodes",
                source: io::Error::new(
                    source.kind(),
                    format!("move_pages: {refused}; /proc/self/numa_maps: {source}"),
                ),
            }),
    }
}

/// Makes the calling thread's later allocations prefer `node` (`MPOL_PREFERRED`: the kernel
/// falls back to other nodes when it is full, never failing an allocation for it).
pub(crate) fn prefer_node(node: usize) -> io::Result<()> {
    sys::set_preferred(node)
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;

    /// Most nodes a mask may name (Linux's own `MAX_NUMNODES` is at most 1024).
    const MAX_NODES: usize = 1024;

    /// Pages asked per `move_pages` call.
    const CHUNK: usize = 4096;

    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions; it returns -1 on failure.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .unwrap_or(4096)
    }

    pub(super) fn set_preferred(node: usize) -> io::Result<()> {
        if node >= MAX_NODES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {node} is beyond the {MAX_NODES} nodes a mask may name"),
            ));
        }
        let bits = libc::c_ulong::BITS as usize;
        let mut mask = vec![0 as libc::c_ulong; node / bits + 1];
        mask[node / bits] |= 1 << (node % bits);
        // The kernel reads `maxnode - 1` bits (as libnuma passes it).
        let maxnode = (mask.len() * bits + 1) as libc::c_ulong;
        // SAFETY: `mask` is a live array of `mask.len()` words, and `maxnode - 1` bits is
        // exactly its size; the call only reads it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_set_mempolicy,
                libc::MPOL_PREFERRED,
                mask.as_ptr(),
                maxnode,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The node of each page of the `len` bytes at `address` (negative: an errno, e.g.
    /// `-ENOENT` for a page not resident).
    pub(super) fn move_pages_query(address: usize, len: usize) -> io::Result<Vec<i32>> {
        let page = page_size();
        let start = address / page * page;
        let end = address + len;
        let pages: Vec<*mut libc::c_void> = (start..end)
            .step_by(page)
            .map(|a| a as *mut libc::c_void)
            .collect();
        let mut status = vec![0i32; pages.len()];
        for (addresses, status) in pages.chunks(CHUNK).zip(status.chunks_mut(CHUNK)) {
            // SAFETY: `addresses` and `status` are live arrays of the same length, passed
            // with that length; a null `nodes` makes this a query that moves nothing and only
            // writes `status`; pid 0 is this process, whose live data the caller borrows.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_move_pages,
                    0,
                    addresses.len() as libc::c_ulong,
                    addresses.as_ptr(),
                    std::ptr::null::<libc::c_int>(),
                    status.as_mut_ptr(),
                    0,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(status)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;

    pub(super) fn set_preferred(_node: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "memory policies are a Linux feature",
        ))
    }

    pub(super) fn move_pages_query(_address: usize, _len: usize) -> io::Result<Vec<i32>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "move_pages is a Linux system call",
        ))
    }
}
