//! The service's configuration (flags and environment variables, shared by the axum and the
//! actix-web servers) and the model set-up: backend choice, model and tokenizer, streams, the
//! `Batcher` (token budget, grouping, name), and the `/info` figures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corestream::batch::Rows;
use corestream::{Batcher, CpuPool, Module, MultiStreamModule, Streams};

use crate::api::Info;
use crate::embedder::{self, Backend};
use crate::service::Loaded;
use crate::tokenizer::TextTokenizer;

/// Flags of the embedding service; each also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Inference backend: ort (ONNX Runtime) or tract. Default (also when empty or `auto`):
    /// ort when the ONNX Runtime library is found, else tract.
    #[arg(long, env = "CORESTREAM_BACKEND", value_name = "ort|tract")]
    pub backend: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "CORESTREAM_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Streams: "auto" (one per core) or a number.
    #[arg(long, env = "CORESTREAM_STREAMS", default_value = "auto")]
    pub streams: String,
    /// Most rows (inputs) per model call.
    #[arg(long, env = "CORESTREAM_MAX_BATCH", default_value_t = 16)]
    pub max_batch: usize,
    /// Most tokens per model call (rows x longest row). Default: max-batch x the model's
    /// maximum input length (the row limit binds first).
    #[arg(long, env = "CORESTREAM_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// Most inputs in one request (413 beyond).
    #[arg(long, env = "CORESTREAM_MAX_CLIENT_BATCH", default_value_t = 32)]
    pub max_client_batch: usize,
    /// How long an idle stream may wait for a fuller batch, in milliseconds.
    #[arg(long, env = "CORESTREAM_MAX_WAIT_MS", default_value_t = 0)]
    pub max_wait_ms: u64,
    /// Most requests waiting; more get 503.
    #[arg(long, env = "CORESTREAM_QUEUE", default_value_t = 256)]
    pub queue: usize,
    /// Folder with paraphrase-MiniLM-L3-v2.onnx and tokenizer.json.
    #[arg(long, env = "CORESTREAM_MODELS", default_value = "models")]
    pub models: PathBuf,
    /// Serve the bundled ExampleNet1 stand-in instead of MiniLM (no download needed).
    #[arg(long, env = "CORESTREAM_TEXTNET")]
    pub textnet: bool,
    /// Truncate over-long inputs when a request does not say (default: answer 413).
    #[arg(long, env = "CORESTREAM_TRUNCATE")]
    pub truncate: bool,
    /// After SIGTERM, answer 503 on /health for this long (so load balancers stop routing
    /// here) while still serving, then stop accepting connections and finish what is in
    /// flight.
    #[arg(long, env = "CORESTREAM_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,
    /// How long a client may take to send a request's headers, in milliseconds (then the
    /// connection is closed; actix-web answers 408 first).
    #[arg(long, env = "CORESTREAM_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request body, in milliseconds (then 408).
    #[arg(long, env = "CORESTREAM_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
}

/// `auto` or a stream count.
pub fn streams(text: &str) -> corestream::Result<Streams> {
    match text {
        "auto" => Ok(Streams::Auto),
        n => n.parse().map(Streams::Count).map_err(|_| {
            corestream::Error::InvalidConfig(format!("--streams {n:?}: expected auto or a number"))
        }),
    }
}

/// How a model is served: streams and batching.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// The CPUs of all streams.
    pub pool: CpuPool,
    /// How many streams.
    pub streams: Streams,
    /// Most rows per model call.
    pub max_batch: usize,
    /// Most tokens per model call; `None`: `max_batch` x the maximum input length.
    pub max_batch_tokens: Option<usize>,
    /// How long an idle stream may wait for a fuller batch.
    pub max_wait: Duration,
    /// Most requests waiting.
    pub queue: usize,
    /// Most inputs per request.
    pub max_client_batch: usize,
    /// Truncate when a request does not say.
    pub auto_truncate: bool,
    /// Batch by rows alone: no token budget, no grouping by length (the comparison point of
    /// `benches/serve.rs`).
    pub count_only: bool,
}

impl BatchOptions {
    /// The options `args` give, on every allowed CPU.
    pub fn from_args(args: &ServeArgs) -> corestream::Result<BatchOptions> {
        Ok(BatchOptions {
            pool: CpuPool::all()?,
            streams: streams(&args.streams)?,
            max_batch: args.max_batch,
            max_batch_tokens: args.max_batch_tokens,
            max_wait: Duration::from_millis(args.max_wait_ms),
            queue: args.queue,
            max_client_batch: args.max_client_batch,
            auto_truncate: args.truncate,
            count_only: false,
        })
    }
}

/// The padded length of one row of a request: its longest input, in tokens.
pub fn longest(ids: &Rows<Vec<u32>>) -> usize {
    ids.0.iter().map(Vec::len).max().unwrap_or(0)
}

/// Serves `model` (with `tokenizer`) behind a `Batcher` named `model_id` on streams as
/// `options` say. The recorder of the `metrics` facade must be installed before: the batcher
/// registers its metrics when built.
pub fn serve_model<M>(
    model: M,
    tokenizer: TextTokenizer,
    model_id: &str,
    backend: String,
    options: &BatchOptions,
) -> corestream::Result<Loaded>
where
    M: Module<Input = Rows<Vec<u32>>, Output = Rows<Vec<f32>>>,
{
    // The dimension, from one direct call (which also warms the model up).
    let probe = tokenizer
        .encode("dimension probe")
        .map_err(corestream::Error::InvalidConfig)?;
    let dimension = model
        .forward(Rows(vec![probe]))
        .map_err(corestream::Error::Module)?
        .0
        .first()
        .map_or(0, Vec::len);
    let max_input_length = tokenizer.max_input_length();
    let max_batch_tokens = options
        .max_batch_tokens
        .unwrap_or(options.max_batch * max_input_length);
    let msm = MultiStreamModule::builder(model)
        .pool(options.pool.clone())
        .num_streams(options.streams)
        .build()?;
    let stream_cpus = msm.pools().iter().map(ToString::to_string).collect();
    let streams = msm.num_streams();
    let mut builder = Batcher::builder(msm)
        .name(model_id)
        .max_batch(options.max_batch)
        .max_wait(options.max_wait)
        .queue_capacity(options.queue);
    if !options.count_only {
        builder = builder.max_batch_tokens(max_batch_tokens).tokens(longest);
    }
    let batcher = builder.build()?;
    let info = Info {
        model_id: model_id.to_owned(),
        dimension,
        max_input_length,
        max_input_length_source: tokenizer.max_input_length_source().to_owned(),
        backend,
        streams,
        stream_cpus,
        max_batch: options.max_batch,
        max_batch_tokens: if options.count_only {
            0
        } else {
            max_batch_tokens
        },
        max_client_batch_size: options.max_client_batch,
        queue_capacity: options.queue,
        auto_truncate: options.auto_truncate,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let batcher = Arc::new(batcher);
    let stats = Arc::clone(&batcher);
    Ok(Loaded {
        embedder: batcher,
        tokenizer: Arc::new(tokenizer),
        info,
        stats: Some(Arc::new(move || stats.stats())),
    })
}

/// The backend `args` ask for, or the default (ONNX Runtime when found, else tract).
pub fn backend(args: &ServeArgs) -> corestream::Result<Backend> {
    let explicit = match args.backend.as_deref() {
        None | Some("" | "auto") => None,
        Some(name) => Some(
            name.parse::<Backend>()
                .map_err(|e| corestream::Error::InvalidConfig(format!("--backend: {e}")))?,
        ),
    };
    Ok(embedder::backend_or_default(explicit))
}

/// Loads the model `args` name (MiniLM from `--models`, or TextNet) and serves it.
pub fn load(args: &ServeArgs) -> corestream::Result<Loaded> {
    let options = BatchOptions::from_args(args)?;
    let backend = backend(args)?;
    if args.textnet {
        let (model, tokenizer) = embedder::TextNet::load_with_tokenizer(backend)?;
        serve_model(model, tokenizer, "textnet", backend.describe(), &options)
    } else {
        let (model, tokenizer) = embedder::MiniLm::load_with_tokenizer(&args.models, backend)
            .map_err(|e| match e {
                corestream::Error::ModelLoad { model, message } => corestream::Error::ModelLoad {
                    model,
                    message: format!(
                        "{message} (run scripts/fetch-models.sh, or pass --textnet for the \
                         bundled stand-in)"
                    ),
                },
                e => e,
            })?;
        serve_model(
            model,
            tokenizer,
            "paraphrase-MiniLM-L3-v2",
            backend.describe(),
            &options,
        )
    }
}

/// Ctrl-C or SIGTERM (what Kubernetes sends): marks the service draining (`/health` 503),
/// keeps serving for `delay`, then returns, which starts the server's graceful shutdown (no
/// new connections, requests in flight finish).
pub async fn drain_on_signal(service: Arc<crate::service::Service>, delay: Duration) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    service
        .health
        .set(crate::health::State::Draining, Some("draining".into()));
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "draining: /health answers 503, stopping after the delay"
    );
    tokio::time::sleep(delay).await;
    tracing::info!("shutting down: finishing requests in flight");
}
