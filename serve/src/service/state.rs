//! The service's state and its embedding path, independent of the HTTP framework: validation,
//! tokenisation with the length policy (413 or truncation), the batcher call, normalisation.
//! The axum and actix-web servers are thin adapters over [`crate::http::handlers`], which call
//! this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{Batch, Batcher, BatcherHealth, BatcherStats, Error, Infer, Module};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::model::encoded::Encoded;
use crate::model::kind::ModelKind;
use crate::model::prompts::Prompts;
use crate::model::tokenizer::{Keep, TextTokenizer};
use crate::service::access::ApiKey;
use crate::service::admission::{Admission, DEFAULT_MAX_CONCURRENT_REQUESTS};
use crate::service::budget::BodyBudget;
use crate::service::failure::Failure;
use crate::service::health::{Health, State};
use crate::service::info::Info;
use crate::service::parts::{reassemble, split_by_length};
use crate::service::requests::Requests;
use crate::service::scores::too_long;

/// Encoded inputs in, one unnormalised vector (or raw scores) per row out: a `Batcher`, or
/// the naive baseline of the load generator.
pub type Embedder = Arc<dyn Infer<Rows<Encoded>, Rows<Vec<f32>>>>;

/// A loaded model, ready to serve.
pub struct Loaded {
    /// The model behind its batcher.
    pub embedder: Embedder,
    /// Its tokenizer and maximum input length.
    pub tokenizer: Arc<TextTokenizer>,
    /// What `GET /info` answers.
    pub info: Info,
    /// The batcher's counters and liveness, when a batcher serves.
    pub monitor: Option<Arc<dyn Monitor>>,
    /// The prompts requests may name, and the default one (set with
    /// [`set_prompts`](Self::set_prompts), which keeps `info` in step).
    pub prompts: Prompts,
    /// What the model answers, and so which routes serve it (set with
    /// [`set_kind`](Self::set_kind), which keeps `info` in step).
    pub kind: ModelKind,
}

impl Loaded {
    /// Serves `prompts`: requests may name them, the default applies to the others, and
    /// `GET /info` lists them.
    pub fn set_prompts(&mut self, prompts: Prompts) {
        self.info.prompts = prompts.names().map(str::to_owned).collect();
        self.info.default_prompt_name = prompts.default_name().map(str::to_owned);
        self.info.default_prompt = prompts.default_text().map(str::to_owned);
        self.prompts = prompts;
    }

    /// Serves a model of `kind`: its routes answer, and `GET /info` says which kind and labels.
    pub fn set_kind(&mut self, kind: ModelKind) {
        self.info.model_type = kind.name().to_owned();
        self.info.labels = match &kind {
            ModelKind::Classifier { labels, .. } => labels.clone(),
            _ => Vec::new(),
        };
        self.kind = kind;
    }
}

/// What the service watches of the batcher behind a model: its counters (rows and tokens per
/// batch, latency) and its liveness (serve loops, the oldest wait, the longest run).
pub trait Monitor: Send + Sync {
    /// The counters.
    fn stats(&self) -> BatcherStats;
    /// The liveness.
    fn health(&self) -> BatcherHealth;
}

impl<M> Monitor for Batcher<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn stats(&self) -> BatcherStats {
        Batcher::stats(self)
    }
    fn health(&self) -> BatcherHealth {
        Batcher::health(self)
    }
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("tokenizer", &self.tokenizer)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// What clients are told about a failed model load (the reason is in the server's log).
pub const LOAD_FAILED: &str = "the model failed to load; the server's log says why";

/// Requests with more text than this (bytes, all inputs) are tokenised off the HTTP threads.
pub const INLINE_TOKENIZE_BYTES: usize = 16 << 10;

/// How long a client may take to send a request body, by default (`--body-timeout-ms`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Request body bytes held at once, by default (`--body-budget-mib`).
pub const DEFAULT_BODY_BUDGET: usize = 64 << 20;

/// How long a model call may run, or a request wait for a stream, before the service calls
/// itself stuck (`/health/live` 503), by default (`--stuck-after`).
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(60);

/// What the handlers share: health, the request counters, the loaded model (once loaded),
/// the metrics renderer.
pub struct Service {
    /// Loading, ready, failed or draining.
    pub health: Health,
    /// Requests started, answered and cancelled.
    pub requests: Requests,
    body_timeout: Duration,
    /// Request body bytes held at once.
    pub bodies: BodyBudget,
    request_timeout: Option<Duration>,
    stuck_after: Duration,
    /// Whether the last look found the batcher stuck (its change is logged, not each look).
    stuck: AtomicBool,
    api_key: Option<ApiKey>,
    /// Requests in flight, bounded, and the answer rate (`Retry-After`).
    pub admission: Admission,
    /// Large requests tokenised at once (one per CPU).
    tokenizing: Arc<Semaphore>,
    loaded: OnceLock<Loaded>,
    metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// One request's inputs after tokenisation.
#[derive(Debug)]
pub struct Tokenized {
    /// Token ids per input, within the model's maximum length.
    pub ids: Vec<Vec<u32>>,
    /// Their total count (OpenAI's `usage`).
    pub tokens: usize,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("health", &self.health.state())
            .field("body_timeout", &self.body_timeout)
            .field("loaded", &self.loaded.get())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service still loading its model; `metrics` renders `GET /metrics`.
    pub fn new(metrics: Arc<dyn Fn() -> String + Send + Sync>) -> Service {
        Service {
            health: Health::default(),
            requests: Requests::default(),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            bodies: BodyBudget::new(DEFAULT_BODY_BUDGET),
            request_timeout: None,
            stuck_after: DEFAULT_STUCK_AFTER,
            stuck: AtomicBool::new(false),
            api_key: None,
            admission: Admission::new(DEFAULT_MAX_CONCURRENT_REQUESTS),
            tokenizing: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
            loaded: OnceLock::new(),
            metrics,
        }
    }

    /// The same service, giving clients `timeout` to send a request body (then 408).
    pub fn with_body_timeout(mut self, timeout: Duration) -> Service {
        self.body_timeout = timeout;
        self
    }

    /// How long a client may take to send a request body.
    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    /// The same service, holding at most `bytes` of request bodies at once (see
    /// [`BodyBudget`]).
    pub fn with_body_budget(mut self, bytes: usize) -> Service {
        self.bodies = BodyBudget::new(bytes);
        self
    }

    /// The same service, answering 504 to a request not answered within `timeout` (`None`:
    /// no limit, the default).
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> Service {
        self.request_timeout = timeout;
        self
    }

    /// How long a request may take once its body has arrived, if limited.
    pub fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// The same service, answering only requests that present `key` on the guarded routes
    /// (`None`: everyone, the default; see [`ApiKey`]).
    pub fn with_api_key(mut self, key: Option<ApiKey>) -> Service {
        self.api_key = key;
        self
    }

    /// The key clients must present, if set.
    pub fn api_key(&self) -> Option<&ApiKey> {
        self.api_key.as_ref()
    }

    /// The same service, taking at most `limit` requests in flight (429 past it; default
    /// [`DEFAULT_MAX_CONCURRENT_REQUESTS`]).
    pub fn with_max_concurrent_requests(mut self, limit: usize) -> Service {
        self.admission = Admission::new(limit);
        self
    }

    /// The same service, calling itself stuck (liveness and readiness 503) once a model call
    /// has run, or a request waited for a stream, longer than `after`.
    pub fn with_stuck_after(mut self, after: Duration) -> Service {
        self.stuck_after = after;
        self
    }

    /// Why the loaded model's batcher cannot be trusted to answer, if so (see
    /// [`BatcherHealth::problem`]): a serve loop ended, a model call or a queued request older
    /// than `--stuck-after`. The change from healthy to stuck and back is logged once.
    pub fn stuck(&self) -> Option<String> {
        let problem = self
            .loaded
            .get()
            .and_then(|l| l.monitor.as_ref())
            .and_then(|m| m.health().problem(self.stuck_after))
            .map(|p| p.to_string());
        let was = self.stuck.swap(problem.is_some(), Ordering::Relaxed);
        match (&problem, was) {
            (Some(why), false) => {
                tracing::error!(problem = %why, "the model's streams are stuck: /health/live answers 503");
            }
            (None, true) => tracing::warn!("the model's streams answer again"),
            _ => {}
        }
        problem
    }

    /// Readiness: ready (loaded, not draining) and not [`stuck`](Self::stuck); else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.health.ready() {
            return Err(self
                .health
                .message()
                .unwrap_or_else(|| self.health.state().name().to_owned()));
        }
        self.stuck().map_or(Ok(()), Err)
    }

    /// Liveness: not failed to load and not [`stuck`](Self::stuck); else why not. Loading
    /// and draining are alive (a restart would not help them).
    pub fn liveness(&self) -> Result<(), String> {
        if !self.health.live() {
            return Err(self
                .health
                .message()
                .unwrap_or_else(|| self.health.state().name().to_owned()));
        }
        self.stuck().map_or(Ok(()), Err)
    }

    /// A ready service (what tests and the load generator serve).
    #[allow(dead_code)]
    pub fn ready(loaded: Loaded, metrics: Arc<dyn Fn() -> String + Send + Sync>) -> Service {
        let service = Service::new(metrics);
        service.set_loaded(loaded);
        service
    }

    /// The model is loaded: serve it (ready unless draining).
    pub fn set_loaded(&self, loaded: Loaded) {
        if self.loaded.set(loaded).is_ok() {
            self.health.set(State::Ready, None);
        }
    }

    /// The model could not be loaded: `/health` answers 503.
    ///
    /// `message` (the load error: file paths, library messages) goes to the log; `/health`
    /// and the answers say only that the load failed, so that clients learn nothing about the
    /// server's files.
    pub fn set_failed(&self, message: String) {
        tracing::error!(error = %message, "model load failed: /health answers 503");
        self.health.set(State::Failed, Some(LOAD_FAILED.to_owned()));
    }

    /// Runs `load` on a thread of its own and makes the service ready with what it returns,
    /// or failed (`/health` 503, liveness included, so an orchestrator restarts it) when it
    /// returns an error, panics, or the thread cannot start: the service never stays
    /// "loading" for ever.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use corestream_serve::service::{Service, State};
    ///
    /// let service = Arc::new(Service::new(Arc::new(String::new)));
    /// let loader = service.load_in_background(|| panic!("a bug in the loader"));
    /// loader.expect("a loading thread").join().unwrap(); // the panic was caught
    /// assert_eq!(service.health.state(), State::Failed);
    /// ```
    pub fn load_in_background(
        self: &Arc<Self>,
        load: impl FnOnce() -> corestream::Result<Loaded> + Send + 'static,
    ) -> Option<std::thread::JoinHandle<()>> {
        let loading = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("corestream-load".into())
            .spawn(
                move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)) {
                    Ok(Ok(loaded)) => loading.set_loaded(loaded),
                    Ok(Err(e)) => loading.set_failed(e.to_string()),
                    Err(panic) => {
                        let why = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".to_owned());
                        loading.set_failed(format!("the model loader panicked: {why}"));
                    }
                },
            );
        match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                self.set_failed(format!("cannot start the loading thread: {e}"));
                None
            }
        }
    }

    /// Logs the request counters and the batcher's (at shutdown).
    pub fn log_final_stats(&self) {
        let requests = self.requests.counts();
        tracing::info!(
            started = requests.started,
            answered = requests.answered,
            cancelled = requests.cancelled,
            in_flight = requests.in_flight(),
            "http request totals"
        );
        if let Some(monitor) = self.loaded.get().and_then(|l| l.monitor.as_ref()) {
            let s = monitor.stats();
            tracing::info!(
                completed = s.completed,
                failed = s.failed,
                rejected = s.rejected,
                batches = s.batches,
                rows = s.batch_rows,
                padded_tokens = s.batch_tokens,
                tokens = s.batch_tokens_unpadded,
                "batcher totals"
            );
        }
    }

    /// Prometheus text, with the gauges read at each scrape brought up to date first:
    /// `corestream_http_requests_in_flight{model}` (POST requests admitted and not answered:
    /// the load signal `deploy/kubernetes.yaml`'s autoscaler follows), and the batcher's liveness
    /// `corestream_serve_loops{model}` (running), `corestream_serve_loops_ended{model}`,
    /// `corestream_oldest_queued_seconds{model}`, `corestream_longest_batch_seconds{model}`.
    pub fn render_metrics(&self) -> String {
        if let Some(loaded) = self.loaded.get() {
            metrics::gauge!("corestream_http_requests_in_flight", "model" => loaded.info.model_id.clone())
                .set(self.admission.in_flight() as f64);
            if let Some(monitor) = &loaded.monitor {
                let h = monitor.health();
                let model = loaded.info.model_id.clone();
                metrics::gauge!("corestream_serve_loops", "model" => model.clone())
                    .set(h.serving as f64);
                metrics::gauge!("corestream_serve_loops_ended", "model" => model.clone())
                    .set(h.ended as f64);
                metrics::gauge!("corestream_oldest_queued_seconds", "model" => model.clone())
                    .set(h.oldest_wait.map_or(0.0, |d| d.as_secs_f64()));
                metrics::gauge!("corestream_longest_batch_seconds", "model" => model)
                    .set(h.longest_run.map_or(0.0, |d| d.as_secs_f64()));
            }
        }
        (self.metrics)()
    }

    /// The loaded model, or a 503 saying why there is none.
    pub fn loaded(&self) -> Result<&Loaded, Failure> {
        self.loaded.get().ok_or_else(|| {
            let why = match self.health.state() {
                State::Failed => LOAD_FAILED.to_owned(),
                State::Draining => "the service is shutting down".to_owned(),
                _ => "the model is still loading; retry shortly".to_owned(),
            };
            Failure::unavailable("unavailable", why)
        })
    }

    /// Checks the number of inputs: at least one, at most `max_client_batch_size`.
    pub fn check_count(&self, loaded: &Loaded, n: usize) -> Result<(), Failure> {
        let max = loaded.info.max_client_batch_size;
        if n == 0 {
            return Err(Failure::bad_request(
                "invalid_request",
                "the input list is empty; send at least one input",
            ));
        }
        if n > max {
            return Err(Failure::too_large(
                "too_many_inputs",
                format!(
                    "{n} inputs in one request; at most {max} are allowed (--max-client-batch)"
                ),
            ));
        }
        Ok(())
    }

    /// Tokenises `texts` and applies the length policy: over-long inputs are cut when
    /// `truncate` (or the server's `--truncate` when `None`) says so, else a 413.
    ///
    /// Requests of up to [`INLINE_TOKENIZE_BYTES`] of text are tokenised here, on the HTTP
    /// thread (microseconds). Larger ones (up to the 2 MiB body limit: about a second of a
    /// core for a WordPiece tokenizer) go to tokio's blocking pool, at most one per CPU at a
    /// time, so a few large bodies cannot stall the HTTP threads: health probes and small
    /// requests keep being answered.
    pub async fn tokenize(
        &self,
        loaded: &Loaded,
        texts: Vec<String>,
        truncate: Option<bool>,
        keep: Keep,
    ) -> Result<Tokenized, Failure> {
        self.check_count(loaded, texts.len())?;
        let span = tracing::debug_span!("tokenize", inputs = texts.len());
        let ids = self
            .with_tokenizer(loaded, texts, move |tokenizer, texts| {
                span.in_scope(|| encode_all(tokenizer, &texts, keep))
            })
            .await??;
        self.limit(loaded, ids, truncate, keep)
    }

    /// Runs `f` over `texts` with the model's tokenizer: here when they hold at most
    /// [`INLINE_TOKENIZE_BYTES`], else on tokio's blocking pool, one per CPU at a time (see
    /// [`tokenize`](Self::tokenize)).
    pub(crate) async fn with_tokenizer<T: Send + 'static>(
        &self,
        loaded: &Loaded,
        texts: Vec<String>,
        f: impl FnOnce(&TextTokenizer, Vec<String>) -> T + Send + 'static,
    ) -> Result<T, Failure> {
        let bytes: usize = texts.iter().map(String::len).sum();
        self.with_tokenizer_bytes(loaded, bytes, move |tokenizer| f(tokenizer, texts))
            .await
    }

    /// Runs `f`, which tokenises `bytes` of text, with the model's tokenizer: here or on
    /// tokio's blocking pool, as [`with_tokenizer`](Self::with_tokenizer).
    pub(crate) async fn with_tokenizer_bytes<T: Send + 'static>(
        &self,
        loaded: &Loaded,
        bytes: usize,
        f: impl FnOnce(&TextTokenizer) -> T + Send + 'static,
    ) -> Result<T, Failure> {
        if bytes <= INLINE_TOKENIZE_BYTES {
            return Ok(f(&loaded.tokenizer));
        }
        // The permit moves into the blocking task: a request dropped meanwhile (its client
        // left) does not free the place while its tokenisation still runs.
        let permit = Arc::clone(&self.tokenizing)
            .acquire_owned()
            .await
            .map_err(|_| Failure::unavailable("unavailable", "the service is shutting down"))?;
        let tokenizer = Arc::clone(&loaded.tokenizer);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&tokenizer)
        })
        .await
        .map_err(|e| Failure::internal("tokenizer_error", format!("tokenisation failed: {e}")))
    }

    /// Checks inputs given as token ids: each id below the vocabulary size, each input
    /// non-empty, and the length policy as for texts.
    pub fn token_ids(
        &self,
        loaded: &Loaded,
        ids: Vec<Vec<u32>>,
        truncate: Option<bool>,
    ) -> Result<Tokenized, Failure> {
        self.check_count(loaded, ids.len())?;
        for (i, row) in ids.iter().enumerate() {
            if row.is_empty() {
                return Err(Failure::bad_request(
                    "invalid_request",
                    format!("input {i} has no tokens; send at least one token id"),
                ));
            }
            in_vocabulary(loaded, i, row)?;
        }
        self.limit(loaded, ids, truncate, Keep::Start)
    }

    fn limit(
        &self,
        loaded: &Loaded,
        mut ids: Vec<Vec<u32>>,
        truncate: Option<bool>,
        keep: Keep,
    ) -> Result<Tokenized, Failure> {
        let max = loaded.info.max_input_length;
        let truncate = truncate.unwrap_or(loaded.info.auto_truncate);
        for (i, row) in ids.iter_mut().enumerate() {
            if row.len() > max {
                if !truncate {
                    return Err(too_long(i, row.len(), max));
                }
                loaded.tokenizer.truncate(row, max, keep);
            }
        }
        let tokens = ids.iter().map(Vec::len).sum();
        Ok(Tokenized { ids, tokens })
    }

    /// Runs the inputs through the batcher: one vector per input, unit length when
    /// `normalize`.
    pub async fn embed(
        &self,
        loaded: &Loaded,
        input: Tokenized,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, Failure> {
        let rows = input.ids.into_iter().map(Encoded::single).collect();
        let vectors = self.infer(loaded, rows, input.tokens).await?;
        Ok(if normalize {
            vectors
                .into_iter()
                .map(crate::model::embedder::normalize)
                .collect()
        } else {
            vectors
        })
    }

    /// Runs encoded inputs (`tokens` in all) through the batcher: one unnormalised vector or
    /// raw scores per input, in order.
    pub(crate) async fn infer(
        &self,
        loaded: &Loaded,
        inputs: Vec<Encoded>,
        tokens: usize,
    ) -> Result<Vec<Vec<f32>>, Failure> {
        let model = loaded.info.model_id.as_str();
        let rows = inputs.len();
        metrics::counter!("corestream_embed_inputs_total", "model" => model.to_owned())
            .increment(rows as u64);
        metrics::counter!("corestream_embed_tokens_total", "model" => model.to_owned())
            .increment(tokens as u64);
        let span = tracing::info_span!("infer", model, rows, tokens);
        let parts = split_by_length(inputs, loaded.info.max_batch, loaded.info.max_batch_tokens);
        let answered = if parts.len() == 1 {
            let (order, part) = parts.into_iter().next().expect("one part");
            loaded
                .embedder
                .infer(part)
                .instrument(span)
                .await
                .map(|answer| vec![(order, answer)])
        } else {
            let calls = parts.into_iter().map(|(order, part)| async move {
                loaded
                    .embedder
                    .infer(part)
                    .await
                    .map(|answer| (order, answer))
            });
            futures::future::join_all(calls)
                .instrument(span)
                .await
                .into_iter()
                .collect()
        };
        match answered.map(|parts| reassemble(parts, rows)) {
            Ok(Some(vectors)) => Ok(vectors),
            Ok(None) => Err(Failure::internal(
                "model_error",
                format!("the model answered a wrong number of vectors for {rows} inputs"),
            )),
            Err(e @ Error::Overloaded { .. }) => {
                let queued = loaded.monitor.as_ref().map_or(0, |m| m.stats().queue_depth);
                let retry_after = self
                    .admission
                    .drain
                    .retry_after(queued as u64, Instant::now());
                Err(Failure::overloaded(
                    format!("{e}; retry after {} s", retry_after.as_secs()),
                    retry_after,
                ))
            }
            Err(e @ Error::Shutdown) => Err(Failure::unavailable("unavailable", e.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "inference failed");
                Err(Failure::internal("model_error", e.to_string()))
            }
        }
    }
}

/// Checks that every id of input `i` is in the model's vocabulary (else a 400 naming it).
pub(crate) fn in_vocabulary(loaded: &Loaded, i: usize, row: &[u32]) -> Result<(), Failure> {
    let vocab = loaded.tokenizer.vocab_size();
    match row.iter().find(|&&id| id as usize >= vocab) {
        Some(&bad) => Err(Failure::bad_request(
            "invalid_request",
            format!("input {i}: token id {bad} is not in the model's vocabulary (0..{vocab})"),
        )),
        None => Ok(()),
    }
}

/// Token ids of each text, enough of them to apply the length policy (see
/// [`TextTokenizer::encode_within`]), or a 400 naming what the tokenizer refused.
fn encode_all(
    tokenizer: &TextTokenizer,
    texts: &[String],
    keep: Keep,
) -> Result<Vec<Vec<u32>>, Failure> {
    let max = tokenizer.max_input_length();
    texts
        .iter()
        .map(|t| {
            tokenizer
                .encode_within(t, max, keep)
                .map_err(|m| Failure::bad_request("invalid_request", m))
        })
        .collect()
}
