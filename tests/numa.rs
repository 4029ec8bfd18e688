//! NUMA weight copies: the plan (which stream runs which copy) on fake machines, and on the live
//! machine where a copy's pages land (`move_pages`), which copy each stream runs, the opt-out,
//! models without a copy and a failing copy. The live checks describe the live CPUs to the
//! module as two NUMA nodes (a fake topology over real CPUs), since this machine has one: the
//! copy for "node 1" is then made on node 1's CPU and, the kernel having no node 1, placed by
//! first touch on node 0, which is where its pages must be.

use corestream::batch::Rows;
use corestream::numa::{on_node, page_nodes, Placement, ReplicaPlan, Weights};
use corestream::{
    affinity, current_stream, BoxError, CpuPool, Error, Module, MultiStreamModule, Streams,
    Topology,
};

mod common;

use common::two_nodes;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn streams_of(plan: &ReplicaPlan, replica: usize) -> (usize, Vec<usize>, Vec<usize>) {
    let r = &plan.replicas()[replica];
    (r.node, r.streams.clone(), r.cpus.clone())
}

// === The plan, on fake machines ===

#[test]
fn each_node_s_streams_share_one_copy_and_the_first_node_runs_the_original() {
    let t = Topology::from_sysfs(fixture("two-socket-smt-split"), 0..16).unwrap();
    let pool = CpuPool::all_in(&t).unwrap(); // 0-3 on node 0, 4-7 on node 1
    let plan = ReplicaPlan::new(&t, &pool.split(4).unwrap());
    assert_eq!(plan.replicas().len(), 2);
    assert_eq!(streams_of(&plan, 0), (0, vec![0, 1], vec![0, 1, 2, 3]));
    assert_eq!(streams_of(&plan, 1), (1, vec![2, 3], vec![4, 5, 6, 7]));
    assert_eq!(plan.replicas()[0].weights, Weights::Original);
    assert_eq!(
        plan.replicas()[1].weights,
        Weights::Shared,
        "until a copy is made"
    );
    assert_eq!(
        (0..4).map(|s| plan.replica_of(s)).collect::<Vec<_>>(),
        [Some(0), Some(0), Some(1), Some(1)]
    );
    assert_eq!(plan.replica_of(4), None);
    assert_eq!(plan.copies(), 1);
    assert_eq!(
        plan.to_string(),
        "node 0: streams 0-1 on cpus 0-3, original; node 1: streams 2-3 on cpus 4-7, shares the original"
    );
}

#[test]
fn a_stream_across_nodes_belongs_to_the_node_of_most_of_its_cpus() {
    let t = Topology::from_sysfs(fixture("two-socket-smt-split"), 0..16).unwrap();
    let pool = CpuPool::all_in(&t).unwrap();
    // 3 streams over 8 CPUs: 0-2 (node 0), 3-5 (one on node 0, two on node 1), 6-7 (node 1).
    let plan = ReplicaPlan::new(&t, &pool.split(3).unwrap());
    assert_eq!(streams_of(&plan, 0).1, [0]);
    assert_eq!(streams_of(&plan, 1).1, [1, 2]);
    // A tie goes to the node of the stream's first CPU: 3 (node 0) and 4 (node 1).
    let tie = CpuPool::new_in(&t, [3, 4]).unwrap();
    let plan = ReplicaPlan::new(&t, &[tie]);
    assert_eq!(plan.replicas()[0].node, 0);
    let tie = CpuPool::new_in(&t, [4, 3]).unwrap();
    assert_eq!(ReplicaPlan::new(&t, &[tie]).replicas()[0].node, 1);
}

#[test]
fn nodes_are_numbered_as_they_first_appear_among_the_streams() {
    let t = Topology::from_sysfs(fixture("two-socket-smt-adjacent"), 0..16).unwrap();
    // Node 1's cores first: node 1 runs the original, node 0 gets the copy.
    let pool = CpuPool::new_in(&t, [8, 10, 0, 2]).unwrap();
    let plan = ReplicaPlan::new(&t, &pool.split(4).unwrap());
    assert_eq!(streams_of(&plan, 0), (1, vec![0, 1], vec![8, 10]));
    assert_eq!(streams_of(&plan, 1), (0, vec![2, 3], vec![0, 2]));
}

#[test]
fn one_node_means_one_copy() {
    for name in ["no-node", "sparse-offline"] {
        let t = Topology::from_sysfs(fixture(name), 0..16).unwrap();
        let pool = CpuPool::all_in(&t).unwrap();
        let plan = ReplicaPlan::new(&t, &pool.split(pool.len()).unwrap());
        assert_eq!(plan.replicas().len(), 1, "{name}");
        assert_eq!(
            plan.replicas()[0].streams,
            (0..pool.len()).collect::<Vec<_>>()
        );
        assert_eq!(plan.copies(), 1);
    }
}

// === Placement on the live machine ===

#[test]
fn memory_made_on_a_node_is_on_that_node() {
    let node0 = CpuPool::from_node(0).unwrap();
    let (weights, placement) = on_node(0, &node0, || {
        let cpus = affinity::current_cpus().unwrap();
        (vec![1.5f64; 1 << 18], cpus) // 2 MiB, written here
    })
    .unwrap();
    assert_eq!(weights.1, node0.cpus(), "made on the node's CPUs");
    let placed = page_nodes(&weights.0).unwrap();
    assert!(placed.all_on(0), "{placed}");
    assert_eq!(placed.absent, 0, "{placed}");
    assert!(placed.nodes[&0] >= 512, "{placed}");
    // The kernel takes a policy for a node it has (unless a seccomp profile refuses it).
    assert!(
        matches!(
            placement,
            Placement::NodePolicy | Placement::FirstTouch { .. }
        ),
        "{placement:?}"
    );
    // A node the kernel does not have: no policy, but the copy is still made (first touch).
    let (_, placement) = on_node(1000, &node0, || ()).unwrap();
    assert!(
        matches!(placement, Placement::FirstTouch { .. }),
        "{placement:?}"
    );
    // A panic in the closure is an error, not a crash.
    assert!(
        matches!(on_node(0, &node0, || panic!("boom")), Err(Error::Panicked(m)) if m.contains("boom"))
    );
}

#[test]
fn untouched_pages_are_absent() {
    let layout = std::alloc::Layout::from_size_align(1 << 22, 4096).unwrap();
    let zeroed: Vec<u8> = vec![0; layout.size()]; // calloc'd: untouched pages are not resident
    let placed = page_nodes(&zeroed).unwrap();
    assert_eq!(
        placed.nodes.values().sum::<usize>() + placed.absent,
        1024 + usize::from(zeroed.as_ptr() as usize % 4096 != 0),
        "{placed}"
    );
    assert!(page_nodes::<u8>(&[]).unwrap().nodes.is_empty());
}

// === Which copy each stream runs ===

/// A model with 1 MiB of weights that copies itself, recording the CPUs the copy was made on.
struct Weighted {
    weights: Vec<f64>,
    made_on: Option<Vec<usize>>,
    copy: Copy,
}

#[derive(Clone, Copy, PartialEq)]
enum Copy {
    Yes,
    No,
    Fails,
}

/// What one row of a call saw: its stream, the weights' address, where the copy was made,
/// and whether all the weights' pages are on node 0.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    stream: usize,
    weights: usize,
    made_on: Option<Vec<usize>>,
    on_node0: bool,
}

impl Module for Weighted {
    type Input = Rows<()>;
    type Output = Rows<Seen>;

    fn forward(&self, rows: Rows<()>) -> Result<Rows<Seen>, BoxError> {
        let seen = Seen {
            stream: current_stream().map_or(usize::MAX, |s| s.index()),
            weights: self.weights.as_ptr() as usize,
            made_on: self.made_on.clone(),
            on_node0: page_nodes(&self.weights)?.all_on(0),
        };
        Ok(Rows(vec![seen; rows.0.len()]))
    }

    fn replicate(&self) -> Option<Result<Weighted, BoxError>> {
        match self.copy {
            Copy::No => None,
            Copy::Fails => Some(Err("no memory for a copy".into())),
            Copy::Yes => Some(Ok(Weighted {
                weights: self.weights.clone(),
                made_on: Some(affinity::current_cpus().unwrap()),
                copy: Copy::Yes,
            })),
        }
    }
}

fn weighted(copy: Copy) -> Weighted {
    Weighted {
        weights: vec![0.25; 1 << 17],
        made_on: None,
        copy,
    }
}

fn build(copy: Copy, replicas: bool) -> Option<Result<MultiStreamModule<Weighted>, Error>> {
    let (t, pool) = two_nodes()?;
    Some(
        MultiStreamModule::builder(weighted(copy))
            .pool(pool)
            .num_streams(Streams::Count(2))
            .topology(t)
            .numa_replicas(replicas)
            .build(),
    )
}

#[test]
fn a_second_node_s_stream_runs_a_copy_made_on_its_cpus() {
    let Some(msm) = build(Copy::Yes, true) else {
        return;
    };
    let msm = msm.unwrap();
    let plan = msm.replicas();
    assert_eq!(plan.copies(), 2, "{plan}");
    assert!(
        matches!(plan.replicas()[1].weights, Weights::Copy(_)),
        "{plan}"
    );
    let seen = msm.forward_sync(Rows(vec![(); 2])).unwrap().0;
    assert_eq!(seen[0].stream, 0);
    assert_eq!(seen[1].stream, 1);
    assert_eq!(
        seen[0].weights,
        msm.model().weights.as_ptr() as usize,
        "node 0: the original"
    );
    assert_ne!(seen[1].weights, seen[0].weights, "node 1: its own copy");
    assert_eq!(seen[0].made_on, None);
    assert_eq!(
        seen[1].made_on.as_deref(),
        Some(msm.pools()[1].cpus()),
        "made on node 1's CPU"
    );
    assert!(
        seen[1].on_node0,
        "this machine has node 0 only: the copy's pages are there"
    );
    // Every call of stream 1 runs the copy, the caller-runs path included.
    for _ in 0..3 {
        let again = msm.forward_sync(Rows(vec![(); 2])).unwrap().0;
        assert_eq!(again[1].weights, seen[1].weights);
    }
}

#[test]
fn without_replicas_every_stream_runs_the_original() {
    let Some(msm) = build(Copy::Yes, false) else {
        return;
    };
    let msm = msm.unwrap();
    assert_eq!(msm.replicas().copies(), 1);
    assert_eq!(msm.replicas().replicas()[1].weights, Weights::Shared);
    let seen = msm.forward_sync(Rows(vec![(); 2])).unwrap().0;
    assert_eq!(seen[0].weights, seen[1].weights);
    assert_eq!(seen[1].made_on, None);
}

#[test]
fn a_model_without_a_copy_is_shared() {
    let Some(msm) = build(Copy::No, true) else {
        return;
    };
    let msm = msm.unwrap();
    assert_eq!(msm.replicas().copies(), 1);
    assert_eq!(msm.replicas().replicas()[1].weights, Weights::Shared);
    let seen = msm.forward_sync(Rows(vec![(); 2])).unwrap().0;
    assert_eq!(seen[0].weights, seen[1].weights);
}

#[test]
fn a_failing_copy_fails_the_build_naming_the_node() {
    let Some(result) = build(Copy::Fails, true) else {
        return;
    };
    match result {
        Err(e @ Error::Replicate { node: 1, .. }) => {
            assert!(e.to_string().contains("numa node 1"), "{e}");
            assert!(
                std::error::Error::source(&e)
                    .unwrap()
                    .to_string()
                    .contains("no memory"),
                "{e}"
            );
        }
        other => panic!(
            "expected Error::Replicate, got {:?}",
            other.map(|m| m.replicas().clone())
        ),
    }
}
