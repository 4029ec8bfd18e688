//! Topology and CpuPool against fake sysfs trees (tests/fixtures, made by make_fixtures.py):
//! exact pools for SMT siblings numbered both ways, non-contiguous ids, an offline CPU, trees
//! without node/ or cpu/online; the allowed-set intersection; split; every error variant.

use std::collections::HashSet;

use corestream::{CpuPool, Error, Topology};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn topo(name: &str, allowed: impl IntoIterator<Item = usize>) -> Topology {
    Topology::from_sysfs(fixture(name), allowed).unwrap()
}

fn node_pool(t: &Topology, node: usize) -> Vec<usize> {
    CpuPool::from_node_in(t, node).unwrap().cpus().to_vec()
}

#[test]
fn two_sockets_with_adjacent_smt_siblings() {
    let t = topo("two-socket-smt-adjacent", 0..16);
    assert_eq!(t.cpus().len(), 16);
    assert_eq!(t.nodes(), [0, 1]);
    assert_eq!(t.node_cpus(1), (8..16).collect::<Vec<_>>());
    assert_eq!(node_pool(&t, 0), [0, 2, 4, 6]);
    assert_eq!(node_pool(&t, 1), [8, 10, 12, 14]);
    assert_eq!(
        CpuPool::all_in(&t).unwrap().cpus(),
        [0, 2, 4, 6, 8, 10, 12, 14]
    );
    assert_eq!(t.physical_cores().len(), 8);
    assert_eq!(t.physical_cores()[1], [2, 3]);
    let cpu11 = t.cpu(11).unwrap();
    assert_eq!(
        (
            cpu11.package,
            cpu11.core,
            cpu11.node,
            cpu11.siblings.clone()
        ),
        (1, 1, 1, vec![10, 11])
    );
}

#[test]
fn two_sockets_with_split_smt_siblings() {
    let t = topo("two-socket-smt-split", 0..16);
    assert_eq!(t.node_cpus(0), [0, 1, 2, 3, 8, 9, 10, 11]);
    assert_eq!(node_pool(&t, 0), [0, 1, 2, 3]);
    assert_eq!(node_pool(&t, 1), [4, 5, 6, 7]);
    assert_eq!(t.cpu(12).unwrap().siblings, [4, 12]);
    assert_eq!(t.cpu(12).unwrap().package, 1);
    assert_eq!(t.all_cores(), (0..8).collect::<Vec<_>>());
}

#[test]
fn the_allowed_set_picks_the_lowest_allowed_sibling_per_core() {
    // Under `taskset -c 1,8,9`: core (0,8) is represented by 8, core (1,9) by 1.
    let t = topo("two-socket-smt-split", [1, 8, 9]);
    assert_eq!(t.allowed(), [1, 8, 9]);
    assert_eq!(node_pool(&t, 0), [1, 8]);
    assert!(matches!(
        CpuPool::from_node_in(&t, 1),
        Err(Error::EmptyNode { node: 1, .. })
    ));
    assert_eq!(CpuPool::all_in(&t).unwrap().cpus(), [1, 8]);
}

#[test]
fn sparse_ids_and_an_offline_cpu() {
    let t = topo("sparse-offline", 0..16);
    let ids: Vec<usize> = t.cpus().iter().map(|c| c.id).collect();
    assert_eq!(ids, [0, 1, 2, 8, 9]);
    assert_eq!(
        t.allowed(),
        [0, 1, 2, 8, 9],
        "offline and absent cpus are never allowed"
    );
    assert!(t.cpu(3).is_none());
    assert_eq!(node_pool(&t, 0), [0, 1, 2, 8, 9]);
    let err = CpuPool::new_in(&t, [2, 3]).unwrap_err();
    assert!(matches!(err, Error::CpuNotAllowed { cpu: 3, .. }));
    assert_eq!(
        err.to_string(),
        "cpu 3 is not available to this process; allowed cpus: 0-2,8-9"
    );
}

#[test]
fn a_tree_without_node_directory_is_one_node_zero() {
    let t = topo("no-node", 0..4);
    assert_eq!(t.nodes(), [0]);
    assert_eq!(node_pool(&t, 0), [0, 1, 2, 3]);
    assert!(matches!(
        CpuPool::from_node_in(&t, 1),
        Err(Error::UnknownNode { node: 1, .. })
    ));
}

#[test]
fn a_tree_without_online_file_reads_per_cpu_flags() {
    let t = topo("no-online-file", 0..4);
    let ids: Vec<usize> = t.cpus().iter().map(|c| c.id).collect();
    assert_eq!(ids, [0, 1, 3]);
    assert_eq!(node_pool(&t, 0), [0, 1, 3]);
}

#[test]
fn new_keeps_order_and_rejects_bad_lists() {
    let t = topo("two-socket-smt-adjacent", 0..4);
    let pool = CpuPool::new_in(&t, [3, 1, 2]).unwrap();
    assert_eq!(pool.cpus(), [3, 1, 2]);
    assert_eq!(pool.len(), 3);
    assert!(!pool.is_empty());
    assert!(matches!(
        CpuPool::new_in(&t, []),
        Err(Error::EmptyPool { allowed }) if allowed == [0, 1, 2, 3]
    ));
    assert!(matches!(
        CpuPool::new_in(&t, [1, 2, 1]),
        Err(Error::DuplicateCpu { cpu: 1 })
    ));
    let err = CpuPool::new_in(&t, [0, 7]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cpu 7 is not available to this process; allowed cpus: 0-3"
    );
    assert!(matches!(
        CpuPool::new_in(&t, [99]),
        Err(Error::CpuNotAllowed { cpu: 99, .. })
    ));
}

#[test]
fn split_follows_the_remainder_rule_in_pool_order() {
    let t = topo("two-socket-smt-adjacent", 0..16);
    let three = CpuPool::new_in(&t, [0, 1, 2]).unwrap();
    let parts: Vec<Vec<usize>> = three
        .split(2)
        .unwrap()
        .iter()
        .map(|p| p.cpus().to_vec())
        .collect();
    assert_eq!(parts, [vec![0, 1], vec![2]]);
    let ten = CpuPool::new_in(&t, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]).unwrap();
    let parts: Vec<Vec<usize>> = ten
        .split(4)
        .unwrap()
        .iter()
        .map(|p| p.cpus().to_vec())
        .collect();
    assert_eq!(
        parts,
        [vec![9, 8, 7], vec![6, 5, 4], vec![3, 2], vec![1, 0]]
    );
    assert_eq!(ten.split(1).unwrap(), std::slice::from_ref(&ten));
    assert_eq!(ten.split(10).unwrap().len(), 10);
    assert!(matches!(
        ten.split(0),
        Err(Error::InvalidSplit { parts: 0, cpus: 10 })
    ));
    assert!(matches!(
        ten.split(11),
        Err(Error::InvalidSplit {
            parts: 11,
            cpus: 10
        })
    ));
}

#[test]
fn display_eq_and_hash() {
    let t = topo("two-socket-smt-adjacent", 0..16);
    let pool = CpuPool::new_in(&t, [0, 1, 2, 3, 8]).unwrap();
    assert_eq!(pool.to_string(), "CpuPool[0-3,8]");
    assert_eq!(format!("{pool:?}"), "CpuPool[0-3,8]");
    let same = CpuPool::new_in(&t, [0, 1, 2, 3, 8]).unwrap();
    let reordered = CpuPool::new_in(&t, [8, 0, 1, 2, 3]).unwrap();
    assert_eq!(pool, same);
    assert_ne!(pool, reordered, "order is part of a pool");
    let set: HashSet<CpuPool> = [pool.clone(), same, reordered, pool.clone()].into();
    assert_eq!(set.len(), 2);
}

#[test]
fn unreadable_trees_are_topology_errors() {
    let err = Topology::from_sysfs("/nonexistent/sysfs", 0..4).unwrap_err();
    assert!(matches!(err, Error::Topology { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("devices/system/cpu/cpu0/topology");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("core_id"), "zero\n").unwrap();
    let err = Topology::from_sysfs(dir.path(), 0..1).unwrap_err();
    match err {
        Error::Topology { path, message } => {
            assert!(path.ends_with("core_id"), "{path:?}");
            assert!(message.contains("expected a number"), "{message}");
        }
        other => panic!("expected Error::Topology, got {other:?}"),
    }
    std::fs::write(dir.path().join("devices/system/cpu/online"), "0-x\n").unwrap();
    assert!(matches!(
        Topology::from_sysfs(dir.path(), 0..1),
        Err(Error::Topology { .. })
    ));
}

#[test]
fn the_live_machine_is_consistent() {
    let t = Topology::detect().unwrap();
    assert!(!t.allowed().is_empty());
    for &cpu in t.allowed() {
        assert!(t.cpu(cpu).is_some(), "allowed cpu {cpu} is not online");
    }
    let all = CpuPool::all().unwrap();
    assert!(all.cpus().iter().all(|c| t.is_allowed(*c)));
    assert_eq!(CpuPool::from_node(0).unwrap().cpus(), t.node_cores(0));
}
