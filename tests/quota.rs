//! The CPU quota read from fake cgroup trees (`corestream::quota::CpuQuota::read`), as the
//! topology is read from fake sysfs trees: cgroup v2 `cpu.max` (a limit, `max`, a period left
//! out, nested cgroups whose parent binds tighter), v1 `cpu.cfs_quota_us` / `cfs_period_us`
//! (`-1`, the `cpu,cpuacct` mount, nested), a hybrid of both, and trees with nothing to read.

use std::path::Path;

use corestream::quota::CpuQuota;

/// A fake root: `/proc/self/cgroup` says `cgroups`; `files` are written under it.
fn tree(cgroups: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("proc/self/cgroup", cgroups);
    for (path, text) in files {
        write(path, text);
    }
    dir
}

fn cpus(root: &Path) -> Option<(f64, usize, String)> {
    CpuQuota::read(root).map(|q| (q.cpus(), q.whole_cpus(), q.source))
}

#[test]
fn cgroup_v2_limit() {
    let t = tree(
        "0::/kubepods/burstable/pod1/c1\n",
        &[(
            "sys/fs/cgroup/kubepods/burstable/pod1/c1/cpu.max",
            "250000 100000\n",
        )],
    );
    assert_eq!(
        cpus(t.path()),
        Some((
            2.5,
            3,
            "sys/fs/cgroup/kubepods/burstable/pod1/c1/cpu.max".into()
        ))
    );
}

#[test]
fn cgroup_v2_max_is_no_limit() {
    let t = tree(
        "0::/user.slice\n",
        &[
            ("sys/fs/cgroup/cpu.max", "max 100000\n"),
            ("sys/fs/cgroup/user.slice/cpu.max", "max 100000\n"),
        ],
    );
    assert_eq!(cpus(t.path()), None);
}

#[test]
fn cgroup_v2_parent_binds_tighter_than_child() {
    let t = tree(
        "0::/pod/container\n",
        &[
            ("sys/fs/cgroup/pod/cpu.max", "100000 100000\n"),
            ("sys/fs/cgroup/pod/container/cpu.max", "400000 100000\n"),
        ],
    );
    assert_eq!(
        cpus(t.path()),
        Some((1.0, 1, "sys/fs/cgroup/pod/cpu.max".into()))
    );
}

#[test]
fn cgroup_v2_period_left_out_is_the_default() {
    let t = tree("0::/\n", &[("sys/fs/cgroup/cpu.max", "50000\n")]);
    assert_eq!(
        cpus(t.path()),
        Some((0.5, 1, "sys/fs/cgroup/cpu.max".into()))
    );
}

#[test]
fn cgroup_v1_quota_and_period() {
    let t = tree(
        "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n",
        &[
            (
                "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us",
                "300000\n",
            ),
            (
                "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us",
                "100000\n",
            ),
        ],
    );
    assert_eq!(
        cpus(t.path()),
        Some((
            3.0,
            3,
            "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us".into()
        ))
    );
}

#[test]
fn cgroup_v1_minus_one_is_no_limit_and_a_parent_still_binds() {
    let t = tree(
        "4:cpu:/a/b\n",
        &[
            ("sys/fs/cgroup/cpu/a/cpu.cfs_quota_us", "150000\n"),
            ("sys/fs/cgroup/cpu/a/cpu.cfs_period_us", "100000\n"),
            ("sys/fs/cgroup/cpu/a/b/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu/a/b/cpu.cfs_period_us", "100000\n"),
        ],
    );
    assert_eq!(
        cpus(t.path()),
        Some((1.5, 2, "sys/fs/cgroup/cpu/a/cpu.cfs_quota_us".into()))
    );
    let unlimited = tree(
        "4:cpu:/a\n",
        &[
            ("sys/fs/cgroup/cpu/a/cpu.cfs_quota_us", "-1\n"),
            ("sys/fs/cgroup/cpu/a/cpu.cfs_period_us", "100000\n"),
        ],
    );
    assert_eq!(cpus(unlimited.path()), None);
}

#[test]
fn hybrid_v1_and_v2_take_the_tightest() {
    let t = tree(
        "3:cpu:/svc\n0::/svc\n",
        &[
            ("sys/fs/cgroup/cpu/svc/cpu.cfs_quota_us", "800000\n"),
            ("sys/fs/cgroup/cpu/svc/cpu.cfs_period_us", "100000\n"),
            ("sys/fs/cgroup/svc/cpu.max", "200000 100000\n"),
        ],
    );
    assert_eq!(
        cpus(t.path()),
        Some((2.0, 2, "sys/fs/cgroup/svc/cpu.max".into()))
    );
}

#[test]
fn nothing_readable_or_malformed_is_no_limit() {
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(cpus(empty.path()), None);
    let no_files = tree("0::/x\n", &[]);
    assert_eq!(cpus(no_files.path()), None);
    let malformed = tree(
        "0::/x\nnonsense\n",
        &[("sys/fs/cgroup/x/cpu.max", "lots 100000\n")],
    );
    assert_eq!(cpus(malformed.path()), None);
    let zero_period = tree("0::/\n", &[("sys/fs/cgroup/cpu.max", "100000 0\n")]);
    assert_eq!(cpus(zero_period.path()), None);
}

#[test]
fn the_live_topology_carries_the_live_quota() {
    let live = corestream::Topology::detect().unwrap();
    assert_eq!(live.cpu_quota(), CpuQuota::detect().as_ref());
}
