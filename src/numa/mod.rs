//! NUMA: one copy of the weights per node.
//!
//! On a machine with several NUMA nodes, a stream on node 1 that reads weights placed in node
//! 0's memory pays the interconnect on every layer. A [`MultiStreamModule`] whose streams span
//! nodes therefore gives each node after the first its own copy of the model, made by the
//! model's [`Module::replicate`] on a thread pinned to that node's stream CPUs with the
//! thread's memory policy preferring that node (so every page the copy allocates, and first
//! touches, lands there), and runs each stream on its node's copy. The first node's streams use
//! the model the caller built. Models without the hook (closures, `Arc<M>`) keep one copy for
//! all nodes, as does [`MultiStreamModuleBuilder::numa_replicas(false)`].
//!
//! - [`ReplicaPlan`] (plan.rs): which stream uses which copy, from the [`Topology`] and the
//!   streams' CPUs; pure, so it is tested on fake machines.
//! - [`on_node`] (place.rs): runs a closure where its allocations land on a node.
//! - [`page_nodes`] (memory.rs, maps.rs): where the pages of a buffer are, from the kernel
//!   (`move_pages`, else `/proc/self/numa_maps`): how tests check the placement.
//!
//! The memory-policy system calls live in memory.rs, the only unsafe code of this module.
//!
//! [`MultiStreamModule`]: crate::MultiStreamModule
//! [`MultiStreamModuleBuilder::numa_replicas(false)`]: crate::MultiStreamModuleBuilder::numa_replicas
//! [`Module::replicate`]: crate::Module::replicate
//! [`Topology`]: crate::Topology

mod maps;
mod memory;
mod place;
mod plan;

pub use memory::{page_nodes, PageNodes, PageSource};
pub use place::{on_node, Placement};
pub use plan::{Replica, ReplicaPlan, Weights};
