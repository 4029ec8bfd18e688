//! The service's state, independent of the HTTP framework: the loaded models, health and its
//! probes (stuck batchers), the limits and budgets, background loading, metrics. The request
//! paths are `embedding.rs` and `scores.rs`; the axum and actix-web servers are thin adapters
//! over [`crate::http::handlers`], which call them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use corestream::batch::Rows;
use corestream::{Batch, Batcher, BatcherHealth, BatcherStats, Infer, Module};
use tokio::sync::Semaphore;

use crate::model::encoded::Encoded;
use crate::model::kind::ModelKind;
use crate::model::prompts::Prompts;
use crate::model::tokenizer::TextTokenizer;
use crate::service::access::ApiKey;
use crate::service::admission::{Admission, DEFAULT_MAX_CONCURRENT_REQUESTS};
use crate::service::budget::BodyBudget;
use crate::service::failure::Failure;
use crate::service::health::{Health, State};
use crate::service::info::Info;
use crate::service::models::Models;
use crate::service::requests::Requests;

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

/// What the handlers share: health, the request counters, the loaded models (once loaded),
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
    pub(crate) tokenizing: Arc<Semaphore>,
    models: OnceLock<Models>,
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
            .field("models", &self.models.get())
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
            models: OnceLock::new(),
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

    /// Why a loaded model's batcher cannot be trusted to answer, if so (see
    /// [`BatcherHealth::problem`]): a serve loop ended, a model call or a queued request older
    /// than `--stuck-after` (the model named when several are served). The change from healthy
    /// to stuck and back is logged once.
    pub fn stuck(&self) -> Option<String> {
        let models = self.models.get();
        let several = models.is_some_and(|m| m.len() > 1);
        let problem = models.into_iter().flat_map(Models::iter).find_map(|l| {
            let problem = l.monitor.as_ref()?.health().problem(self.stuck_after)?;
            Some(if several {
                format!("{}: {problem}", l.info.model_id)
            } else {
                problem.to_string()
            })
        });
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

    /// A ready service serving `models`: a [`Loaded`] model or several [`Models`] (what tests
    /// and the load generator serve).
    pub fn ready(
        models: impl Into<Models>,
        metrics: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> Service {
        let service = Service::new(metrics);
        service.set_loaded(models);
        service
    }

    /// The models are loaded: serve them (ready unless draining).
    pub fn set_loaded(&self, models: impl Into<Models>) {
        if self.models.set(models.into()).is_ok() {
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

    /// Runs `load` on a thread of its own and makes the service ready with the models it
    /// returns (`Models::from(loaded)` for one),
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
        load: impl FnOnce() -> corestream::Result<Models> + Send + 'static,
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
        for loaded in self.models.get().into_iter().flat_map(Models::iter) {
            let Some(monitor) = &loaded.monitor else {
                continue;
            };
            let s = monitor.stats();
            tracing::info!(
                model = %loaded.info.model_id,
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
    /// `corestream_http_requests_in_flight` (POST requests admitted and not answered, all
    /// models': the load signal `deploy/kubernetes.yaml`'s autoscaler follows), and each
    /// model's batcher's liveness `corestream_serve_loops{model}` (running),
    /// `corestream_serve_loops_ended{model}`, `corestream_oldest_queued_seconds{model}`,
    /// `corestream_longest_batch_seconds{model}`.
    pub fn render_metrics(&self) -> String {
        if self.models.get().is_some() {
            metrics::gauge!("corestream_http_requests_in_flight")
                .set(self.admission.in_flight() as f64);
        }
        for loaded in self.models.get().into_iter().flat_map(Models::iter) {
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

    /// The model a request reaches (see [`Models::pick`]): `path`, the model its path names;
    /// `body`, the model its body names; `kind`, the kind its route needs.
    ///
    /// # Errors
    ///
    /// A 503 while the models load (or after they failed to, or while draining), a 404 for a
    /// model not served.
    pub fn model(
        &self,
        path: Option<&str>,
        body: Option<&str>,
        kind: Option<&str>,
    ) -> Result<&Loaded, Failure> {
        self.models()?.pick(path, body, kind)
    }

    /// The loaded models, or a 503 saying why there are none.
    pub fn models(&self) -> Result<&Models, Failure> {
        self.models.get().ok_or_else(|| {
            let why = match self.health.state() {
                State::Failed => LOAD_FAILED.to_owned(),
                State::Draining => "the service is shutting down".to_owned(),
                _ => "the model is still loading; retry shortly".to_owned(),
            };
            Failure::unavailable("unavailable", why)
        })
    }
}
