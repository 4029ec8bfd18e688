//! [`ReplicaPlan`]: which stream of a multi-stream module uses which copy of the weights.

use std::collections::BTreeMap;
use std::fmt;

use super::place::Placement;
use crate::pool::CpuPool;
use crate::topology::Topology;

/// Which copy of the weights each stream uses: one [`Replica`] per NUMA node the streams run
/// on, in the order the nodes first appear among the streams.
///
/// A stream belongs to the node most of its CPUs are on (ties: the node of its first CPU).
/// The first node's streams use the caller's model ([`Weights::Original`]); each other node's
/// streams use a copy made on that node when the module makes one ([`Weights::Copy`]), else
/// the original too ([`Weights::Shared`]).
///
/// ```
/// use corestream::numa::{ReplicaPlan, Weights};
/// use corestream::{CpuPool, Topology};
///
/// let topo = Topology::detect()?;
/// let streams = CpuPool::all_in(&topo)?.split(1)?;
/// let plan = ReplicaPlan::new(&topo, &streams);
/// assert_eq!(plan.replica_of(0), Some(0));
/// assert_eq!(plan.replicas()[0].weights, Weights::Original);
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPlan {
    replicas: Vec<Replica>,
    /// Stream index -> replica index.
    of_stream: Vec<usize>,
}

/// One copy of the weights and the streams that use it; see [`ReplicaPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replica {
    /// The NUMA node of its streams.
    pub node: usize,
    /// The indices of the streams that use it, ascending.
    pub streams: Vec<usize>,
    /// Those streams' CPUs, in stream order: where a copy for the node is made.
    pub cpus: Vec<usize>,
    /// Which weights the streams use.
    pub weights: Weights,
}

/// The weights the streams of one [`Replica`] use.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Weights {
    /// The model the caller built (the first node's streams).
    Original,
    /// A copy made on the node, placed as [`Placement`] says.
    Copy(Placement),
    /// The original, read across nodes: replicas are off, or the model cannot copy itself
    /// (its [`Module::replicate`](crate::Module::replicate) returns `None`).
    Shared,
}

impl ReplicaPlan {
    /// The plan for streams on `streams` (each stream's CPUs, in stream order) of the machine
    /// `topology`. Every copy after the first starts as [`Weights::Shared`] until one is made.
    pub fn new(topology: &Topology, streams: &[CpuPool]) -> ReplicaPlan {
        let mut replicas: Vec<Replica> = Vec::new();
        let mut of_stream = Vec::with_capacity(streams.len());
        for (index, pool) in streams.iter().enumerate() {
            let node = stream_node(topology, pool.cpus());
            let at = match replicas.iter().position(|r| r.node == node) {
                Some(at) => at,
                None => {
                    replicas.push(Replica {
                        node,
                        streams: Vec::new(),
                        cpus: Vec::new(),
                        weights: if replicas.is_empty() {
                            Weights::Original
                        } else {
                            Weights::Shared
                        },
                    });
                    replicas.len() - 1
                }
            };
            replicas[at].streams.push(index);
            replicas[at].cpus.extend_from_slice(pool.cpus());
            of_stream.push(at);
        }
        ReplicaPlan {
            replicas,
            of_stream,
        }
    }

    /// The copies, one per node, in the order their nodes first appear among the streams.
    pub fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    /// The index (into [`replicas`](Self::replicas)) of the copy stream `stream` uses.
    pub fn replica_of(&self, stream: usize) -> Option<usize> {
        self.of_stream.get(stream).copied()
    }

    /// How many copies of the weights are in memory: 1 plus the copies made.
    pub fn copies(&self) -> usize {
        1 + self
            .replicas
            .iter()
            .filter(|r| matches!(r.weights, Weights::Copy(_)))
            .count()
    }

    /// Records how replica `index`'s weights were provided.
    pub(crate) fn set_weights(&mut self, index: usize, weights: Weights) {
        if let Some(r) = self.replicas.get_mut(index) {
            r.weights = weights;
        }
    }
}

/// One line per copy: `node 1: streams 2-3 on cpus 8-15, copy (node policy)`.
impl fmt::Display for ReplicaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.replicas.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let weights = match &r.weights {
                Weights::Original => "original".to_owned(),
                Weights::Copy(p) => format!("copy ({p})"),
                Weights::Shared => "shares the original".to_owned(),
            };
            write!(
                f,
                "node {}: streams {} on cpus {}, {weights}",
                r.node,
                crate::cpulist::CpuList(&r.streams),
                crate::cpulist::CpuList(&r.cpus),
            )?;
        }
        Ok(())
    }
}

/// The node most of `cpus` are on; ties go to the node of the earliest CPU among them.
fn stream_node(topology: &Topology, cpus: &[usize]) -> usize {
    let node_of = |cpu: usize| topology.cpu(cpu).map_or(0, |c| c.node);
    let mut counts: BTreeMap<usize, (usize, usize)> = BTreeMap::new(); // node -> (count, first)
    for (at, &cpu) in cpus.iter().enumerate() {
        let entry = counts.entry(node_of(cpu)).or_insert((0, at));
        entry.0 += 1;
    }
    counts
        .into_iter()
        .max_by(|(_, (ca, fa)), (_, (cb, fb))| ca.cmp(cb).then(fb.cmp(fa)))
        .map_or(0, |(node, _)| node)
}
