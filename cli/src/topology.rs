//! `corestream topology [--json]`: the nodes, physical cores with their SMT siblings, the CPUs
//! this process may use, its CPU quota (cgroup `cpu.max`) and the streams `auto` runs under it,
//! the pools corestream would make, and the OpenMP runtime found.

use corestream::{CpuPool, Streams, Topology};
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
        "cpu_quota": topo.cpu_quota().map(|q| json!({
            "cpus": q.cpus(),
            "quota_us": q.quota_us,
            "period_us": q.period_us,
            "source": q.source,
        })),
        "auto_streams": CpuPool::all_in(topo).ok().map(|p| Streams::auto_count(p.len(), topo.cpu_quota())),
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
    let all = CpuPool::all_in(&topo)?;
    println!("CpuPool::all() = {all}");
    match topo.cpu_quota() {
        Some(q) => println!(
            "cpu quota: {:.2} CPUs ({} us per {} us, {}): --streams auto runs {} streams",
            q.cpus(),
            q.quota_us,
            q.period_us,
            q.source,
            Streams::auto_count(all.len(), Some(q))
        ),
        None => println!("cpu quota: none: --streams auto runs {} streams", all.len()),
    }
    println!("openmp: {}", corestream::omp::status());
    Ok(0)
}
