//! [`MultiStreamModule`]: one shared model on N pinned streams; inputs are split by a [`Hint`],
//! run concurrently, and the outputs concatenated (IPEX's `MultiStreamModule`).
//!
//! - this file: the module and its calls;
//! - streams.rs: [`Streams`], how many streams;
//! - builder.rs: [`MultiStreamModuleBuilder`], which starts them;
//! - replicas.rs: each NUMA node's copy of the model (see [`numa`](crate::numa));
//! - future.rs: [`PartsFuture`] and [`ForwardFuture`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::batch::{split_sizes, Batch, Hint};
use crate::error::{Error, Result};
use crate::future::TaskFuture;
use crate::idle;
use crate::module::{Infer, Module};
use crate::pool::CpuPool;
use crate::stream::StreamStats;
use crate::task::Task;

mod builder;
mod future;
mod replicas;
mod streams;

pub use builder::MultiStreamModuleBuilder;
pub use future::{ForwardFuture, PartsFuture};
pub use streams::Streams;

use crate::numa::ReplicaPlan;
use replicas::Replicas;

/// One model, shared (never copied) by N streams pinned to disjoint slices of a pool.
///
/// [`forward`](Self::forward) splits the input's batch by the input [`Hint`] (`b / n` rows per
/// stream, the first `b % n` streams one more, only the first `b` streams when `b < n`), runs the
/// parts concurrently and concatenates the outputs by the output hint. With every stream count,
/// including 1, `forward` (async) runs the parts on stream threads, never on the caller, so the
/// caller may be an async reactor; the blocking [`forward_sync`](Self::forward_sync) runs the
/// part of the one-CPU stream whose CPU the caller is on itself (see
/// [`caller_runs`](MultiStreamModuleBuilder::caller_runs)). The module is `Send + Sync`: concurrent calls interleave on the streams and each
/// caller gets its own rows back.
///
/// ```
/// use corestream::ndarray::{Array, Array2};
/// use corestream::{module_fn, CpuPool, MultiStreamModule, Streams};
///
/// let model = module_fn(|x: Array2<f32>| Ok(x.mapv(|v| v + 1.0)));
/// let msm = MultiStreamModule::builder(model)
///     .pool(CpuPool::all()?)
///     .num_streams(Streams::Auto)
///     .build()?;
/// let x = Array::from_shape_fn((8, 4), |(i, j)| (i * 4 + j) as f32);
/// let y = msm.forward_sync(x.clone())?;
/// assert_eq!(y, x + 1.0);
/// # Ok::<(), corestream::Error>(())
/// ```
pub struct MultiStreamModule<M: Module> {
    tasks: Vec<Task<M>>,
    /// Each stream's CPUs, shared with the futures (a waiting caller does not poll on them).
    stream_pools: Arc<[CpuPool]>,
    /// The model of each stream: the caller's, or its node's copy.
    replicas: Replicas<M>,
    input_hint: Hint,
    output_hint: Hint,
    caller_runs: bool,
}

impl<M: Module> fmt::Debug for MultiStreamModule<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiStreamModule")
            .field("pools", &self.pools())
            .field("input_hint", &self.input_hint)
            .field("output_hint", &self.output_hint)
            .finish_non_exhaustive()
    }
}

impl<M: Module> MultiStreamModule<M> {
    /// A builder; see [`MultiStreamModuleBuilder`].
    pub fn builder(model: M) -> MultiStreamModuleBuilder<M> {
        MultiStreamModuleBuilder::new(Arc::new(model))
    }

    /// The number of streams (after resolving [`Streams::Auto`]).
    pub fn num_streams(&self) -> usize {
        self.tasks.len()
    }

    /// Each stream's CPUs, in stream order.
    pub fn pools(&self) -> Vec<CpuPool> {
        self.stream_pools.to_vec()
    }

    /// The shared model: the one the builder got, which the streams of the first NUMA node
    /// run (those of other nodes may run copies of it: see [`replicas`](Self::replicas)).
    pub fn model(&self) -> &Arc<M> {
        &self.replicas.models[0]
    }

    /// Which copy of the model each stream runs: one per NUMA node the streams are on (see
    /// [`numa`](crate::numa)); on a one-node machine, one copy for all.
    ///
    /// ```
    /// use corestream::{module_fn, CpuPool, MultiStreamModule};
    ///
    /// let msm = MultiStreamModule::builder(module_fn(|x: Vec<f32>| Ok(x)))
    ///     .pool(CpuPool::all()?)
    ///     .build()?;
    /// assert_eq!(msm.replicas().replica_of(0), Some(0));
    /// assert_eq!(msm.replicas().copies(), 1); // a closure has no copy to offer
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn replicas(&self) -> &ReplicaPlan {
        &self.replicas.plan
    }

    /// The streams, in order (for schedulers such as the batcher that feed streams directly).
    pub(crate) fn tasks(&self) -> &[Task<M>] {
        &self.tasks
    }

    /// Each stream's counters, in stream order.
    pub fn stats(&self) -> Vec<StreamStats> {
        self.tasks.iter().map(Task::stats).collect()
    }

    /// The input hint.
    pub fn input_hint(&self) -> &Hint {
        &self.input_hint
    }

    /// The output hint.
    pub fn output_hint(&self) -> &Hint {
        &self.output_hint
    }
}

impl<M> MultiStreamModule<M>
where
    M: Module,
    M::Input: Batch,
{
    /// Splits `input`, queues the parts on the streams now, and returns the future of the
    /// per-stream outputs in stream order, one per stream actually used (IPEX's
    /// `concat_output=False`).
    pub fn forward_parts(&self, input: M::Input) -> PartsFuture<M::Output> {
        let pools = Arc::clone(&self.stream_pools);
        match self.dispatch(input) {
            Ok(futures) => PartsFuture::running(futures, pools),
            Err(e) => PartsFuture::failed(e, pools),
        }
    }

    fn dispatch(&self, input: M::Input) -> Result<Vec<TaskFuture<M::Output>>> {
        let parts = self.split(input)?;
        Ok(self
            .tasks
            .iter()
            .zip(parts)
            .map(|(task, part)| task.submit(part))
            .collect())
    }

    /// The input's parts, one per stream used, by the input hint.
    fn split(&self, input: M::Input) -> Result<Vec<M::Input>> {
        let rows = match input.batch_size(&self.input_hint)? {
            Some(rows) => rows,
            None => {
                return Err(Error::NoSplitDim {
                    hint: self.input_hint.clone(),
                })
            }
        };
        if rows == 0 {
            return Err(Error::EmptyBatch);
        }
        let sizes = split_sizes(rows, self.tasks.len());
        input.split(&self.input_hint, &sizes)
    }

    /// The per-stream outputs of one blocking call. When the calling thread runs on the one
    /// CPU of a stream that gets a part (and [`caller_runs`](MultiStreamModuleBuilder::caller_runs)
    /// is on), it runs that part itself instead of handing it over and waiting for that CPU;
    /// the other parts go to their streams as usual.
    fn parts_sync(&self, input: M::Input) -> Result<Vec<M::Output>> {
        let parts = self.split(input)?;
        let used = parts.len();
        // The caller's stream, if it gets a part (fewer rows than streams leave some out).
        let here = match self.caller_runs {
            true => crate::affinity::current_cpu()
                .and_then(|cpu| self.stream_pools.iter().position(|p| p.cpus() == [cpu]))
                .filter(|&k| k < used),
            false => None,
        };
        let mut mine = None;
        let mut futures = Vec::with_capacity(used);
        for (i, (task, part)) in self.tasks.iter().zip(parts).enumerate() {
            if Some(i) == here {
                mine = Some(part);
            } else {
                futures.push(task.submit(part));
            }
        }
        let own = match here.zip(mine) {
            // On error the other parts' futures drop here: those not started are skipped.
            Some((k, part)) => Some((k, self.tasks[k].run_here(self.replicas.model_of(k), part)?)),
            None => None,
        };
        let others = self.stream_pools[..used]
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != here)
            .map(|(_, pool)| pool.cpus());
        let mut outputs = self.wait_all(futures, others)?;
        if let Some((k, output)) = own {
            outputs.insert(k, output);
        }
        Ok(outputs)
    }

    /// Waits for `futures` in order, the parts of the streams on `cpus`: polls them (reading
    /// only) unless the caller runs on one of those CPUs, then parks.
    fn wait_all<'a>(
        &self,
        mut futures: Vec<TaskFuture<M::Output>>,
        cpus: impl Iterator<Item = &'a [usize]>,
    ) -> Result<Vec<M::Output>> {
        let Some(first) = futures.first() else {
            return Ok(Vec::new());
        };
        let window = idle::caller_window(first.spin(), cpus);
        let mut outputs: Vec<Option<M::Output>> = futures.iter().map(|_| None).collect();
        let mut left = futures.len();
        let polled = idle::poll_as_caller(window, || {
            for (slot, future) in outputs.iter_mut().zip(futures.iter_mut()) {
                if slot.is_none() {
                    match future.try_take() {
                        Some(Ok(output)) => {
                            *slot = Some(output);
                            left -= 1;
                        }
                        Some(Err(e)) => return Some(Err(e)),
                        None => {}
                    }
                }
            }
            (left == 0).then_some(Ok(()))
        });
        match polled {
            Some(Err(e)) => return Err(e),
            Some(Ok(())) => {}
            None => {
                // Park on the parts still out; their outputs fill the empty slots in order.
                let rest = futures
                    .into_iter()
                    .zip(&outputs)
                    .filter(|(_, slot)| slot.is_none())
                    .map(|(future, _)| future);
                let mut late = idle::block_on(futures::future::try_join_all(rest), Duration::ZERO)?
                    .into_iter();
                for slot in outputs.iter_mut().filter(|slot| slot.is_none()) {
                    *slot = late.next();
                }
            }
        }
        outputs
            .into_iter()
            .map(|output| output.ok_or(Error::Shutdown))
            .collect()
    }
}

impl<M> MultiStreamModule<M>
where
    M: Module,
    M::Input: Batch,
    M::Output: Batch,
{
    /// Splits `input` by the input hint, queues the parts on the streams now, and returns the
    /// future of the concatenated output.
    ///
    /// The future resolves to the first error of any part ([`Error::Module`],
    /// [`Error::Panicked`]), or to a split or concat error; when one part fails the others'
    /// results are dropped. Bad input errors ([`Error::NoSplitDim`], [`Error::EmptyBatch`],
    /// [`Error::BatchMismatch`], [`Error::DimOutOfRange`], [`Error::HintMismatch`]) resolve at
    /// once without running anything.
    pub fn forward(&self, input: M::Input) -> ForwardFuture<M::Output> {
        ForwardFuture::new(self.forward_parts(input), self.output_hint.clone())
    }

    /// [`forward`](Self::forward), blocking the calling thread until the output is there.
    ///
    /// When the calling thread runs on the CPU of a one-CPU stream that gets a part, it runs
    /// that part itself, as that stream (see
    /// [`caller_runs`](MultiStreamModuleBuilder::caller_runs)): the thread blocks anyway, and
    /// the stream would need the very CPU the caller holds.
    ///
    /// # Errors
    ///
    /// As [`forward`](Self::forward).
    pub fn forward_sync(&self, input: M::Input) -> Result<M::Output> {
        let parts = self.parts_sync(input)?;
        M::Output::concat(parts, &self.output_hint)
    }
}

#[async_trait::async_trait]
impl<M> Infer<M::Input, M::Output> for MultiStreamModule<M>
where
    M: Module,
    M::Input: Batch,
    M::Output: Batch,
{
    async fn infer(&self, input: M::Input) -> Result<M::Output> {
        self.forward(input).await
    }
}
