//! `--streams tune`: before a model serves, a short sweep on the model itself picks how its
//! CPUs are shared out (how many streams, so how many threads each) and its token budget.
//!
//! The sweep runs on the CPUs `--streams auto` would use (the model's share, no more than the
//! CPU quota pays for: [`Streams::auto_count`]), in two rounds ([`Plan`]):
//!
//! 1. every stream count of [`stream_counts`] (all CPUs one stream each, then halves: on 16
//!    CPUs 16x1, 8x2, 4x4, 2x8, 1x16 threads; on 2 CPUs 2x1 and 1x2), at the configured token
//!    budget (`--max-batch-tokens`, else max-batch x the longest input);
//! 2. at the best stream count, the smaller budgets of max-batch x 16, 32 and 64 tokens (those
//!    below the configured one; none when `--max-batch-tokens` is given).
//!
//! That is at most [`MAX_STREAM_COUNTS`] + [`BUDGET_TOKENS_PER_ROW`]`.len()` = 8 profiles.
//! First one call on one stream pays what the model's first stream call in the process costs
//! once (ONNX Runtime: the weights its stream sessions share), which is no profile's. Then each
//! profile gets an equal slot of what is left of the sweep's time (at least half of it), the
//! slots ending at fixed times so that starting and stopping streams does not add up: its
//! `Batcher` is built on the model as serving builds it (the same code,
//! [`load::batcher`](crate::service::load)), fed a closed loop of one-row requests (token ids
//! the model's tokenizer gives for [`PROBES`], sentences of 13, 18 and 48 BERT tokens),
//! enough of them at once to keep every stream's batches full, and dropped. The first answers
//! (about one batch per stream, or those of the first half of the slot) warm it up (each
//! stream's first call makes its ONNX Runtime session); the requests sent in the rest of the
//! slot are timed, and the profile's score is its rows per second by Little's law: the
//! requests always out over their mean time (each timed request counts whole, wherever the
//! batches begin and end). A profile too slow to answer them within its slot measures on
//! until it has (for up to [`SLOW_SLOTS`] slots or the sweep's whole time), so that a slow
//! model, or a debug build, still gets a score, and the sweep then takes longer than asked
//! (`/info` says how long it took). The tuning batchers record no metrics.
//!
//! The choice ([`choose`]): the most rows per second, where a profile within [`TIE`] of the
//! best is as good; among those as good, the one nearest what `--streams auto` serves: the
//! most streams, then the largest budget. The sweep departs from `auto` only for a profile
//! measured faster by more than the noise: on a quiet 2-CPU machine 2x1 and 1x2 measured
//! within a few percent of each other on MiniLM-L3, and beside a busy neighbour 1x2 lost by
//! half (a stream of several threads waits for its slowest CPU), while `--width adaptive`
//! already answers a lone request on every CPU. Then the serving batcher is built once, with
//! the choice.
//!
//! Files: this one holds the sweep; `plan.rs` which profiles it measures and which one it
//! chooses; `measure.rs` how one profile is measured; `report.rs` what `/info` and the log
//! show.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::quota::CpuQuota;
use corestream::{CpuPool, Module, Streams};

use crate::model::{Encoded, TextTokenizer};
use crate::service::load::{self, BatchOptions};

mod measure;
mod plan;
mod report;

pub use plan::{choose, stream_counts, Plan};
pub use report::{Candidate, Profile, Tuning};

/// Most stream counts the first round measures (the most streams first).
pub const MAX_STREAM_COUNTS: usize = 5;

/// The smaller token budgets of the second round: max-batch x these tokens per row.
pub const BUDGET_TOKENS_PER_ROW: [usize; 3] = [16, 32, 64];

/// How close to the best rows per second a profile counts as as good (a fraction of it): about
/// the noise of a slot of a second (on a 2-CPU virtual machine, MiniLM-L3, one profile
/// measured five times in 1.6 s slots spread about 4% around its mean).
pub const TIE: f64 = 0.05;

/// A profile too slow to answer its timed requests within its slot measures on until they are
/// answered, for up to this many slots or the sweep's whole time, whichever is longer (then it
/// scores what it has, 0 if none was answered).
pub const SLOW_SLOTS: u32 = 3;

/// The texts whose token ids the sweep sends: 13, 18 and 48 tokens with MiniLM's (BERT's)
/// tokenizer, special tokens included: short queries and passages as an embedding service
/// gets them.
pub const PROBES: [&str; 3] = [
    "How do I reset my password on the new portal?",
    "The quarterly report shows that revenue grew by twelve percent while operating costs \
     stayed flat.",
    "Customers in the northern region reported delivery delays of up to three days during the \
     holiday period, mostly because two distribution centres ran short of drivers; the \
     logistics team has since added weekend shifts and signed a second carrier to absorb \
     the peaks.",
];

/// Measures the profiles of the [`Plan`] for `options`' pool on `model` (named `model_id`,
/// tokenised by `tokenizer`) for `time` in all, and returns the options of the chosen profile
/// (its CPUs, streams and budget; no more tuning) and the report, which it also logs.
///
/// # Errors
///
/// The probes cannot be tokenised, the streams cannot start, or the model fails on a probe.
pub fn sweep<M>(
    model: &Arc<M>,
    tokenizer: &TextTokenizer,
    model_id: &str,
    options: &BatchOptions,
    time: Duration,
) -> corestream::Result<(BatchOptions, Tuning)>
where
    M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
{
    let started = Instant::now();
    let max_input_length = tokenizer.max_input_length();
    let fixed = if options.count_only {
        Some(0)
    } else {
        options.max_batch_tokens
    };
    let plan = Plan::new(
        options.pool.len(),
        CpuQuota::detect().as_ref(),
        options.max_batch,
        max_input_length,
        fixed,
    );
    let pool = CpuPool::new(options.pool.cpus()[..plan.cpus].iter().copied())?;
    let probes = measure::probes(tokenizer)?;
    let options_of = |profile: &Profile| BatchOptions {
        pool: pool.clone(),
        streams: Streams::Count(profile.streams),
        max_batch_tokens: (!options.count_only).then_some(profile.max_batch_tokens),
        tune: None,
        ..options.clone()
    };
    let name = format!("{model_id} (tuning)");
    // The first stream call in the process pays a one-time cost (ONNX Runtime: the shared
    // weights its stream sessions are made from; 0.3 s for MiniLM-L3), which is no profile's:
    // one call on one stream pays it before the first slot.
    let first = metrics::with_local_recorder(&metrics::NoopRecorder, || {
        let options = options_of(&Profile::new(plan.cpus, 1, plan.budget));
        load::batcher(Arc::clone(model), &name, &options, max_input_length)
    })?;
    first
        .infer(Rows(vec![probes[0].clone()]))
        .wait()
        .map_err(|e| {
            corestream::Error::InvalidConfig(format!(
                "streams tuning: the model failed on a probe: {e}"
            ))
        })?;
    drop(first);
    // The slots: what is left of `time` (at least half of it), in equal shares, each ending
    // at a fixed time, so that starting and stopping the streams does not add up.
    let warm = Instant::now();
    let slot = time
        .saturating_sub(warm - started)
        .max(time / 2)
        .div_f64(plan.len() as f64);
    let run = |index: u32, profile: Profile| -> corestream::Result<Candidate> {
        let start = Instant::now();
        let deadline = (warm + slot * (index + 1)).max(start + slot / 2);
        let options = options_of(&profile);
        // Built as serving builds it, but its metrics go nowhere: /metrics counts traffic.
        let batcher = metrics::with_local_recorder(&metrics::NoopRecorder, || {
            load::batcher(Arc::clone(model), &name, &options, max_input_length)
        })?;
        // Two batches' worth of rows per stream: one running, one waiting.
        let per_stream = options.max_batch.max(1);
        let in_flight = (2 * profile.streams * per_stream).min(options.queue.max(1));
        let warm_answers = (profile.streams * per_stream).min(in_flight);
        let rows_per_s = measure::measure(
            &batcher,
            &probes,
            in_flight,
            warm_answers,
            start + (deadline - start) / 2,
            deadline,
            deadline + time.max(slot * SLOW_SLOTS),
        )?;
        drop(batcher);
        Ok(Candidate {
            profile,
            rows_per_s: (rows_per_s * 10.0).round() / 10.0,
        })
    };
    let mut candidates = Vec::with_capacity(plan.len());
    for &streams in &plan.streams {
        let index = candidates.len() as u32;
        candidates.push(run(index, Profile::new(plan.cpus, streams, plan.budget))?);
    }
    let streams = choose(&candidates).map_or(plan.cpus, |c| c.profile.streams);
    for &budget in &plan.budgets {
        let index = candidates.len() as u32;
        candidates.push(run(index, Profile::new(plan.cpus, streams, budget))?);
    }
    let at_best: Vec<Candidate> = candidates
        .iter()
        .filter(|c| c.profile.streams == streams)
        .copied()
        .collect();
    let chosen = match choose(&at_best) {
        Some(best) => best.profile,
        None => {
            tracing::warn!(
                model = model_id,
                "streams tuning: no profile answered a row in its slot (raise --tune-seconds); \
                 serving one stream per CPU"
            );
            Profile::new(plan.cpus, plan.cpus, plan.budget)
        }
    };
    let tuning = Tuning {
        chosen,
        candidates,
        cpus: plan.cpus,
        seconds: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    };
    tracing::info!(
        model = model_id,
        cpus = tuning.cpus,
        seconds = tuning.seconds,
        chosen = %tuning.chosen,
        candidates = %tuning.table(),
        "streams tuned: chose {} of {} (streams x threads per stream / token budget)",
        chosen,
        tuning.table(),
    );
    Ok((options_of(&chosen), tuning))
}
