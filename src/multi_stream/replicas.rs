//! Each NUMA node's copy of a [`MultiStreamModule`](super::MultiStreamModule)'s model: the
//! [`ReplicaPlan`] carried out (see [`numa`](crate::numa)).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::module::Module;
use crate::numa::{self, ReplicaPlan, Weights};
use crate::pool::CpuPool;
use crate::topology::Topology;

/// The models of a module's streams: one per copy of the plan.
pub(super) struct Replicas<M> {
    pub(super) plan: ReplicaPlan,
    /// By replica index: `models[plan.replica_of(stream)]` is a stream's model.
    pub(super) models: Vec<Arc<M>>,
}

impl<M: Module> Replicas<M> {
    /// Plans the copies of `model` for streams on `streams` of `topology`, and makes each
    /// node's after the first on that node when `enabled` (else, or when the model offers
    /// none, those streams share `model`).
    pub(super) fn make(
        model: &Arc<M>,
        topology: &Topology,
        streams: &[CpuPool],
        enabled: bool,
    ) -> Result<Replicas<M>> {
        let mut plan = ReplicaPlan::new(topology, streams);
        let mut models = vec![Arc::clone(model)];
        let others: Vec<(usize, usize, Vec<usize>)> = plan
            .replicas()
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, r)| (i, r.node, r.cpus.clone()))
            .collect();
        for (index, node, cpus) in others {
            if !enabled {
                models.push(Arc::clone(model));
                continue;
            }
            let cpus = CpuPool::new_in(topology, cpus)?;
            let (copy, placement) = numa::on_node(node, &cpus, || M::replicate(model))?;
            match copy {
                Some(Ok(copy)) => {
                    models.push(Arc::new(copy));
                    plan.set_weights(index, Weights::Copy(placement));
                }
                Some(Err(source)) => return Err(Error::Replicate { node, source }),
                None => models.push(Arc::clone(model)),
            }
        }
        Ok(Replicas { plan, models })
    }

    /// The model of stream `stream`.
    pub(super) fn model_of(&self, stream: usize) -> &Arc<M> {
        let index = self.plan.replica_of(stream).unwrap_or(0);
        &self.models[index.min(self.models.len() - 1)]
    }
}
