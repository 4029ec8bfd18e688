//! Which profiles a sweep measures ([`Plan`], [`stream_counts`]) and which one it chooses
//! ([`choose`]).

use corestream::quota::CpuQuota;
use corestream::Streams;

use super::{Candidate, BUDGET_TOKENS_PER_ROW, MAX_STREAM_COUNTS, TIE};

/// The profiles a sweep measures (see the [module docs](super)).
///
/// ```
/// use corestream_serve::service::tune::Plan;
///
/// // 2 CPUs, batches of 16 rows, inputs of up to 128 tokens, no --max-batch-tokens.
/// let plan = Plan::new(2, None, 16, 128, None);
/// assert_eq!((plan.cpus, plan.streams.as_slice()), (2, &[2, 1][..]));
/// assert_eq!((plan.budget, plan.budgets.as_slice()), (2048, &[256, 512, 1024][..]));
/// assert_eq!(plan.len(), 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The CPUs shared out: the pool's, no more than the quota pays for.
    pub cpus: usize,
    /// The first round's stream counts, most first ([`stream_counts`]).
    pub streams: Vec<usize>,
    /// The first round's token budget: the configured one.
    pub budget: usize,
    /// The second round's budgets, smaller than `budget`, at the first round's best count.
    pub budgets: Vec<usize>,
}

impl Plan {
    /// The plan for a pool of `pool_cpus` CPUs under `quota`, batches of `max_batch` rows,
    /// inputs of up to `max_input_length` tokens, and the budget `fixed` when one is
    /// configured (`--max-batch-tokens`; `Some(0)` for batches by rows alone): then only the
    /// stream counts are swept.
    pub fn new(
        pool_cpus: usize,
        quota: Option<&CpuQuota>,
        max_batch: usize,
        max_input_length: usize,
        fixed: Option<usize>,
    ) -> Plan {
        let cpus = Streams::auto_count(pool_cpus.max(1), quota);
        let budget = fixed.unwrap_or(max_batch.saturating_mul(max_input_length));
        let mut budgets: Vec<usize> = match fixed {
            Some(_) => Vec::new(),
            None => BUDGET_TOKENS_PER_ROW
                .iter()
                .filter(|&&tokens| tokens < max_input_length)
                .map(|&tokens| max_batch.saturating_mul(tokens))
                .filter(|&b| b > 0 && b < budget)
                .collect(),
        };
        budgets.dedup();
        Plan {
            cpus,
            streams: stream_counts(cpus),
            budget,
            budgets,
        }
    }

    /// How many profiles the sweep measures.
    pub fn len(&self) -> usize {
        self.streams.len() + self.budgets.len()
    }

    /// Whether it measures none (never: there is always one stream count).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stream counts the sweep tries on `cpus` CPUs, most first: `cpus` (one CPU each), then
/// each time the largest divisor of `cpus` at most half the last (so every stream gets the
/// same share), down to 1, at most [`MAX_STREAM_COUNTS`] of them.
///
/// ```
/// use corestream_serve::service::tune::stream_counts;
///
/// assert_eq!(stream_counts(1), [1]);
/// assert_eq!(stream_counts(2), [2, 1]);
/// assert_eq!(stream_counts(6), [6, 3, 1]);
/// assert_eq!(stream_counts(16), [16, 8, 4, 2, 1]);
/// assert_eq!(stream_counts(64), [64, 32, 16, 8, 4]); // at most 5: up to 16 threads each
/// ```
pub fn stream_counts(cpus: usize) -> Vec<usize> {
    let cpus = cpus.max(1);
    let mut counts = vec![cpus];
    while let Some(&last) = counts.last() {
        if last == 1 || counts.len() == MAX_STREAM_COUNTS {
            break;
        }
        let next = (1..=last / 2)
            .rev()
            .find(|&d| cpus.is_multiple_of(d))
            .unwrap_or(1);
        counts.push(next);
    }
    counts
}

/// The best of `candidates` (see the [module docs](super)): the most rows per second, any
/// within [`TIE`] of it as good, and among those the most streams, then the largest budget
/// (what `--streams auto` serves, unless measurably slower). `None` when none answered a row.
///
/// ```
/// use corestream_serve::service::tune::{choose, Candidate};
/// use corestream_serve::service::Profile;
///
/// let at = |streams, tokens, rows_per_s| Candidate {
///     profile: Profile::new(4, streams, tokens),
///     rows_per_s,
/// };
/// let measured = [at(4, 2048, 1000.0), at(2, 2048, 1030.0), at(1, 2048, 600.0)];
/// // 4x1 is within 5% of 2x2: as good, and auto's.
/// assert_eq!(choose(&measured).unwrap().profile.streams, 4);
/// let measured = [at(4, 2048, 1000.0), at(2, 2048, 1200.0), at(1, 2048, 600.0)];
/// assert_eq!(choose(&measured).unwrap().profile.streams, 2);
/// assert!(choose(&[at(4, 2048, 0.0)]).is_none());
/// ```
pub fn choose(candidates: &[Candidate]) -> Option<&Candidate> {
    let best = candidates.iter().map(|c| c.rows_per_s).fold(0.0, f64::max);
    if best.is_nan() || best <= 0.0 {
        return None;
    }
    candidates
        .iter()
        .filter(|c| c.rows_per_s >= best * (1.0 - TIE))
        .max_by_key(|c| (c.profile.streams, c.profile.max_batch_tokens))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tune::Profile;

    /// A quota of `cpus` CPUs' worth of time.
    fn quota(cpus: f64) -> CpuQuota {
        CpuQuota {
            quota_us: (cpus * 100_000.0) as u64,
            period_us: 100_000,
            source: "cpu.max".into(),
        }
    }

    #[test]
    fn one_cpu_sweeps_budgets_only() {
        let plan = Plan::new(1, None, 16, 96, None);
        assert_eq!(plan.cpus, 1);
        assert_eq!(plan.streams, [1]);
        assert_eq!(plan.budget, 16 * 96);
        assert_eq!(plan.budgets, [256, 512, 1024]);
        assert_eq!(plan.len(), 4);
    }

    #[test]
    fn two_cpus_try_two_one_cpu_streams_and_one_two_cpu_stream() {
        let plan = Plan::new(2, None, 16, 512, None);
        assert_eq!(plan.streams, [2, 1]);
        assert_eq!(plan.budget, 8192);
        assert_eq!(plan.budgets, [256, 512, 1024]);
        assert_eq!(plan.len(), 5);
        let profiles: Vec<Profile> = plan
            .streams
            .iter()
            .map(|&s| Profile::new(plan.cpus, s, plan.budget))
            .collect();
        assert_eq!(
            profiles
                .iter()
                .map(|p| (p.streams, p.threads_per_stream))
                .collect::<Vec<_>>(),
            [(2, 1), (1, 2)]
        );
    }

    #[test]
    fn sixteen_cpus_halve_down_to_one_stream_within_eight_profiles() {
        let plan = Plan::new(16, None, 32, 256, None);
        assert_eq!(plan.cpus, 16);
        assert_eq!(plan.streams, [16, 8, 4, 2, 1]);
        assert_eq!(plan.budgets, [512, 1024, 2048]);
        assert_eq!(plan.len(), 8);
        for &s in &plan.streams {
            assert_eq!(16 % s, 0, "equal shares");
        }
    }

    #[test]
    fn a_quota_bounds_the_cpus_as_auto_does() {
        // 16 CPUs, a quota of 3: the 3 CPUs `auto` uses, as 3x1 or 1x3.
        let plan = Plan::new(16, Some(&quota(3.0)), 16, 128, None);
        assert_eq!(plan.cpus, 3);
        assert_eq!(plan.cpus, Streams::auto_count(16, Some(&quota(3.0))));
        assert_eq!(plan.streams, [3, 1]);
        assert_eq!(Profile::new(3, 1, 0).threads_per_stream, 3);
        // A fraction of a CPU pays for one.
        assert_eq!(Plan::new(16, Some(&quota(2.5)), 16, 128, None).cpus, 3);
        assert_eq!(Plan::new(16, Some(&quota(0.2)), 16, 128, None).streams, [1]);
        // A quota above the pool: the pool.
        assert_eq!(Plan::new(2, Some(&quota(8.0)), 16, 128, None).cpus, 2);
    }

    #[test]
    fn a_configured_budget_is_kept() {
        let plan = Plan::new(4, None, 16, 128, Some(1000));
        assert_eq!((plan.budget, plan.budgets.len()), (1000, 0));
        assert_eq!(plan.streams, [4, 2, 1]);
        // Batches by rows alone: no budget at all.
        let rows_alone = Plan::new(4, None, 16, 128, Some(0));
        assert_eq!((rows_alone.budget, rows_alone.budgets.len()), (0, 0));
    }

    #[test]
    fn short_inputs_leave_no_smaller_budget() {
        // Inputs of at most 16 tokens: max-batch x 16 is the default already.
        let plan = Plan::new(2, None, 16, 16, None);
        assert_eq!(plan.budgets, Vec::<usize>::new());
        assert_eq!(Plan::new(2, None, 16, 40, None).budgets, [256, 512]);
    }

    #[test]
    fn every_plan_has_at_most_eight_profiles_with_equal_shares() {
        for cpus in 1..=256 {
            let plan = Plan::new(cpus, None, 16, 512, None);
            assert!((1..=8).contains(&plan.len()), "{cpus}: {plan:?}");
            assert_eq!(plan.streams[0], cpus);
            for &s in &plan.streams {
                assert_eq!(cpus % s, 0, "{cpus}: {plan:?}");
            }
            assert!(plan.streams.windows(2).all(|w| w[1] <= w[0] / 2));
        }
    }

    fn at(streams: usize, tokens: usize, rows_per_s: f64) -> Candidate {
        Candidate {
            profile: Profile::new(2, streams, tokens),
            rows_per_s,
        }
    }

    #[test]
    fn the_fastest_wins_and_near_ties_go_to_more_streams_then_larger_budgets() {
        let clear = [at(2, 1536, 900.0), at(1, 1536, 1200.0)];
        assert_eq!(choose(&clear).unwrap().profile.streams, 1);
        let tie = [at(2, 1536, 960.0), at(1, 1536, 1000.0)];
        assert_eq!(choose(&tie).unwrap().profile.streams, 2);
        let budgets = [at(2, 1536, 1000.0), at(2, 256, 1040.0), at(2, 512, 1200.0)];
        assert_eq!(choose(&budgets).unwrap().profile.max_batch_tokens, 512);
        let near = [at(2, 1536, 1000.0), at(2, 256, 1040.0)];
        assert_eq!(choose(&near).unwrap().profile.max_batch_tokens, 1536);
        assert!(choose(&[]).is_none());
        assert!(choose(&[at(2, 1536, 0.0), at(1, 1536, f64::NAN)]).is_none());
    }
}
