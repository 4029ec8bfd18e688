//! Target `topology`: `Topology::from_sysfs` on arbitrary sysfs trees. The fuzz bytes are a
//! program that writes files (numbers, CPU lists, raw bytes) and directories (`cpuN`, `nodeN`,
//! odd names such as `cpu01` or `cpu+1`, a directory where a file belongs) under a temporary
//! root, followed by the allowed set.
//!
//! Checks: no panic; an error is `Error::Topology`; a topology that reads is consistent: CPU
//! ids strictly ascending, each CPU's siblings strictly ascending, holding the CPU itself and
//! only online CPUs, the allowed set strictly ascending within the online CPUs and the given
//! set, and every node's and the machine's one-CPU-per-core lists strictly ascending and
//! allowed.

use std::fs;
use std::path::Path;

use corestream::{Error, Topology};

use super::bytes::Bytes;

/// Builds the tree that `data` describes in a temporary directory and reads it.
pub fn check(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut u = Bytes::new(data);
    let allowed: Vec<usize> = (0..u.below(9)).map(|_| u.below(12)).collect();
    while !u.is_empty() {
        write_one(dir.path(), &mut u);
    }
    match Topology::from_sysfs(dir.path(), allowed.iter().copied()) {
        Ok(topo) => check_consistent(&topo, &allowed),
        Err(Error::Topology { .. }) => {}
        Err(other) => panic!("from_sysfs gave {other:?}, expected Error::Topology"),
    }
}

/// Decodes and performs one write.
fn write_one(root: &Path, u: &mut Bytes<'_>) {
    let cpu = "devices/system/cpu";
    let node = "devices/system/node";
    let op = u.below(13);
    let i = u.below(10);
    let file = match op {
        0 => format!("{cpu}/online"),
        1 => format!("{cpu}/cpu{i}/online"),
        2 => format!("{cpu}/cpu{i}/topology/core_id"),
        3 => format!("{cpu}/cpu{i}/topology/physical_package_id"),
        4 => format!("{cpu}/cpu{i}/topology/core_cpus_list"),
        5 => format!("{cpu}/cpu{i}/topology/thread_siblings_list"),
        6 => format!("{node}/node{i}/cpulist"),
        7 => return mkdir(root, &format!("{cpu}/cpu{i}")),
        8 => return mkdir(root, &format!("{node}/node{i}")),
        9 => return mkdir(root, &format!("{cpu}/cpu{}", odd_name(u))),
        10 => return mkdir(root, &format!("{node}/node{}", odd_name(u))),
        // A directory where sysfs has a file.
        11 => {
            let leaf = ["online", "topology/core_id", "topology/core_cpus_list"][u.below(3)];
            return mkdir(root, &format!("{cpu}/cpu{i}/{leaf}"));
        }
        _ => format!("{node}/node{i}/cpulist"),
    };
    let content = content(u);
    let path = root.join(file);
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    // A directory already at this path (op 11) keeps it: that is part of the test.
    let _ = fs::write(path, content);
}

fn mkdir(root: &Path, rel: &str) {
    let _ = fs::create_dir_all(root.join(rel));
}

/// A directory-name suffix of up to 4 bytes: digits, signs, spaces, letters.
fn odd_name(u: &mut Bytes<'_>) -> String {
    const CHARS: &[u8] = b"0123456789+- a_";
    (0..u.below(5))
        .map(|_| char::from(CHARS[u.below(CHARS.len())]))
        .collect()
}

/// A file's content: a number, a CPU list, or raw bytes.
fn content(u: &mut Bytes<'_>) -> Vec<u8> {
    match u.below(4) {
        0 => format!("{}\n", i64::from(u.byte()) - 8).into_bytes(),
        1 => {
            let (a, b) = (u.below(12), u.below(12));
            format!("{a}-{b}\n").into_bytes()
        }
        2 => {
            let items: Vec<String> = (0..u.below(4)).map(|_| u.below(12).to_string()).collect();
            format!("{}\n", items.join(",")).into_bytes()
        }
        _ => {
            let n = u.below(24);
            u.take(n).to_vec()
        }
    }
}

fn strictly_ascending(ids: &[usize]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

fn check_consistent(topo: &Topology, given: &[usize]) {
    let ids: Vec<usize> = topo.cpus().iter().map(|c| c.id).collect();
    assert!(strictly_ascending(&ids), "cpu ids {ids:?}");
    for cpu in topo.cpus() {
        assert!(
            strictly_ascending(&cpu.siblings) && cpu.siblings.contains(&cpu.id),
            "cpu {} has siblings {:?}",
            cpu.id,
            cpu.siblings
        );
        for s in &cpu.siblings {
            assert!(
                topo.cpu(*s).is_some(),
                "sibling {s} of cpu {} is offline",
                cpu.id
            );
        }
    }
    let allowed = topo.allowed();
    assert!(strictly_ascending(allowed), "allowed {allowed:?}");
    for a in allowed {
        assert!(ids.contains(a) && given.contains(a), "allowed cpu {a}");
    }
    let nodes = topo.nodes();
    assert!(strictly_ascending(&nodes), "nodes {nodes:?}");
    assert_eq!(nodes.is_empty(), ids.is_empty());
    let mut per_node = 0;
    for n in nodes {
        let node_cpus = topo.node_cpus(n);
        assert!(strictly_ascending(&node_cpus) && !node_cpus.is_empty());
        per_node += node_cpus.len();
        let cores = topo.node_cores(n);
        assert!(strictly_ascending(&cores), "node {n} cores {cores:?}");
        assert!(
            cores.iter().all(|c| topo.is_allowed(*c)),
            "node {n} cores {cores:?}"
        );
    }
    assert_eq!(per_node, ids.len(), "every cpu on exactly one node");
    let all = topo.all_cores();
    assert!(strictly_ascending(&all), "all cores {all:?}");
    assert!(all.iter().all(|c| topo.is_allowed(*c)), "all cores {all:?}");
}
