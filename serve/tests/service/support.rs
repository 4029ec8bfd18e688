//! What the test files of this binary share: the lock that lets the fault scenarios run
//! alone, the two servers' launchers ([`launcher`]), the scenario tests both servers run
//! ([`server_scenarios!`], over `scenarios.rs`), the process-wide telemetry (one Prometheus
//! recorder, one span-recording subscriber), the models under test and small HTTP helpers.

use corestream_serve::model::Encoded;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use corestream::batch::Rows;
use corestream::{BoxError, CpuPool, Module, Streams};
use serde_json::Value;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use corestream_serve::model::embedder::{self, Backend};
use corestream_serve::model::TextTokenizer;
use corestream_serve::service::{serve_model, telemetry, BatchOptions, Loaded, Service};
use corestream_serve::Server;

/// The fault scenarios measure this process's RSS and descriptors: they run alone
/// ([`exclusive`]); every other test of this binary runs beside the others ([`shared`]).
static ALONE: RwLock<()> = RwLock::const_new(());

/// Held by an async test that may run beside others (not beside a fault scenario).
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    ALONE.read().await
}

/// [`shared`], for a test outside a runtime.
pub fn shared_blocking() -> RwLockReadGuard<'static, ()> {
    ALONE.blocking_read()
}

/// Held by a fault scenario (taken outside a runtime): no other test of this binary runs
/// meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    ALONE.blocking_write()
}

/// Starts the service on `127.0.0.1:0` and returns its base URL.
pub type Launch = fn(Arc<Service>) -> String;

/// How long a client may take over its headers in the fault tests (so the slow-client checks
/// run fast).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// The header timeout of the other tests: `corestream serve`'s default (`--header-timeout-ms`).
/// Under 64 concurrent callers on a 2-CPU debug build, actix-web's one worker can take longer
/// than [`HEADER_TIMEOUT`] to read the last connection's headers (it answered 408 in CI).
const SCENARIO_HEADER_TIMEOUT_SECS: u64 = 10;

/// How to start `server` as `corestream serve` does, on an ephemeral loopback port.
pub fn launcher(server: Server) -> Launch {
    match server {
        Server::Axum => launch_axum::<SCENARIO_HEADER_TIMEOUT_SECS>,
        Server::Actix => launch_actix::<SCENARIO_HEADER_TIMEOUT_SECS>,
    }
}

/// [`launcher`] with the fault tests' [`HEADER_TIMEOUT`].
pub fn fault_launcher(server: Server) -> Launch {
    const SECS: u64 = HEADER_TIMEOUT.as_secs();
    match server {
        Server::Axum => launch_axum::<SECS>,
        Server::Actix => launch_actix::<SECS>,
    }
}

/// The axum server (`corestream_serve::http::axum`) from the current tokio runtime, with a
/// header timeout of `SECS`.
fn launch_axum<const SECS: u64>(service: Arc<Service>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let router = corestream_serve::http::axum::router(service);
        corestream_serve::http::axum::serve(
            listener,
            router,
            Duration::from_secs(SECS),
            std::future::pending(),
        )
        .await
    });
    format!("http://{addr}")
}

/// The actix-web server (`corestream_serve::http::actix`) as `corestream serve --server actix`
/// runs it: one service (one `Batcher`) built outside `HttpServer::new`'s factory and shared
/// through `web::Data`, one HTTP worker, on its own actix system thread.
fn launch_actix<const SECS: u64>(service: Arc<Service>) -> String {
    use actix_web::{web, App, HttpServer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::from(service);
            HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .configure(corestream_serve::http::actix::routes)
            })
            .workers(1)
            .on_connect(corestream_serve::http::actix::on_connect)
            .client_request_timeout(Duration::from_secs(SECS))
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run()
            .await
            .unwrap()
        })
    });
    format!("http://{addr}")
}

/// The scenario tests both servers run, as `#[tokio::test]`s named alike in each test file:
/// `server_scenarios!(Server::Axum, "axum")` (the prefix names each scenario's batcher).
#[allow(unused_macros)] // faults/ has no use for it
macro_rules! server_scenarios {
    ($server:expr, $prefix:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn full_queue_is_429() {
            let _shared = crate::support::shared().await;
            crate::access::full_queue_is_429(
                crate::support::launcher($server),
                concat!($prefix, "-slow"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn too_many_in_flight_is_429() {
            let _shared = crate::support::shared().await;
            crate::access::too_many_in_flight_is_429(
                crate::support::launcher($server),
                concat!($prefix, "-inflight"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn api_key_guards_the_model_routes() {
            let _shared = crate::support::shared().await;
            crate::access::api_key_guards_the_model_routes(
                crate::support::launcher($server),
                concat!($prefix, "-key"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn only_json_bodies() {
            let _shared = crate::support::shared().await;
            crate::access::only_json_bodies(
                crate::support::launcher($server),
                concat!($prefix, "-json"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn tokenize_and_decode() {
            let _shared = crate::support::shared().await;
            crate::tokens::tokenize_and_decode(
                crate::support::launcher($server),
                concat!($prefix, "-tokens"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn prompts_go_before_the_inputs() {
            let _shared = crate::support::shared().await;
            crate::prompts::prompts_go_before_the_inputs(
                crate::support::launcher($server),
                concat!($prefix, "-prompts"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rerank_routes_score_as_the_model_does() {
            let _shared = crate::support::shared().await;
            crate::scores::rerank_scores(
                crate::support::launcher($server),
                concat!($prefix, "-rerank"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn predict_labels_as_the_model_does() {
            let _shared = crate::support::shared().await;
            crate::scores::predict_scores(
                crate::support::launcher($server),
                concat!($prefix, "-predict"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn several_models_each_answer_their_requests() {
            let _shared = crate::support::shared().await;
            crate::models::several_models(
                crate::support::launcher($server),
                concat!($prefix, "-models"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn embedding_models_refuse_the_scoring_routes() {
            let _shared = crate::support::shared().await;
            crate::scores::embedders_refuse_scoring(
                crate::support::launcher($server),
                concat!($prefix, "-refuse"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn health_follows_loading_failure_and_draining() {
            let _shared = crate::support::shared().await;
            crate::scenarios::health_follows_state(
                crate::support::launcher($server),
                concat!($prefix, "-health"),
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn openai_python_client_round_trip() {
            let _shared = crate::support::shared().await;
            let kind = if crate::support::minilm_dir().is_some() {
                crate::support::Kind::MiniLm
            } else {
                crate::support::Kind::TextNet
            };
            crate::scenarios::openai_python_client(
                crate::support::launcher($server),
                kind,
                concat!($prefix, "-openai-client"),
            )
            .await;
        }
    };
}

// ----- process-wide telemetry: one Prometheus recorder, one span-recording subscriber -----

/// `(span name, its batcher/model field)` of every span opened in this test process.
static SPANS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Batchers (by name) that ran a batch of several requests: only such a batch is stacked,
/// inside a `batch_form` span.
static STACKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records each new span's name and its `batcher` or `model` field.
struct SpanRecorder;

struct Label(String, u64);

impl Visit for Label {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "requests" {
            self.1 = value;
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "requests" {
            self.1 = u64::try_from(value).unwrap_or(0);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if matches!(field.name(), "batcher" | "model") {
            self.0 = value.to_owned();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), "batcher" | "model") {
            self.0 = format!("{value:?}").trim_matches('"').to_owned();
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for SpanRecorder {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        let mut label = Label(String::new(), 0);
        attrs.record(&mut label);
        if attrs.metadata().name() == "batch" && label.1 > 1 {
            STACKED.lock().unwrap().push(label.0.clone());
        }
        SPANS
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), label.0));
    }
}

/// Installs (once) the Prometheus recorder and the span recorder; returns the renderer for
/// `GET /metrics`. Call before building a batcher: batchers register their metrics when built.
pub fn telemetry() -> Arc<dyn Fn() -> String + Send + Sync> {
    static RENDER: OnceLock<Arc<dyn Fn() -> String + Send + Sync>> = OnceLock::new();
    RENDER
        .get_or_init(|| {
            let subscriber = tracing_subscriber::registry().with(SpanRecorder);
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            telemetry::renderer(telemetry::install_prometheus().expect("one global recorder"))
        })
        .clone()
}

/// Whether the batcher called `name` ran a batch of several requests (so stacked one, inside a
/// `batch_form` span).
pub fn stacked(name: &str) -> bool {
    STACKED.lock().unwrap().iter().any(|n| n == name)
}

/// Whether any span named `name` was opened.
pub fn any_span_named(name: &str) -> bool {
    SPANS.lock().unwrap().iter().any(|(n, _)| n == name)
}

/// Whether a span named `name` with batcher/model label `label` was opened.
pub fn span_seen(name: &str, label: &str) -> bool {
    SPANS
        .lock()
        .unwrap()
        .iter()
        .any(|(n, l)| n == name && l == label)
}

// ----- models -----

/// Inference backends to test: tract, and ONNX Runtime when its library is found (with
/// `CORESTREAM_REQUIRE_ORT=1` its absence fails).
pub fn backends(test: &str) -> Vec<Backend> {
    let mut out = vec![Backend::Tract];
    match embedder::ort_library() {
        Ok(_) => out.push(Backend::Ort),
        Err(e) => {
            assert!(
                std::env::var("CORESTREAM_REQUIRE_ORT").as_deref() != Ok("1"),
                "CORESTREAM_REQUIRE_ORT=1 but ONNX Runtime is unavailable: {e}"
            );
            eprintln!(
                "{test}: ONNX Runtime run skipped ({e}); fetch it with bash scripts/fetch-onnxruntime.sh"
            );
        }
    }
    out
}

/// The fetched MiniLM folder, or `None` (a failure under CI, which fetches it).
pub fn minilm_dir() -> Option<&'static Path> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    if dir
        .join(corestream_serve::model::source::LEGACY_ONNX)
        .exists()
    {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch the models (scripts/fetch-models.sh)"
    );
    eprintln!("models/ not fetched: skipping the MiniLM run (bash scripts/fetch-models.sh)");
    None
}

/// Which model a scenario serves.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// The bundled stand-in.
    TextNet,
    /// paraphrase-MiniLM-L3-v2 from `models/`.
    MiniLm,
}

/// A model of `kind` on `backend` as a boxed module, with its tokenizer.
pub fn load(kind: Kind, backend: Backend) -> (Model, TextTokenizer) {
    match kind {
        Kind::TextNet => {
            let (m, t) = embedder::TextNet::load_with_tokenizer(backend).unwrap();
            (Model(Arc::new(m)), t)
        }
        Kind::MiniLm => {
            let dir = minilm_dir().expect("MiniLM fetched");
            let (m, t) = corestream_serve::model::TextEmbedder::load_with_tokenizer(
                &corestream_serve::model::ModelFiles::from_dir(dir).unwrap(),
                backend,
            )
            .unwrap();
            (Model(Arc::new(m)), t)
        }
    }
}

/// Any embedder as one type, so scenarios need no generics.
#[derive(Clone)]
pub struct Model(pub Arc<dyn Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>>);

impl Module for Model {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        self.0.forward(x)
    }
}

/// A model that sleeps 150 ms per call, to fill the queue.
pub struct Slow(pub Model);

impl Module for Slow {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        std::thread::sleep(Duration::from_millis(150));
        self.0.forward(x)
    }
}

/// Batching options for tests: every CPU, `max_batch` 16, token budget by default.
pub fn options(queue: usize, max_batch: usize) -> BatchOptions {
    BatchOptions {
        pool: CpuPool::all().unwrap(),
        streams: Streams::Auto,
        max_batch,
        max_batch_tokens: None,
        max_wait: Duration::ZERO,
        queue,
        max_client_batch: 32,
        auto_truncate: false,
        count_only: false,
        width: corestream::Width::Narrow,
        tune: None,
    }
}

/// A ready service over `model` named `name`.
pub fn service<M>(
    model: M,
    tokenizer: TextTokenizer,
    name: &str,
    options: &BatchOptions,
) -> Arc<Service>
where
    M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
{
    let render = telemetry();
    let loaded: Loaded = serve_model(model, tokenizer, name, "test".into(), options).unwrap();
    Arc::new(Service::ready(loaded, render))
}

// ----- helpers -----

/// Largest absolute difference between two lists of vectors of the same shape.
pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

/// The unbatched result: each text alone through `model`, unit length when `normalize`.
pub fn reference(
    model: &Model,
    tokenizer: &TextTokenizer,
    texts: &[String],
    normalize: bool,
) -> Vec<Vec<f32>> {
    texts
        .iter()
        .map(|t| {
            let ids = tokenizer.encode(t).unwrap();
            let v = model.forward(Rows(vec![ids.into()])).unwrap().0.remove(0);
            if normalize {
                embedder::normalize(v)
            } else {
                v
            }
        })
        .collect()
}

/// Little-endian f32 vectors from base64.
pub fn from_base64(text: &str) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("valid base64");
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// An OpenAI `data[].embedding` as numbers, whichever the encoding.
pub fn openai_vector(value: &Value) -> Vec<f32> {
    match value {
        Value::String(s) => from_base64(s),
        Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        other => panic!("not an embedding: {other}"),
    }
}

/// Texts of request `i`: 1-3 sentences of varied length.
pub fn texts(i: usize) -> Vec<String> {
    (0..1 + i % 3)
        .map(|j| {
            format!(
                "request {i} sentence {j}: the quick brown fox {}",
                "jumps ".repeat(i % 7)
            )
        })
        .collect()
}

/// GETs `url`: status and JSON answer (`null` when the answer is not JSON).
pub async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs `body` (raw) to `base` + `path`: status and JSON answer.
pub async fn post(client: &reqwest::Client, url: String, body: String) -> (u16, Value) {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}"));
    (status, value)
}
