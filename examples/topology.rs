//! Prints the machine's CPU topology the way `numactl --hardware` does, plus the pools
//! corestream would make: `CpuPool::from_node(n)` for every node, `CpuPool::all()`, and its
//! `split(k)`.
//!
//! Run: `cargo run --example topology` for this machine, or
//! `cargo run --example topology -- tests/fixtures/two-socket-smt-split` for a sysfs tree
//! (every CPU of the tree counts as allowed).

use std::collections::BTreeMap;

use corestream::{CpuPool, Topology};

fn list(ids: &[usize]) -> String {
    ids.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> corestream::Result<()> {
    let topo = match std::env::args().nth(1) {
        Some(root) => Topology::from_sysfs(&root, 0..usize::from(u16::MAX))?,
        None => Topology::detect()?,
    };
    let nodes = topo.nodes();
    println!("available: {} nodes ({})", nodes.len(), list(&nodes));
    for &node in &nodes {
        println!("node {node} cpus: {}", list(&topo.node_cpus(node)));
    }
    let mut packages: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for cpu in topo.cpus() {
        packages.entry(cpu.package).or_default().push(cpu.id);
    }
    for (package, cpus) in &packages {
        println!("package {package} cpus: {}", list(cpus));
    }
    println!("physical cores (SMT siblings):");
    for siblings in topo.physical_cores() {
        let first = topo.cpu(siblings[0]).map_or(0, |c| c.node);
        println!("  node {first}: {}", list(&siblings));
    }
    println!("allowed cpus: {}", list(topo.allowed()));
    for &node in &nodes {
        match CpuPool::from_node_in(&topo, node) {
            Ok(pool) => println!("CpuPool::from_node({node}) = {pool}"),
            Err(e) => println!("CpuPool::from_node({node}): {e}"),
        }
    }
    let all = CpuPool::all_in(&topo)?;
    println!("CpuPool::all() = {all}");
    for k in 1..=all.len().min(8) {
        let parts: Vec<String> = all.split(k)?.iter().map(ToString::to_string).collect();
        println!("  split({k}) = {}", parts.join(" "));
    }
    Ok(())
}
