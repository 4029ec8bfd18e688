//! Loading the models and serving them: backend choice, model files and tokenizer, each
//! model's share of the CPUs and its streams (counted, or tuned on the model first:
//! [`tune`]), the `Batcher` (token budget, grouping, name), and the
//! `/info` figures, from the [`Args`].

use std::sync::Arc;
use std::time::Duration;

use corestream::batch::Rows;
use corestream::{Batcher, CpuPool, Module, MultiStreamModule, Streams, Width};

use crate::args::{Args, ModelCpus, ModelSpec, StreamsChoice, WidthMode};
use crate::model::accuracy;
use crate::model::embedder::{self, Backend};
use crate::model::encoded::{longest, Encoded};
use crate::model::quantized::CpuFeatures;
use crate::model::{ModelFiles, ModelKind, Prompts, TextEmbedder, TextNet, TextTokenizer};
use crate::service::info::Info;
use crate::service::models::Models;
use crate::service::state::{Embedder, Loaded};
use crate::service::tune::{self, Tuning};

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
    /// `benches/serve/`).
    pub count_only: bool,
    /// How wide batches run (on tract, always narrow: see [`BatchOptions::for_backend`]).
    pub width: Width,
    /// `--streams tune`: before serving, sweep stream counts and token budgets on the model
    /// for this long in all, on the CPUs [`Streams::Auto`] would use, and serve the fastest
    /// profile (then `streams`, and `max_batch_tokens` unless set, are the sweep's to choose;
    /// see [`tune`]). `None`: serve as `streams` says.
    pub tune: Option<Duration>,
}

impl BatchOptions {
    /// The options `args` give, on every allowed CPU.
    pub fn from_args(args: &Args) -> corestream::Result<BatchOptions> {
        Ok(BatchOptions {
            pool: CpuPool::all()?,
            streams: args.streams.streams(),
            max_batch: args.max_batch,
            max_batch_tokens: args.max_batch_tokens,
            max_wait: Duration::from_millis(args.max_wait_ms),
            queue: args.queue,
            max_client_batch: args.max_client_batch,
            auto_truncate: args.truncate,
            count_only: false,
            width: match args.width {
                WidthMode::Adaptive => Width::adaptive(args.wide_max_rows),
                WidthMode::Narrow => Width::Narrow,
                WidthMode::Wide => Width::Wide,
            },
            tune: (args.streams == StreamsChoice::Tune)
                .then(|| Duration::from_secs_f64(args.tune_seconds)),
        })
    }

    /// The token budget of a model whose inputs hold up to `max_input_length` tokens:
    /// `max_batch_tokens`, else `max_batch` x `max_input_length`.
    pub fn budget(&self, max_input_length: usize) -> usize {
        self.max_batch_tokens
            .unwrap_or(self.max_batch.saturating_mul(max_input_length))
    }

    /// These options for a model on `backend`: tract computes a call on its calling thread
    /// only, so a wide batch would hold every CPU and use one; its batches run narrow.
    pub fn for_backend(&self, backend: Backend) -> BatchOptions {
        let width = match backend {
            Backend::Tract => Width::Narrow,
            _ => self.width,
        };
        BatchOptions {
            width,
            ..self.clone()
        }
    }
}

/// How `/info` and the log name a width.
pub fn width_name(width: Width) -> String {
    match width {
        Width::Adaptive { rows, .. } => format!("adaptive (wide up to {rows} rows)"),
        Width::Wide => "wide".to_owned(),
        _ => "narrow".to_owned(),
    }
}

/// Serves `model` (with `tokenizer`) behind a `Batcher` named `model_id` on streams as
/// `options` say; with [`BatchOptions::tune`], on the profile a sweep on the model chose first
/// ([`tune::sweep`]; the serving batcher is built once, with it). The recorder of the
/// `metrics` facade must be installed before: the batcher registers its metrics when built.
pub fn serve_model<M>(
    model: M,
    tokenizer: TextTokenizer,
    model_id: &str,
    backend: String,
    options: &BatchOptions,
) -> corestream::Result<Loaded>
where
    M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
{
    // The dimension, from one direct call (which also warms the model up).
    let probe = tokenizer
        .encode("dimension probe")
        .map_err(corestream::Error::InvalidConfig)?;
    let dimension = model
        .forward(Rows(vec![Encoded::single(probe)]))
        .map_err(corestream::Error::Module)?
        .0
        .first()
        .map_or(0, Vec::len);
    let parts = Parts {
        tokenizer,
        model_id,
        backend,
        dimension,
    };
    let Some(time) = options.tune else {
        let batcher = batcher(model, model_id, options, parts.tokenizer.max_input_length())?;
        return Ok(parts.serve(batcher, options, None));
    };
    // The sweep's batchers share the model (never copied); then the serving batcher gets it
    // back whole (a model of its own, as without tuning), built once, with the choice.
    let shared = Arc::new(model);
    let (chosen, tuning) = tune::sweep(&shared, &parts.tokenizer, model_id, options, time)?;
    let max_input_length = parts.tokenizer.max_input_length();
    Ok(match Arc::try_unwrap(shared) {
        Ok(model) => {
            let batcher = batcher(model, model_id, &chosen, max_input_length)?;
            parts.serve(batcher, &chosen, Some(tuning))
        }
        Err(shared) => {
            let batcher = batcher(shared, model_id, &chosen, max_input_length)?;
            parts.serve(batcher, &chosen, Some(tuning))
        }
    })
}

/// What [`serve_model`] knows of a model besides its batcher.
struct Parts<'a> {
    tokenizer: TextTokenizer,
    model_id: &'a str,
    backend: String,
    dimension: usize,
}

impl Parts<'_> {
    /// The model served by `batcher`, built as `options` say, with its `/info`.
    fn serve<M>(self, batcher: Batcher<M>, options: &BatchOptions, tuning: Option<Tuning>) -> Loaded
    where
        M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
    {
        let Parts {
            tokenizer,
            model_id,
            backend,
            dimension,
        } = self;
        let max_input_length = tokenizer.max_input_length();
        let msm = batcher.module();
        let info = Info {
            model_id: model_id.to_owned(),
            dimension,
            max_input_length,
            max_input_length_source: tokenizer.max_input_length_source().to_owned(),
            backend,
            streams: msm.num_streams(),
            cpu_quota: corestream::quota::CpuQuota::detect().map(|q| q.cpus()),
            stream_cpus: msm.pools().iter().map(ToString::to_string).collect(),
            width: width_name(batcher.width()),
            max_batch: options.max_batch,
            max_batch_tokens: if options.count_only {
                0
            } else {
                options.budget(max_input_length)
            },
            max_client_batch_size: options.max_client_batch,
            queue_capacity: options.queue,
            auto_truncate: options.auto_truncate,
            pooling: "none".to_owned(),
            model_type: ModelKind::Embedding.name().to_owned(),
            labels: Vec::new(),
            onnx_file: None,
            onnx_file_reason: None,
            accuracy_gate: None,
            prompts: Vec::new(),
            default_prompt_name: None,
            default_prompt: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            // Every served model's name: set when the models are gathered (`Models`).
            models: Vec::new(),
            tuning,
        };
        let batcher = Arc::new(batcher);
        Loaded {
            embedder: Arc::clone(&batcher) as Embedder,
            tokenizer: Arc::new(tokenizer),
            info,
            monitor: Some(batcher),
            prompts: Prompts::default(),
            kind: ModelKind::Embedding,
        }
    }
}

/// The `Batcher` named `name` over `model` on streams as `options` say (its CPUs and stream
/// count: [`BatchOptions::tune`] is the caller's), for inputs of up to `max_input_length`
/// tokens: what serving runs, and what the streams sweep measures.
pub(crate) fn batcher<M>(
    model: M,
    name: &str,
    options: &BatchOptions,
    max_input_length: usize,
) -> corestream::Result<Batcher<M>>
where
    M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
{
    let msm = MultiStreamModule::builder(model)
        .pool(options.pool.clone())
        .num_streams(options.streams)
        .build()?;
    let mut builder = Batcher::builder(msm)
        .name(name)
        .max_batch(options.max_batch)
        .max_wait(options.max_wait)
        .queue_capacity(options.queue)
        .width(options.width);
    if !options.count_only {
        builder = builder
            .max_batch_tokens(options.budget(max_input_length))
            .tokens(longest);
    }
    builder.build()
}

/// The backend `args` ask for, or the default (ONNX Runtime when found, else tract).
pub fn backend(args: &Args) -> corestream::Result<Backend> {
    let explicit = match args.backend.as_deref().map(str::trim) {
        None | Some("" | "auto") => None,
        Some(name) => Some(
            name.parse::<Backend>()
                .map_err(|e| corestream::Error::InvalidConfig(format!("--backend: {e}")))?,
        ),
    };
    Ok(embedder::backend_or_default(explicit))
}

/// The files of the model `spec` names (a `--model`: a directory or an ONNX file, with
/// `--tokenizer`), else of the folder `--models` (earlier releases' flag), with the flags of
/// `args` that apply to one model. A directory's ONNX file is `--onnx-file`, else the one
/// `--quantized`, the CPU's features and `backend` choose ([`ModelFiles::with_quantized`]); the accuracy
/// gate's thresholds are `--min-cosine` and `--min-agreement`.
pub fn model_files(
    args: &Args,
    spec: Option<&ModelSpec>,
    backend: Backend,
) -> corestream::Result<ModelFiles> {
    let mut files = match spec {
        Some(spec) => ModelFiles::locate(&spec.path, args.tokenizer.as_deref()),
        None => ModelFiles::from_dir(&args.models).map_err(|e| match e {
            corestream::Error::ModelLoad { model, message } => corestream::Error::ModelLoad {
                model,
                message: format!(
                    "{message} (pass --model DIR with a Hugging Face model directory, run \
                     scripts/fetch-models.sh, or pass --textnet for the bundled stand-in)"
                ),
            },
            e => e,
        }),
    }?;
    if let Some(file) = &args.onnx_file {
        let dir = match spec.map(|s| &s.path) {
            Some(path) if path.is_dir() => path.clone(),
            Some(_) => {
                return Err(corestream::Error::ModelLoad {
                    model: file.display().to_string(),
                    message: "--onnx-file picks a file of a model directory: give --model DIR"
                        .to_owned(),
                })
            }
            None => args.models.clone(),
        };
        files = files.with_onnx_file(&dir, file)?;
    } else if spec.is_none_or(|s| s.path.is_dir()) {
        files = files.with_quantized(args.quantized, &CpuFeatures::detect(), backend);
    }
    files.gate = args.gate.thresholds();
    if let Some(pooling) = args.pooling {
        files.pooling = pooling;
        files.pooling_source = "--pooling".to_owned();
    }
    if let Some(name) = spec
        .and_then(|s| s.name.as_ref())
        .or(args.served_model_name.as_ref())
    {
        files.name.clone_from(name);
    }
    Ok(files)
}

/// The CPUs of each of `models` models out of `pool`, as `--model-cpus` says: all of them for
/// each (`shared`, or one model), or an equal share each (`split`, in order). Under a CPU quota
/// with `--streams auto` or `tune`, the shares are cut from the CPUs the quota pays for. When there are
/// fewer CPUs than models, the models share them (and the log says so).
pub fn model_pools(args: &Args, pool: &CpuPool, models: usize) -> corestream::Result<Vec<CpuPool>> {
    let mut pool = pool.clone();
    if models <= 1 || args.model_cpus == ModelCpus::Shared {
        return Ok(vec![pool; models.max(1)]);
    }
    if args.streams.within_quota() {
        if let Some(quota) = corestream::quota::CpuQuota::detect() {
            let paid = Streams::auto_count(pool.len(), Some(&quota));
            if paid < pool.len() {
                pool = CpuPool::new(pool.cpus()[..paid].iter().copied())?;
            }
        }
    }
    if pool.len() < models {
        tracing::warn!(
            cpus = pool.len(),
            models,
            "fewer CPUs than models: every model gets streams on all of them (--model-cpus shared)"
        );
        return Ok(vec![pool; models]);
    }
    pool.split(models)
}

/// Loads the models `args` name (see [`model_files`]; the bundled TextNet with `--textnet`),
/// each on its CPUs (see [`model_pools`]), and serves them.
pub fn load(args: &Args) -> corestream::Result<Models> {
    let options = BatchOptions::from_args(args)?;
    if args.textnet {
        return load_one(args, None, &options).map(Models::from);
    }
    let specs: Vec<Option<&ModelSpec>> = if args.model.is_empty() {
        vec![None]
    } else {
        args.model.iter().map(Some).collect()
    };
    let pools = model_pools(args, &options.pool, specs.len())?;
    let mut models = Vec::with_capacity(specs.len());
    for (spec, pool) in specs.into_iter().zip(pools) {
        let options = BatchOptions {
            pool,
            ..options.clone()
        };
        models.push(load_one(args, spec, &options)?);
    }
    Models::new(models).map_err(corestream::Error::InvalidConfig)
}

/// Loads the model of `files` on `backend` and serves it as `options` say, as what its
/// directory says it is (embedder, reranker or classifier: [`Loaded::set_kind`]), with its
/// pooling and ONNX file (and why that file) in `/info`. A quantized file passes the accuracy
/// gate first ([`accuracy::gate`]: compared with its directory's FP32 file, which is loaded
/// for it and dropped), or does not load. Its prompts are the caller's to set.
pub fn serve_files(
    files: &ModelFiles,
    backend: Backend,
    options: &BatchOptions,
) -> corestream::Result<Loaded> {
    let (model, tokenizer) = TextEmbedder::load_with_tokenizer(files, backend)?;
    let gate = accuracy::gate(files, &model, &tokenizer, backend)?;
    let kind = model.kind().clone();
    let pooling = model.pooling();
    let options = &options.for_backend(backend);
    let mut loaded = serve_model(model, tokenizer, &files.name, backend.describe(), options)?;
    loaded.set_kind(kind);
    loaded.info.pooling = pooling.map_or_else(|| "none".to_owned(), |p| p.to_string());
    loaded.info.onnx_file = files
        .onnx
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    loaded.info.onnx_file_reason = Some(files.onnx_reason.clone());
    loaded.info.accuracy_gate = gate;
    Ok(loaded)
}

/// Loads the model `spec` names (or the bundled TextNet with `--textnet`) and serves it as
/// `options` say.
fn load_one(
    args: &Args,
    spec: Option<&ModelSpec>,
    options: &BatchOptions,
) -> corestream::Result<Loaded> {
    let backend = backend(args)?;
    let (mut loaded, prompts) = if args.textnet {
        let (model, tokenizer) = TextNet::load_with_tokenizer(backend)?;
        let name = args.served_model_name.as_deref().unwrap_or("textnet");
        let options = &options.for_backend(backend);
        let loaded = serve_model(model, tokenizer, name, backend.describe(), options)?;
        (loaded, Prompts::default())
    } else {
        let files = model_files(args, spec, backend)?;
        (serve_files(&files, backend, options)?, files.prompts)
    };
    let prompts = prompts
        .with_default(
            args.default_prompt.as_deref(),
            args.default_prompt_name.as_deref(),
        )
        .map_err(|message| corestream::Error::ModelLoad {
            model: loaded.info.model_id.clone(),
            message,
        })?;
    loaded.set_prompts(prompts);
    Ok(loaded)
}
