//! `corestream topology [--json]`: the nodes, physical cores with their SMT siblings, the CPUs
//! this process may use, the pools corestream would make, and the OpenMP runtime found.

use corestream::{CpuPool, Topology};
use serde_json::{json, Value};

use crate::Fail;

/// The machine as JSON: `topology --json`, and the `topology` of `bench --json`.
pub fn json(topo: &Topology) -> Value {
    let pools: Vec<Value> = topo
        .nodes()
        .iter()
        .map(|&n| json!({"node": n, "from_node": CpuPool::from_node_in(topo, n).ok().map(|p| p.cpus().to_vec())}))
        .collect();
    json!({
        "nodes": topo.nodes().iter().map(|&n| json!({"node": n, "cpus": topo.node_cpus(n)})).collect::<Vec<_>>(),
        "physical_cores": topo.physical_cores(),
        "allowed": topo.allowed(),
        "pools": pools,
        "all": CpuPool::all_in(topo).ok().map(|p| p.cpus().to_vec()),
        "openmp": corestream::omp::status().to_string(),
    })
}

/// `corestream topology [--json]`.
pub fn run(as_json: bool) -> Result<i32, Fail> {
    let topo = Topology::detect()?;
    if as_json {
        println!("{:#}", json(&topo));
        return Ok(0);
    }
    println!("nodes: {}", topo.nodes().len());
    for n in topo.nodes() {
        println!("  node {n}: cpus {:?}", topo.node_cpus(n));
    }
    println!("physical cores (SMT siblings):");
    for core in topo.physical_cores() {
        println!("  {core:?}");
    }
    println!("allowed cpus: {:?}", topo.allowed());
    for n in topo.nodes() {
        match CpuPool::from_node_in(&topo, n) {
            Ok(pool) => println!("CpuPool::from_node({n}) = {pool}"),
            Err(e) => println!("CpuPool::from_node({n}): {e}"),
        }
    }
    println!("CpuPool::all() = {}", CpuPool::all_in(&topo)?);
    println!("openmp: {}", corestream::omp::status());
    Ok(0)
}
