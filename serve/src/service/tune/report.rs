//! What a sweep reports: each [`Profile`] measured as a [`Candidate`], and the [`Tuning`] that
//! `/info` and the log show.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a model is served: streams, each with its share of the CPUs, and the token budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    /// Streams.
    pub streams: usize,
    /// CPUs (threads) of each stream.
    pub threads_per_stream: usize,
    /// Most tokens (rows x longest row) in one model call (0: batches by rows alone).
    pub max_batch_tokens: usize,
}

impl Profile {
    /// `streams` streams sharing `cpus` CPUs, with a budget of `max_batch_tokens`.
    pub fn new(cpus: usize, streams: usize, max_batch_tokens: usize) -> Profile {
        Profile {
            streams,
            threads_per_stream: cpus / streams.max(1),
            max_batch_tokens,
        }
    }
}

/// `2x1/1536`: streams x threads per stream / token budget.
impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{}/{}",
            self.streams, self.threads_per_stream, self.max_batch_tokens
        )
    }
}

/// One profile the sweep measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Candidate {
    /// The profile.
    #[serde(flatten)]
    pub profile: Profile,
    /// Rows answered per second under load, after the warm-up.
    pub rows_per_s: f64,
}

/// `2x1/1536 1234 rows/s`.
impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:.0} rows/s", self.profile, self.rows_per_s)
    }
}

/// What `--streams tune` measured and chose (`/info`'s `tuning`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tuning {
    /// The profile that serves: one of `candidates`.
    pub chosen: Profile,
    /// Every profile measured, in the order measured.
    pub candidates: Vec<Candidate>,
    /// The CPUs the profiles shared out (those `--streams auto` uses).
    pub cpus: usize,
    /// How long the sweep took, in seconds: `--tune-seconds`, plus starting and stopping the
    /// streams, plus the time slow profiles measured on (see [`SLOW_SLOTS`](super::SLOW_SLOTS)).
    pub seconds: f64,
}

impl Tuning {
    /// The candidates as the log shows them: `2x1/1536 1234 rows/s, 1x2/1536 987 rows/s`.
    pub fn table(&self) -> String {
        self.candidates
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(streams: usize, tokens: usize, rows_per_s: f64) -> Candidate {
        Candidate {
            profile: Profile::new(2, streams, tokens),
            rows_per_s,
        }
    }

    #[test]
    fn the_report_reads_as_the_log_shows_it() {
        let tuning = Tuning {
            chosen: at(2, 1536, 0.0).profile,
            candidates: vec![at(2, 1536, 1234.4), at(1, 1536, 987.6)],
            cpus: 2,
            seconds: 4.1,
        };
        assert_eq!(tuning.table(), "2x1/1536 1234 rows/s, 1x2/1536 988 rows/s");
        let json = serde_json::to_value(&tuning).unwrap();
        assert_eq!(json["chosen"]["threads_per_stream"], 1);
        assert_eq!(json["candidates"][1]["streams"], 1);
        assert_eq!(json["candidates"][1]["rows_per_s"], 987.6);
        let back: Tuning = serde_json::from_value(json).unwrap();
        assert_eq!(back, tuning);
    }
}
