//! The batcher's observability hooks: `tracing` spans (feature `tracing`) and `metrics`
//! counters and histograms (feature `metrics`). With both features off every hook is an empty
//! inline function over zero-sized types: no clock read, no allocation, nothing stored.
//!
//! Spans (target `corestream::batcher`, level INFO):
//! - `queue_wait` (fields `batcher`, `rows`, `tokens`, `stream`): one per request, opened by
//!   [`Batcher::infer`](crate::Batcher::infer) in the caller's context (so it is a child of
//!   the caller's span) and closed when a stream takes the request into a batch (`stream` is
//!   recorded then); its duration is the request's time in the queue;
//! - `batch` (fields `batcher`, `stream`, `requests`, `rows`, `tokens`): the whole handling of
//!   one batch on its stream thread, parent of
//! - `batch_form` (same fields): stacking the requests into one input, and
//! - `stream_run` (same fields): the model call and the split of its output.
//!
//! Metrics: see [`Telemetry::new`] for the names and labels.

use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::Instant;

#[cfg(feature = "metrics")]
use metrics::{Counter, Gauge, Histogram};

use super::stats::BatchShape;

/// The metric names, `corestream_batcher_` then the name.
#[cfg(feature = "metrics")]
mod names {
    pub(super) const ACCEPTED: &str = "corestream_batcher_requests_accepted_total";
    pub(super) const REJECTED: &str = "corestream_batcher_requests_rejected_total";
    pub(super) const CANCELLED: &str = "corestream_batcher_requests_cancelled_total";
    pub(super) const COMPLETED: &str = "corestream_batcher_requests_completed_total";
    pub(super) const FAILED: &str = "corestream_batcher_requests_failed_total";
    pub(super) const QUEUE_DEPTH: &str = "corestream_batcher_queue_depth";
    pub(super) const BATCHES: &str = "corestream_batcher_batches_total";
    pub(super) const WIDE_BATCHES: &str = "corestream_batcher_wide_batches_total";
    pub(super) const QUEUE_SECONDS: &str = "corestream_batcher_queue_seconds";
    pub(super) const RUN_SECONDS: &str = "corestream_batcher_run_seconds";
    pub(super) const REQUEST_SECONDS: &str = "corestream_batcher_request_seconds";
    pub(super) const BATCH_ROWS: &str = "corestream_batcher_batch_rows";
    pub(super) const BATCH_TOKENS: &str = "corestream_batcher_batch_tokens";
}

/// One batcher's hooks.
pub(super) struct Telemetry {
    #[cfg(feature = "tracing")]
    name: std::sync::Arc<str>,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg(feature = "metrics")]
struct Metrics {
    accepted: Counter,
    rejected: Counter,
    cancelled: Counter,
    wide_batches: Counter,
    queue_depth: Gauge,
    streams: Vec<StreamMetrics>,
}

#[cfg(feature = "metrics")]
struct StreamMetrics {
    completed: Counter,
    failed: Counter,
    batches: Counter,
    queue_seconds: Histogram,
    run_seconds: Histogram,
    request_seconds: Histogram,
    batch_rows: Histogram,
    batch_tokens: Histogram,
}

impl Telemetry {
    /// The hooks of a batcher called `name` over `streams` streams. With feature `metrics`
    /// this registers, with the recorder installed now (install it before building the
    /// batcher):
    ///
    /// | metric | kind | labels |
    /// |---|---|---|
    /// | `corestream_batcher_requests_accepted_total` | counter | `model` |
    /// | `corestream_batcher_requests_rejected_total` | counter | `model` |
    /// | `corestream_batcher_requests_cancelled_total` | counter | `model` |
    /// | `corestream_batcher_queue_depth` | gauge | `model` |
    /// | `corestream_batcher_requests_completed_total` | counter | `model`, `stream` |
    /// | `corestream_batcher_requests_failed_total` | counter | `model`, `stream` |
    /// | `corestream_batcher_batches_total` | counter | `model`, `stream` |
    /// | `corestream_batcher_queue_seconds` | histogram | `model`, `stream` |
    /// | `corestream_batcher_run_seconds` | histogram | `model`, `stream` |
    /// | `corestream_batcher_request_seconds` | histogram | `model`, `stream` |
    /// | `corestream_batcher_batch_rows` | histogram | `model`, `stream` |
    /// | `corestream_batcher_batch_tokens` | histogram | `model`, `stream` |
    pub(super) fn new(name: &str, streams: usize) -> Telemetry {
        let _ = (name, streams);
        Telemetry {
            #[cfg(feature = "tracing")]
            name: name.into(),
            #[cfg(feature = "metrics")]
            metrics: Metrics::new(name, streams),
        }
    }

    /// A request was queued.
    #[inline]
    pub(super) fn accepted(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.accepted.increment(1);
    }

    /// A request was refused: the queue was full.
    #[inline]
    pub(super) fn rejected(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.rejected.increment(1);
    }

    /// `n` requests were removed because their callers had left.
    #[inline]
    pub(super) fn cancelled(&self, n: usize) {
        let _ = n;
        #[cfg(feature = "metrics")]
        self.metrics.cancelled.increment(n as u64);
    }

    /// A batch runs wide.
    #[inline]
    pub(super) fn wide_batch(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.wide_batches.increment(1);
    }

    /// `n` requests wait now.
    #[inline]
    pub(super) fn queue_depth(&self, n: usize) {
        let _ = n;
        #[cfg(feature = "metrics")]
        self.metrics.queue_depth.set(n as f64);
    }

    /// The queue-wait span of a request of `rows` rows, `tokens` padded tokens per row (`None`
    /// without a token function), opened in the caller's context.
    #[inline]
    pub(super) fn queued(&self, rows: usize, tokens: Option<usize>) -> Queued {
        let _ = (rows, tokens);
        Queued {
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                target: "corestream::batcher",
                "queue_wait",
                batcher = &*self.name,
                rows,
                tokens,
                stream = tracing::field::Empty,
            ),
        }
    }

    /// The hooks of stream `index`'s serve loop.
    pub(super) fn stream(&self, index: usize) -> StreamTelemetry<'_> {
        let _ = index;
        StreamTelemetry {
            #[cfg(feature = "tracing")]
            name: &self.name,
            #[cfg(feature = "tracing")]
            index,
            #[cfg(feature = "metrics")]
            metrics: self
                .metrics
                .streams
                .get(index)
                .unwrap_or(&self.metrics.streams[0]),
            _lifetime: std::marker::PhantomData,
        }
    }
}

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(name: &str, streams: usize) -> Metrics {
        use metrics::{
            counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
        };
        use names::*;
        describe_counter!(ACCEPTED, "Requests queued.");
        describe_counter!(REJECTED, "Requests refused because the queue was full.");
        describe_counter!(CANCELLED, "Requests whose caller left before they ran.");
        describe_counter!(COMPLETED, "Requests answered with an output.");
        describe_counter!(FAILED, "Requests answered with an error.");
        describe_gauge!(QUEUE_DEPTH, "Requests waiting for a stream.");
        describe_counter!(BATCHES, "Batches run.");
        describe_counter!(
            WIDE_BATCHES,
            "Batches run across every CPU of the module (adaptive or wide width)."
        );
        describe_histogram!(
            QUEUE_SECONDS,
            Unit::Seconds,
            "Time from a request's arrival until a stream took it into a batch."
        );
        describe_histogram!(
            RUN_SECONDS,
            Unit::Seconds,
            "Time a stream spent running one batch (stacking, model call, split)."
        );
        describe_histogram!(
            REQUEST_SECONDS,
            Unit::Seconds,
            "Request latency from arrival to answer, queueing included."
        );
        describe_histogram!(BATCH_ROWS, "Rows per batch.");
        describe_histogram!(
            BATCH_TOKENS,
            "Padded tokens per batch (rows x longest padded length)."
        );
        let model = name.to_owned();
        let streams = (0..streams.max(1))
            .map(|i| {
                let labels = [("model", model.clone()), ("stream", i.to_string())];
                StreamMetrics {
                    completed: counter!(COMPLETED, &labels),
                    failed: counter!(FAILED, &labels),
                    batches: counter!(BATCHES, &labels),
                    queue_seconds: histogram!(QUEUE_SECONDS, &labels),
                    run_seconds: histogram!(RUN_SECONDS, &labels),
                    request_seconds: histogram!(REQUEST_SECONDS, &labels),
                    batch_rows: histogram!(BATCH_ROWS, &labels),
                    batch_tokens: histogram!(BATCH_TOKENS, &labels),
                }
            })
            .collect();
        Metrics {
            accepted: counter!(ACCEPTED, "model" => model.clone()),
            rejected: counter!(REJECTED, "model" => model.clone()),
            cancelled: counter!(CANCELLED, "model" => model.clone()),
            wide_batches: counter!(WIDE_BATCHES, "model" => model.clone()),
            queue_depth: gauge!(QUEUE_DEPTH, "model" => model),
            streams,
        }
    }
}

/// A request's queue-wait span, open until a stream takes the request.
pub(super) struct Queued {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl Default for Queued {
    /// No span (what is left once the request is taken).
    fn default() -> Self {
        Queued {
            #[cfg(feature = "tracing")]
            span: tracing::Span::none(),
        }
    }
}

/// One stream's hooks, for its serve loop.
pub(super) struct StreamTelemetry<'a> {
    #[cfg(feature = "tracing")]
    name: &'a str,
    #[cfg(feature = "tracing")]
    index: usize,
    #[cfg(feature = "metrics")]
    metrics: &'a StreamMetrics,
    _lifetime: std::marker::PhantomData<&'a ()>,
}

/// What stays open while one batch runs: its span, entered.
pub(super) struct BatchScope {
    #[cfg(feature = "tracing")]
    _span: tracing::span::EnteredSpan,
    #[cfg(feature = "metrics")]
    start: Instant,
}

impl StreamTelemetry<'_> {
    /// The stream took a request that waited `waited` into a batch: its queue-wait span ends.
    #[inline]
    pub(super) fn taken(&self, queued: Queued, waited: Duration) {
        let _ = (&queued, waited);
        #[cfg(feature = "tracing")]
        queued.span.record("stream", self.index);
        #[cfg(feature = "metrics")]
        self.metrics.queue_seconds.record(waited.as_secs_f64());
        // `queued` is dropped here: its span closes.
    }

    /// A batch of `shape` starts on this stream: opens (and enters) its `batch` span.
    #[inline]
    pub(super) fn batch(&self, shape: BatchShape) -> BatchScope {
        let _ = shape;
        #[cfg(feature = "metrics")]
        {
            self.metrics.batches.increment(1);
            self.metrics.batch_rows.record(shape.rows as f64);
            if shape.tokens > 0 {
                self.metrics.batch_tokens.record(shape.tokens as f64);
            }
        }
        BatchScope {
            #[cfg(feature = "tracing")]
            _span: tracing::info_span!(
                target: "corestream::batcher",
                "batch",
                batcher = self.name,
                stream = self.index,
                requests = shape.requests,
                rows = shape.rows,
                tokens = shape.tokens,
            )
            .entered(),
            #[cfg(feature = "metrics")]
            start: Instant::now(),
        }
    }

    /// Runs `f` inside the `batch_form` span (stacking the batch's inputs).
    #[inline]
    pub(super) fn form<T>(&self, shape: BatchShape, f: impl FnOnce() -> T) -> T {
        self.within(shape, Phase::Form, f)
    }

    /// Runs `f` inside the `stream_run` span (the model call and the output's split).
    #[inline]
    pub(super) fn run<T>(&self, shape: BatchShape, f: impl FnOnce() -> T) -> T {
        self.within(shape, Phase::Run, f)
    }

    #[inline]
    fn within<T>(&self, shape: BatchShape, phase: Phase, f: impl FnOnce() -> T) -> T {
        let _ = (shape, phase);
        #[cfg(feature = "tracing")]
        let _entered = match phase {
            Phase::Form => tracing::info_span!(
                target: "corestream::batcher",
                "batch_form",
                batcher = self.name,
                stream = self.index,
                requests = shape.requests,
                rows = shape.rows,
                tokens = shape.tokens,
            ),
            Phase::Run => tracing::info_span!(
                target: "corestream::batcher",
                "stream_run",
                batcher = self.name,
                stream = self.index,
                requests = shape.requests,
                rows = shape.rows,
                tokens = shape.tokens,
            ),
        }
        .entered();
        f()
    }

    /// The batch `scope` opened has ended (its span closes).
    #[inline]
    pub(super) fn batch_done(&self, scope: BatchScope) {
        let _ = &scope;
        #[cfg(feature = "metrics")]
        self.metrics
            .run_seconds
            .record(scope.start.elapsed().as_secs_f64());
        // `scope` is dropped here: its span closes.
    }

    /// Answers given: each one's latency since arrival and whether it is an output.
    #[inline]
    pub(super) fn answered(&self, answers: impl IntoIterator<Item = (Duration, bool)>) {
        let _ = &answers;
        #[cfg(feature = "metrics")]
        for (latency, ok) in answers {
            self.metrics.request_seconds.record(latency.as_secs_f64());
            if ok {
                self.metrics.completed.increment(1);
            } else {
                self.metrics.failed.increment(1);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Form,
    Run,
}
