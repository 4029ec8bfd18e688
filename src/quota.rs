//! The process's CPU quota: how much CPU time its cgroup pays for, as opposed to which CPUs it
//! may run on (its affinity mask, [`Topology::allowed`](crate::Topology::allowed)).
//!
//! Kubernetes CPU limits, `docker run --cpus` and systemd's `CPUQuota=` are a CFS bandwidth
//! quota, not a cpuset: a container limited to 2 CPUs on a 64-core node still sees 64 allowed
//! CPUs, and 64 busy threads there are throttled to 2 CPUs' worth of time per period, stalling
//! each in turn. [`CpuQuota::detect`] reads the quota (cgroup v2 `cpu.max`, v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us`) along the process's cgroup path, taking the
//! tightest limit of the cgroup and its ancestors (a parent's limit binds its children), and
//! [`Streams::Auto`](crate::Streams::Auto) runs no more streams than it pays for.

use std::path::Path;

/// A CPU bandwidth limit: `quota_us` of CPU time per `period_us`.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let root = dir.path();
/// # std::fs::create_dir_all(root.join("sys/fs/cgroup/kubepods/pod1"))?;
/// # std::fs::create_dir_all(root.join("proc/self"))?;
/// std::fs::write(root.join("proc/self/cgroup"), "0::/kubepods/pod1\n")?;
/// std::fs::write(root.join("sys/fs/cgroup/kubepods/pod1/cpu.max"), "150000 100000\n")?;
/// let quota = corestream::quota::CpuQuota::read(root).unwrap();
/// assert_eq!(quota.cpus(), 1.5);
/// assert_eq!(quota.whole_cpus(), 2); // what it pays for, rounded up
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time per period, microseconds.
    pub quota_us: u64,
    /// The period, microseconds.
    pub period_us: u64,
    /// The file the limit was read from (relative to the root read).
    pub source: String,
}

impl CpuQuota {
    /// CPUs' worth of time: `quota / period`.
    pub fn cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }

    /// The CPUs the quota pays for, rounded up, at least 1.
    pub fn whole_cpus(&self) -> usize {
        (self.quota_us.div_ceil(self.period_us.max(1)) as usize).max(1)
    }

    /// The live process's quota (`/proc/self/cgroup` and `/sys/fs/cgroup`), `None` without
    /// one (or off Linux).
    pub fn detect() -> Option<CpuQuota> {
        if cfg!(target_os = "linux") {
            CpuQuota::read("/")
        } else {
            None
        }
    }

    /// The quota of the process whose `/proc/self/cgroup` and `/sys/fs/cgroup` lie under
    /// `root` (a fake tree in tests, `/` live): the tightest limit along its cgroup path, v2
    /// (`0::/path`, `cpu.max`) or v1 (the `cpu` controller's `cpu.cfs_quota_us` and
    /// `cpu.cfs_period_us`); `None` when no limit is set (`max`, `-1`) or nothing is readable.
    pub fn read(root: impl AsRef<Path>) -> Option<CpuQuota> {
        let root = root.as_ref();
        let cgroups = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
        let mut tightest: Option<CpuQuota> = None;
        for line in cgroups.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let found = if controllers.is_empty() {
                along(root, "sys/fs/cgroup", path, v2)
            } else if controllers.split(',').any(|c| c == "cpu") {
                // v1: mounted under the controllers' joined name (cpu,cpuacct), often linked
                // as cpu/ too.
                along(root, &format!("sys/fs/cgroup/{controllers}"), path, v1)
                    .or_else(|| along(root, "sys/fs/cgroup/cpu", path, v1))
            } else {
                None
            };
            tightest = tighter(tightest, found);
        }
        tightest
    }
}

fn tighter(a: Option<CpuQuota>, b: Option<CpuQuota>) -> Option<CpuQuota> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.cpus() < a.cpus() { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The tightest limit `read` finds in the cgroup `path` under `mount` and its ancestors.
fn along(
    root: &Path,
    mount: &str,
    path: &str,
    read: fn(&Path, &str) -> Option<CpuQuota>,
) -> Option<CpuQuota> {
    let mut tightest = None;
    let mut dir = String::new();
    let relative = path.trim_start_matches('/');
    let parts = std::iter::once("").chain(relative.split('/').filter(|p| !p.is_empty()));
    for part in parts {
        if !part.is_empty() {
            dir.push('/');
            dir.push_str(part);
        }
        let here = format!("{mount}{dir}");
        tightest = tighter(tightest, read(root, &here));
    }
    tightest
}

/// cgroup v2: `cpu.max` is `$MAX $PERIOD`, `max` for none.
fn v2(root: &Path, dir: &str) -> Option<CpuQuota> {
    let file = format!("{dir}/cpu.max");
    let text = std::fs::read_to_string(root.join(&file)).ok()?;
    let mut fields = text.split_whitespace();
    let quota = fields.next()?.parse::<u64>().ok()?;
    let period = fields
        .next()
        .map_or(Some(100_000), |p| p.parse::<u64>().ok())?;
    limit(quota, period, file)
}

/// cgroup v1: `cpu.cfs_quota_us` (`-1` for none) per `cpu.cfs_period_us`.
fn v1(root: &Path, dir: &str) -> Option<CpuQuota> {
    let file = format!("{dir}/cpu.cfs_quota_us");
    let quota = std::fs::read_to_string(root.join(&file)).ok()?;
    let quota = quota.trim().parse::<i64>().ok()?;
    let period = std::fs::read_to_string(root.join(format!("{dir}/cpu.cfs_period_us"))).ok()?;
    let period = period.trim().parse::<u64>().ok()?;
    limit(u64::try_from(quota).ok()?, period, file)
}

fn limit(quota_us: u64, period_us: u64, source: String) -> Option<CpuQuota> {
    (quota_us > 0 && period_us > 0).then_some(CpuQuota {
        quota_us,
        period_us,
        source,
    })
}
