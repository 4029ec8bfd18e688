//! The machine's CPU topology: logical CPUs, their physical cores, packages and NUMA nodes,
//! and the CPUs this process may run on.

use crate::quota::CpuQuota;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use crate::cpulist;
use crate::error::{Error, Result};

/// One online logical CPU (a hardware thread).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LogicalCpu {
    /// The kernel's id for this CPU (`cpuN`).
    pub id: usize,
    /// The physical core id within its package (sysfs `core_id`; repeats across packages).
    pub core: usize,
    /// The package (socket) id.
    pub package: usize,
    /// The NUMA node (0 on machines or containers without `/sys/devices/system/node`).
    pub node: usize,
    /// The online logical CPUs sharing this CPU's physical core, itself included, ascending.
    pub siblings: Vec<usize>,
}

/// A snapshot of the CPU topology and of the process's allowed CPUs.
///
/// Read the live machine with [`Topology::detect`], or a fake sysfs tree with
/// [`Topology::from_sysfs`] (how the tests check machines they do not run on). Offline CPUs
/// are left out everywhere; the allowed set is intersected with the online CPUs.
///
/// ```
/// let topo = corestream::Topology::detect()?;
/// assert!(!topo.allowed().is_empty());
/// for node in topo.nodes() {
///     println!("node {node}: cores {:?}", topo.node_cores(node));
/// }
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    cpus: Vec<LogicalCpu>,
    allowed: Vec<usize>,
    quota: Option<CpuQuota>,
}

impl Topology {
    /// Reads the live machine: Linux sysfs (`/sys/devices/system/cpu`, `/sys/devices/system/node`)
    /// and the process's affinity mask.
    ///
    /// The allowed set is the main thread's mask, which is what `taskset`, `numactl -C` and cgroup
    /// cpusets set for the process; threads pinned by [`pin`](crate::pin) do not narrow it. On
    /// non-Linux targets every logical CPU is its own core on node 0.
    ///
    /// # Errors
    ///
    /// [`Error::Topology`] when sysfs is unreadable or malformed, [`Error::Affinity`] when the
    /// affinity mask cannot be read.
    pub fn detect() -> Result<Topology> {
        #[cfg(target_os = "linux")]
        {
            let allowed = crate::affinity::process_allowed()?;
            Ok(Topology::from_sysfs("/sys", allowed)?.with_cpu_quota(CpuQuota::detect()))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let ids: Vec<usize> =
                (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
            Ok(Topology::flat(&ids))
        }
    }

    /// Reads a sysfs tree rooted at `root` (the directory that holds `devices/system/cpu`), with
    /// `allowed` standing for the process's affinity mask. Used to test topologies of other
    /// machines.
    ///
    /// A missing `devices/system/node` directory (containers, non-NUMA kernels) means one node 0.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # for cpu in 0..2 {
    /// #     let t = dir.path().join(format!("devices/system/cpu/cpu{cpu}/topology"));
    /// #     std::fs::create_dir_all(&t)?;
    /// #     std::fs::write(t.join("core_id"), format!("{cpu}"))?;
    /// # }
    /// # let root = dir.path();
    /// let topo = corestream::Topology::from_sysfs(root, [0, 1])?;
    /// assert_eq!(topo.node_cores(0), vec![0, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Topology`] naming the file that is missing or malformed.
    pub fn from_sysfs(
        root: impl AsRef<Path>,
        allowed: impl IntoIterator<Item = usize>,
    ) -> Result<Topology> {
        let cpu_dir = root.as_ref().join("devices/system/cpu");
        let node_dir = root.as_ref().join("devices/system/node");
        let online = online_cpus(&cpu_dir)?;
        let nodes = node_map(&node_dir)?;
        let mut cpus = Vec::with_capacity(online.len());
        for &id in &online {
            let topo = cpu_dir.join(format!("cpu{id}/topology"));
            let core = read_number(&topo.join("core_id"))?.unwrap_or(id as i64);
            let package = read_number(&topo.join("physical_package_id"))?.unwrap_or(0);
            let siblings = ["core_cpus_list", "thread_siblings_list"]
                .iter()
                .find_map(|f| read_list(&topo.join(f)).transpose())
                .transpose()?
                .unwrap_or_else(|| vec![id]);
            let mut siblings: Vec<usize> = siblings
                .into_iter()
                .filter(|s| online.binary_search(s).is_ok())
                .collect();
            if !siblings.contains(&id) {
                siblings.push(id);
                siblings.sort_unstable();
            }
            let node = nodes
                .iter()
                .find(|(_, list)| list.contains(&id))
                .map_or(0, |(n, _)| *n);
            cpus.push(LogicalCpu {
                id,
                core: core.max(0) as usize,
                package: package.max(0) as usize,
                node,
                siblings,
            });
        }
        let allowed: BTreeSet<usize> = allowed
            .into_iter()
            .filter(|a| online.binary_search(a).is_ok())
            .collect();
        Ok(Topology {
            cpus,
            allowed: allowed.into_iter().collect(),
            quota: None,
        })
    }

    /// The same topology with the CPU quota `quota` (see [`crate::quota`]): how much CPU time
    /// the process may use, whatever CPUs it may run on. [`detect`](Self::detect) reads the
    /// live one; [`from_sysfs`](Self::from_sysfs) leaves none.
    pub fn with_cpu_quota(mut self, quota: Option<CpuQuota>) -> Topology {
        self.quota = quota;
        self
    }

    /// The process's CPU quota, if its cgroup sets one.
    pub fn cpu_quota(&self) -> Option<&CpuQuota> {
        self.quota.as_ref()
    }

    /// A topology without SMT or NUMA: each id is its own core on node 0, all allowed.
    #[cfg(not(target_os = "linux"))]
    fn flat(ids: &[usize]) -> Topology {
        Topology {
            cpus: ids
                .iter()
                .map(|&id| LogicalCpu {
                    id,
                    core: id,
                    package: 0,
                    node: 0,
                    siblings: vec![id],
                })
                .collect(),
            allowed: ids.to_vec(),
            quota: None,
        }
    }

    /// The online logical CPUs, ascending by id.
    pub fn cpus(&self) -> &[LogicalCpu] {
        &self.cpus
    }

    /// The logical CPU with kernel id `id`, if it is online.
    pub fn cpu(&self, id: usize) -> Option<&LogicalCpu> {
        self.cpus
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &self.cpus[i])
    }

    /// The online CPUs this process may run on, ascending.
    pub fn allowed(&self) -> &[usize] {
        &self.allowed
    }

    /// Whether this process may run on CPU `id`.
    pub fn is_allowed(&self, id: usize) -> bool {
        self.allowed.binary_search(&id).is_ok()
    }

    /// The NUMA nodes that have online CPUs, ascending.
    pub fn nodes(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self.cpus.iter().map(|c| c.node).collect();
        set.into_iter().collect()
    }

    /// The online logical CPUs of `node`, SMT siblings included, ascending.
    pub fn node_cpus(&self, node: usize) -> Vec<usize> {
        self.cpus
            .iter()
            .filter(|c| c.node == node)
            .map(|c| c.id)
            .collect()
    }

    /// The physical cores of the machine as sibling groups (each the logical CPUs of one core),
    /// ordered by their lowest id.
    pub fn physical_cores(&self) -> Vec<Vec<usize>> {
        let set: BTreeSet<&Vec<usize>> = self.cpus.iter().map(|c| &c.siblings).collect();
        set.into_iter().cloned().collect()
    }

    /// One allowed logical CPU per physical core of `node`: the lowest allowed sibling of each
    /// core, ascending. Cores none of whose siblings is allowed are left out. This is the CPU
    /// list of [`CpuPool::from_node`](crate::CpuPool::from_node).
    pub fn node_cores(&self, node: usize) -> Vec<usize> {
        self.cores_where(|c| c.node == node)
    }

    /// One allowed logical CPU per physical core, over every node, ascending (the CPU list of
    /// [`CpuPool::all`](crate::CpuPool::all)).
    pub fn all_cores(&self) -> Vec<usize> {
        self.cores_where(|_| true)
    }

    fn cores_where(&self, keep: impl Fn(&LogicalCpu) -> bool) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for cpu in self.cpus.iter().filter(|c| keep(c)) {
            if !seen.insert(&cpu.siblings) {
                continue;
            }
            if let Some(&first) = cpu.siblings.iter().find(|&&s| self.is_allowed(s)) {
                out.push(first);
            }
        }
        out.sort_unstable();
        // Inconsistent sibling lists (cpu0: 0-1, cpu2: 0,2) can name one CPU for two cores.
        out.dedup();
        out
    }
}

/// The topology of the live machine, read once per process and shared by the pool
/// constructors, so that every pool is checked against the same allowed set.
pub(crate) fn system() -> Result<&'static Topology> {
    static SYSTEM: OnceLock<Topology> = OnceLock::new();
    if let Some(topo) = SYSTEM.get() {
        return Ok(topo);
    }
    let topo = Topology::detect()?;
    Ok(SYSTEM.get_or_init(|| topo))
}

fn topology_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Topology {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a file if it exists: `Ok(None)` when it does not.
fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(topology_error(path, e.to_string())),
    }
}

fn read_number(path: &Path) -> Result<Option<i64>> {
    read_optional(path)?
        .map(|t| {
            t.trim()
                .parse()
                .map_err(|_| topology_error(path, format!("expected a number, found {t:?}")))
        })
        .transpose()
}

fn read_list(path: &Path) -> Result<Option<Vec<usize>>> {
    read_optional(path)?
        .map(|t| {
            cpulist::parse(&t)
                .ok_or_else(|| topology_error(path, format!("expected a cpu list, found {t:?}")))
        })
        .transpose()
}

/// Ids of the `prefix<N>` entries of a directory, ascending and distinct (`cpu01` and `cpu+1`
/// parse as 1, like `cpu1`: an id is listed once); empty when the directory does not exist.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<usize>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(topology_error(dir, e.to_string())),
    };
    let mut ids: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Online CPUs: the `online` list when present, otherwise every `cpuN` whose own `online`
/// file is not `0` (cpu0 usually has none: it cannot go offline).
fn online_cpus(cpu_dir: &Path) -> Result<Vec<usize>> {
    let present = numbered_entries(cpu_dir, "cpu")?;
    if present.is_empty() {
        return Err(topology_error(cpu_dir, "no cpuN directories"));
    }
    if let Some(list) = read_list(&cpu_dir.join("online"))? {
        return Ok(list);
    }
    let mut online = Vec::new();
    for id in present {
        let flag = read_number(&cpu_dir.join(format!("cpu{id}/online")))?;
        if flag != Some(0) {
            online.push(id);
        }
    }
    Ok(online)
}

/// `(node, cpus)` for every `nodeN/cpulist`; empty when there is no node directory.
fn node_map(node_dir: &Path) -> Result<Vec<(usize, Vec<usize>)>> {
    let mut map = Vec::new();
    for node in numbered_entries(node_dir, "node")? {
        let list = read_list(&node_dir.join(format!("node{node}/cpulist")))?.unwrap_or_default();
        map.push((node, list));
    }
    Ok(map)
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// Found by fuzz target `topology` (fuzz/corpus/topology/seed_odd_names): directories
    /// `cpu1` and `cpu01` (or `cpu+1`) both parse as CPU 1, which then appeared twice in
    /// `cpus()` when there was no `online` file.
    #[test]
    fn a_cpu_directory_named_twice_is_one_cpu() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["cpu0", "cpu1", "cpu01", "cpu+1"] {
            fs::create_dir_all(dir.path().join("devices/system/cpu").join(name)).unwrap();
        }
        let topo = Topology::from_sysfs(dir.path(), [0, 1]).unwrap();
        let ids: Vec<usize> = topo.cpus().iter().map(|c| c.id).collect();
        assert_eq!(ids, [0, 1]);
        assert_eq!(topo.node_cpus(0), [0, 1]);
    }

    /// Seen while writing fuzz target `topology`'s consistency check: sibling lists that
    /// disagree (cpu0 says it shares a core with 1, cpu2 with 0) made `node_cores` and
    /// `all_cores` list CPU 0 twice, which `CpuPool::from_node` then rejected as a duplicate.
    /// Each CPU is now listed once.
    #[test]
    fn inconsistent_sibling_lists_list_each_cpu_once() {
        let dir = tempfile::tempdir().unwrap();
        for (cpu, siblings) in [(0, "0-1"), (1, "1"), (2, "0,2")] {
            let file = format!("devices/system/cpu/cpu{cpu}/topology/core_cpus_list");
            write(dir.path(), &file, siblings);
        }
        let topo = Topology::from_sysfs(dir.path(), [0, 1, 2]).unwrap();
        assert_eq!(topo.node_cores(0), [0, 1]);
        assert_eq!(topo.all_cores(), [0, 1]);
    }
}
