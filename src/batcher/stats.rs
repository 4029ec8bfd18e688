//! [`BatcherStats`]: a batcher's counters, and their Prometheus text exposition.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets; a last `+Inf` bucket is implied.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The batcher's own counters (what [`BatcherStats`] snapshots).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) rejected: AtomicU64,
    pub(super) cancelled: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    wide_batches: AtomicU64,
    /// `batch_sizes[i]`: batches of `i + 1` requests (the last slot counts larger ones too).
    batch_sizes: Vec<AtomicU64>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
    batch_rows: AtomicU64,
    batch_tokens: AtomicU64,
    batch_tokens_unpadded: AtomicU64,
    largest_batch_tokens: AtomicU64,
}

/// What one batch was made of, as counted (see [`Counters::batch`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct BatchShape {
    pub(super) requests: usize,
    pub(super) rows: usize,
    /// Rows x the longest padded length (zero without a token function).
    pub(super) tokens: usize,
    /// Each row's own length, summed (zero without a token function).
    pub(super) unpadded: usize,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Counters {
    pub(super) fn new(max_batch: usize) -> Counters {
        Counters {
            batch_sizes: (0..max_batch).map(|_| AtomicU64::new(0)).collect(),
            ..Counters::default()
        }
    }

    /// Counts one batch taken from the queue.
    pub(super) fn batch(&self, shape: BatchShape) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let slot = shape
            .requests
            .saturating_sub(1)
            .min(self.batch_sizes.len() - 1);
        self.batch_sizes[slot].fetch_add(1, Ordering::Relaxed);
        add(&self.batch_rows, shape.rows as u64);
        add(&self.batch_tokens, shape.tokens as u64);
        add(&self.batch_tokens_unpadded, shape.unpadded as u64);
        self.largest_batch_tokens
            .fetch_max(shape.tokens as u64, Ordering::Relaxed);
    }

    /// Counts a batch that runs wide (it is counted by [`batch`](Self::batch) too).
    pub(super) fn wide_batch(&self) {
        self.wide_batches.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts answers given together, from each one's latency and success: one update of
    /// each shared counter per call, not per request.
    pub(super) fn answers(&self, answers: impl IntoIterator<Item = (Duration, bool)>) {
        let mut completed = 0;
        let mut failed = 0;
        let mut micros = 0;
        let mut buckets = [0u64; LATENCY_BUCKETS.len() + 1];
        for (latency, ok) in answers {
            if ok {
                completed += 1;
            } else {
                failed += 1;
            }
            let secs = latency.as_secs_f64();
            let bucket = LATENCY_BUCKETS
                .iter()
                .position(|&le| secs <= le)
                .unwrap_or(LATENCY_BUCKETS.len());
            buckets[bucket] += 1;
            micros += latency.as_micros() as u64;
        }
        add(&self.completed, completed);
        add(&self.failed, failed);
        for (counter, n) in self.latency_buckets.iter().zip(buckets) {
            add(counter, n);
        }
        add(&self.latency_micros, micros);
    }

    pub(super) fn snapshot(&self, name: &str, queue_depth: usize, accepted: u64) -> BatcherStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BatcherStats {
            name: name.to_owned(),
            queue_depth,
            accepted,
            rejected: load(&self.rejected),
            cancelled: load(&self.cancelled),
            completed: load(&self.completed),
            failed: load(&self.failed),
            batches: load(&self.batches),
            wide_batches: load(&self.wide_batches),
            batch_sizes: self.batch_sizes.iter().map(load).collect(),
            latency_buckets: self.latency_buckets.iter().map(load).collect(),
            latency_sum_seconds: load(&self.latency_micros) as f64 / 1e6,
            batch_rows: load(&self.batch_rows),
            batch_tokens: load(&self.batch_tokens),
            batch_tokens_unpadded: load(&self.batch_tokens_unpadded),
            largest_batch_tokens: load(&self.largest_batch_tokens),
        }
    }
}

/// A snapshot of a batcher's counters (see [`Batcher::stats`](crate::Batcher::stats)).
///
/// ```
/// use corestream::ndarray::array;
/// use corestream::{module_fn, Batcher, CpuPool, MultiStreamModule};
///
/// let model = module_fn(|x: corestream::ndarray::Array2<f32>| Ok(x + 1.0));
/// let msm = MultiStreamModule::builder(model).pool(CpuPool::all()?).build()?;
/// let batcher = Batcher::builder(msm).name("plus-one").build()?;
/// batcher.infer(array![[1.0f32]]).wait()?;
/// let stats = batcher.stats();
/// assert_eq!((stats.name.as_str(), stats.completed, stats.batch_rows), ("plus-one", 1, 1));
/// # Ok::<(), corestream::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatcherStats {
    /// The batcher's name (see [`BatcherBuilder::name`](crate::BatcherBuilder::name)).
    pub name: String,
    /// Requests waiting now.
    pub queue_depth: usize,
    /// Requests accepted into the queue.
    pub accepted: u64,
    /// Requests refused with [`Error::Overloaded`](crate::Error::Overloaded).
    pub rejected: u64,
    /// Requests whose caller left before their batch formed.
    pub cancelled: u64,
    /// Requests answered with an output.
    pub completed: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Batches run.
    pub batches: u64,
    /// Of `batches`, those run across every CPU of the module (see [`Width`](crate::Width)).
    pub wide_batches: u64,
    /// `batch_sizes[i]` is the number of batches of `i + 1` requests.
    pub batch_sizes: Vec<u64>,
    /// Request latency (queueing plus inference) histogram: counts per bucket of
    /// [`LATENCY_BUCKETS`], then the `+Inf` bucket; not cumulative.
    pub latency_buckets: Vec<u64>,
    /// Sum of all answered requests' latencies, in seconds.
    pub latency_sum_seconds: f64,
    /// Rows of all batches run.
    pub batch_rows: u64,
    /// Padded tokens of all batches run: each batch's rows x its longest padded length, as the
    /// builder's [`tokens`](crate::BatcherBuilder::tokens) function measures them (zero
    /// without one).
    pub batch_tokens: u64,
    /// Tokens of all batches run without padding: each row's own length, summed.
    /// `batch_tokens - batch_tokens_unpadded` is the padding the batches carried.
    pub batch_tokens_unpadded: u64,
    /// The largest batch run, in padded tokens.
    pub largest_batch_tokens: u64,
}

impl BatcherStats {
    /// The share of the batches' padded tokens that was padding (0 when none, or without a
    /// token function).
    ///
    /// ```
    /// # let mut stats = corestream::BatcherStats::default();
    /// stats.batch_tokens = 100;
    /// stats.batch_tokens_unpadded = 75;
    /// assert_eq!(stats.padding_ratio(), 0.25);
    /// ```
    pub fn padding_ratio(&self) -> f64 {
        if self.batch_tokens == 0 {
            0.0
        } else {
            self.batch_tokens.saturating_sub(self.batch_tokens_unpadded) as f64
                / self.batch_tokens as f64
        }
    }

    /// The counters in Prometheus' text exposition format, names prefixed by `namespace`,
    /// without labels.
    ///
    /// This is one batcher's exposition: two of them concatenated repeat every `# HELP` and
    /// `# TYPE` line and every series. To expose several batchers (or several with the same
    /// name) in one scrape, use [`prometheus_many`](Self::prometheus_many).
    ///
    /// ```
    /// let text = corestream::BatcherStats::default().prometheus("cs");
    /// assert!(text.contains("# TYPE cs_requests_completed_total counter\ncs_requests_completed_total 0\n"));
    /// ```
    pub fn prometheus(&self, namespace: &str) -> String {
        render(namespace, &[(None, self.clone())])
    }

    /// Several batchers' counters in one Prometheus exposition: every metric family (its
    /// `# HELP` and `# TYPE` lines) once, each batcher's series labelled `model="<name>"`.
    /// Batchers that share a name are one series: their counters and histograms are summed
    /// (what a `metrics` recorder does with two batchers of one name).
    ///
    /// ```
    /// use corestream::BatcherStats;
    ///
    /// let mut a = BatcherStats::default();
    /// a.name = "minilm".into();
    /// a.completed = 2;
    /// let mut b = a.clone();
    /// b.completed = 3;
    /// let mut c = a.clone();
    /// c.name = "resnet".into();
    /// let text = BatcherStats::prometheus_many("cs", [&a, &b, &c]);
    /// assert_eq!(text.matches("# TYPE cs_requests_completed_total counter").count(), 1);
    /// assert!(text.contains("cs_requests_completed_total{model=\"minilm\"} 5\n"));
    /// assert!(text.contains("cs_requests_completed_total{model=\"resnet\"} 2\n"));
    /// ```
    pub fn prometheus_many<'a>(
        namespace: &str,
        stats: impl IntoIterator<Item = &'a BatcherStats>,
    ) -> String {
        let mut merged: BTreeMap<&str, BatcherStats> = BTreeMap::new();
        for s in stats {
            match merged.get_mut(s.name.as_str()) {
                Some(total) => total.merge(s),
                None => {
                    merged.insert(&s.name, s.clone());
                }
            }
        }
        let entries: Vec<(Option<String>, BatcherStats)> = merged
            .into_iter()
            .map(|(name, s)| (Some(format!("model=\"{}\"", escape_label(name))), s))
            .collect();
        render(namespace, &entries)
    }

    /// Adds `other`'s counts to these.
    fn merge(&mut self, other: &BatcherStats) {
        self.queue_depth += other.queue_depth;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.cancelled += other.cancelled;
        self.completed += other.completed;
        self.failed += other.failed;
        self.batches += other.batches;
        self.wide_batches += other.wide_batches;
        add_vec(&mut self.batch_sizes, &other.batch_sizes);
        add_vec(&mut self.latency_buckets, &other.latency_buckets);
        self.latency_sum_seconds += other.latency_sum_seconds;
        self.batch_rows += other.batch_rows;
        self.batch_tokens += other.batch_tokens;
        self.batch_tokens_unpadded += other.batch_tokens_unpadded;
        self.largest_batch_tokens = self.largest_batch_tokens.max(other.largest_batch_tokens);
    }
}

impl Default for BatcherStats {
    /// All counters zero, name `"batcher"`, with the latency histogram's buckets.
    fn default() -> Self {
        BatcherStats {
            name: super::DEFAULT_NAME.to_owned(),
            queue_depth: 0,
            accepted: 0,
            rejected: 0,
            cancelled: 0,
            completed: 0,
            failed: 0,
            batches: 0,
            wide_batches: 0,
            batch_sizes: Vec::new(),
            latency_buckets: vec![0; LATENCY_BUCKETS.len() + 1],
            latency_sum_seconds: 0.0,
            batch_rows: 0,
            batch_tokens: 0,
            batch_tokens_unpadded: 0,
            largest_batch_tokens: 0,
        }
    }
}

fn add_vec(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{labels}`, `{labels,extra}`, `{extra}` or nothing.
fn braces(labels: Option<&str>, extra: Option<&str>) -> String {
    match (labels, extra) {
        (Some(l), Some(e)) => format!("{{{l},{e}}}"),
        (Some(l), None) => format!("{{{l}}}"),
        (None, Some(e)) => format!("{{{e}}}"),
        (None, None) => String::new(),
    }
}

/// A family of one sample per entry: name, kind, help, value.
type Scalar = (
    &'static str,
    &'static str,
    &'static str,
    fn(&BatcherStats) -> u64,
);

/// Every family once, then each entry's series (labelled by the entry's label set, if any).
fn render(ns: &str, entries: &[(Option<String>, BatcherStats)]) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {ns}_{name} {help}\n# TYPE {ns}_{name} {kind}");
    };
    let scalars: [Scalar; 12] = [
        (
            "queue_depth",
            "gauge",
            "Requests waiting for a stream.",
            |s| s.queue_depth as u64,
        ),
        (
            "requests_accepted_total",
            "counter",
            "Requests queued.",
            |s| s.accepted,
        ),
        (
            "requests_rejected_total",
            "counter",
            "Requests refused because the queue was full.",
            |s| s.rejected,
        ),
        (
            "requests_cancelled_total",
            "counter",
            "Requests whose caller left before they ran.",
            |s| s.cancelled,
        ),
        (
            "requests_completed_total",
            "counter",
            "Requests answered with an output.",
            |s| s.completed,
        ),
        (
            "requests_failed_total",
            "counter",
            "Requests answered with an error.",
            |s| s.failed,
        ),
        ("batches_total", "counter", "Batches run.", |s| s.batches),
        (
            "wide_batches_total",
            "counter",
            "Batches run across every CPU of the module (adaptive or wide width).",
            |s| s.wide_batches,
        ),
        (
            "batch_rows_total",
            "counter",
            "Rows of the batches run.",
            |s| s.batch_rows,
        ),
        (
            "batch_tokens_total",
            "counter",
            "Padded tokens of the batches run (rows x longest length).",
            |s| s.batch_tokens,
        ),
        (
            "batch_tokens_unpadded_total",
            "counter",
            "Tokens of the batches run, without padding.",
            |s| s.batch_tokens_unpadded,
        ),
        (
            "largest_batch_tokens",
            "gauge",
            "The largest batch run, in padded tokens.",
            |s| s.largest_batch_tokens,
        ),
    ];
    for (name, kind, help, value) in scalars {
        family(&mut out, name, kind, help);
        for (labels, s) in entries {
            let _ = writeln!(
                out,
                "{ns}_{name}{} {}",
                braces(labels.as_deref(), None),
                value(s)
            );
        }
    }
    family(&mut out, "batch_size", "histogram", "Requests per batch.");
    for (labels, s) in entries {
        let labels = labels.as_deref();
        let mut cumulative = 0;
        let mut sum = 0;
        for (i, n) in s.batch_sizes.iter().enumerate() {
            cumulative += n;
            sum += n * (i as u64 + 1);
            let le = format!("le=\"{}\"", i + 1);
            let _ = writeln!(
                out,
                "{ns}_batch_size_bucket{} {cumulative}",
                braces(labels, Some(&le))
            );
        }
        let inf = braces(labels, Some("le=\"+Inf\""));
        let plain = braces(labels, None);
        let _ = writeln!(out, "{ns}_batch_size_bucket{inf} {cumulative}");
        let _ = writeln!(
            out,
            "{ns}_batch_size_sum{plain} {sum}\n{ns}_batch_size_count{plain} {cumulative}"
        );
    }
    family(
        &mut out,
        "request_seconds",
        "histogram",
        "Request latency, queueing included.",
    );
    for (labels, s) in entries {
        let labels = labels.as_deref();
        let mut cumulative = 0;
        for i in 0..=LATENCY_BUCKETS.len() {
            cumulative += s.latency_buckets.get(i).copied().unwrap_or(0);
            let le = match LATENCY_BUCKETS.get(i) {
                Some(le) => format!("le=\"{le}\""),
                None => "le=\"+Inf\"".to_owned(),
            };
            let _ = writeln!(
                out,
                "{ns}_request_seconds_bucket{} {cumulative}",
                braces(labels, Some(&le))
            );
        }
        let plain = braces(labels, None);
        let _ = writeln!(
            out,
            "{ns}_request_seconds_sum{plain} {}\n{ns}_request_seconds_count{plain} {cumulative}",
            s.latency_sum_seconds
        );
    }
    out
}
