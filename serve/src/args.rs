//! The flags of `corestream serve`, each also read from an environment variable (for
//! containers): what to serve, on which backend and streams, with which batch and request
//! limits, on which server, and the client timeouts and drain.

use std::path::PathBuf;
use std::time::Duration;

use corestream::Streams;

use crate::model::accuracy::GateArgs;
use crate::model::quantized::QuantizedMode;
use crate::model::Pooling;
use crate::service::ApiKey;

/// The HTTP server the service runs on; both serve the same routes over the same core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Server {
    /// axum on hyper, with hyper-util's connection loop (the default).
    #[default]
    Axum,
    /// actix-web (needs the crate's feature `actix`, on by default).
    Actix,
}

/// The default of `--wide-max-rows` (see the README's light-load table).
pub const DEFAULT_WIDE_MAX_ROWS: usize = 8;

/// How wide batches run (`--width`; see [`corestream::Width`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WidthMode {
    /// A small batch runs across all the model's CPUs when nothing else is queued or running
    /// (a lone request is answered by every core), the rest on one stream each (the default;
    /// on ONNX Runtime only: tract computes on one thread, so it runs narrow).
    #[default]
    Adaptive,
    /// Every batch on one stream: throughput mode.
    Narrow,
    /// Every batch across all the model's CPUs, one at a time: latency mode.
    Wide,
}

/// The default of `--tune-seconds`: how long `--streams tune` measures, all candidates together.
pub const DEFAULT_TUNE_SECONDS: f64 = 4.0;

/// The range `--tune-seconds` accepts, in seconds.
pub const TUNE_SECONDS_RANGE: std::ops::RangeInclusive<f64> = 0.5..=60.0;

/// How many streams serve each model (`--streams`): `auto`, a count, or `tune`.
///
/// ```
/// use corestream::Streams;
/// use corestream_serve::StreamsChoice;
///
/// assert_eq!("auto".parse::<StreamsChoice>()?, StreamsChoice::Auto);
/// assert_eq!(" 4 ".parse::<StreamsChoice>()?, StreamsChoice::Count(4));
/// assert_eq!("Tune".parse::<StreamsChoice>()?, StreamsChoice::Tune);
/// assert!("tuned".parse::<StreamsChoice>().unwrap_err().contains("`tune`"));
/// assert!("0".parse::<StreamsChoice>().unwrap_err().contains("positive number"));
/// // A count or `auto` compares with the library's `Streams`.
/// assert_eq!(StreamsChoice::Count(2), Streams::Count(2));
/// assert_eq!(StreamsChoice::Tune.to_string(), "tune");
/// // `tune` starts from the streams `auto` would run.
/// assert_eq!(StreamsChoice::Tune.streams(), Streams::Auto);
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StreamsChoice {
    /// One stream per CPU the model may use, no more than the CPU quota pays for
    /// ([`Streams::Auto`]; the default).
    #[default]
    Auto,
    /// Exactly this many streams ([`Streams::Count`]).
    Count(usize),
    /// Before serving, a short sweep on the model itself over stream counts (threads per
    /// stream) and token budgets, on the CPUs `auto` would use; the profile that answers the
    /// most rows per second serves (see [`crate::service::tune`]; `--tune-seconds`).
    Tune,
}

impl StreamsChoice {
    /// The library's stream count this choice starts from: `tune` sweeps over the CPUs
    /// [`Streams::Auto`] uses.
    pub fn streams(self) -> Streams {
        match self {
            StreamsChoice::Count(n) => Streams::Count(n),
            StreamsChoice::Auto | StreamsChoice::Tune => Streams::Auto,
        }
    }

    /// Whether the streams stay within the CPUs the quota pays for (`auto` and `tune`).
    pub fn within_quota(self) -> bool {
        matches!(self, StreamsChoice::Auto | StreamsChoice::Tune)
    }
}

impl From<Streams> for StreamsChoice {
    fn from(streams: Streams) -> StreamsChoice {
        match streams {
            Streams::Auto => StreamsChoice::Auto,
            Streams::Count(n) => StreamsChoice::Count(n),
        }
    }
}

/// `auto` and a count equal the library's; `tune` equals no [`Streams`].
impl PartialEq<Streams> for StreamsChoice {
    fn eq(&self, other: &Streams) -> bool {
        match self {
            StreamsChoice::Tune => false,
            choice => choice.streams() == *other,
        }
    }
}

/// `auto`, `tune` (any case) or a positive count.
impl std::str::FromStr for StreamsChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<StreamsChoice, String> {
        if text.trim().eq_ignore_ascii_case("tune") {
            return Ok(StreamsChoice::Tune);
        }
        text.parse::<Streams>()
            .map(StreamsChoice::from)
            .map_err(|_| {
                format!(
                    "{:?}: expected `auto`, `tune` or a positive number of streams",
                    text.trim()
                )
            })
    }
}

/// `auto`, `tune` or the count, as [`FromStr`](std::str::FromStr) reads it.
impl std::fmt::Display for StreamsChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamsChoice::Tune => f.write_str("tune"),
            choice => choice.streams().fmt(f),
        }
    }
}

/// One `--model`: a path, and the name to serve it as (`NAME=PATH`; a path that exists is
/// taken whole, even with a `=` in it).
///
/// ```
/// use corestream_serve::ModelSpec;
///
/// let spec: ModelSpec = "BAAI/bge-reranker-base=models/bge-reranker".parse()?;
/// assert_eq!(spec.name.as_deref(), Some("BAAI/bge-reranker-base"));
/// assert_eq!(spec.path, std::path::Path::new("models/bge-reranker"));
/// // A path alone.
/// let spec: ModelSpec = "models/minilm".parse()?;
/// assert_eq!((spec.name, spec.path.to_str()), (None, Some("models/minilm")));
/// // A path that exists is a path, even with a `=` in it.
/// let dir = tempfile::tempdir().unwrap();
/// let odd = dir.path().join("a=b");
/// std::fs::create_dir(&odd).unwrap();
/// let spec: ModelSpec = odd.to_str().unwrap().parse()?;
/// assert_eq!((spec.name, spec.path), (None, odd));
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name in answers, `/info`, metrics and `/models/{name}/`; default: the directory's
    /// name (or `--served-model-name`).
    pub name: Option<String>,
    /// A model directory or an ONNX file.
    pub path: PathBuf,
}

impl std::str::FromStr for ModelSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<ModelSpec, String> {
        // A path that exists is a path, `=` and all; else `NAME=` names the model (names
        // may hold `/`, as Hugging Face's do).
        let named = text
            .split_once('=')
            .filter(|_| !std::path::Path::new(text).exists());
        let (name, path) = match named {
            Some((name, path)) => (Some(name.trim().to_owned()), path),
            None => (None, text),
        };
        if name.as_deref() == Some("") {
            return Err(format!("{text:?}: the name before `=` is empty"));
        }
        if path.trim().is_empty() {
            return Err(format!("{text:?}: no path"));
        }
        Ok(ModelSpec {
            name,
            path: PathBuf::from(path),
        })
    }
}

/// How several models share the CPUs (`--model-cpus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModelCpus {
    /// Each model gets its own CPUs, an equal share in `--model` order, and its streams on
    /// them: models do not slow each other down (the default).
    #[default]
    Split,
    /// Every model has streams on all the CPUs: a busy model may use the CPUs an idle one
    /// leaves, and the models contend when all are busy.
    Shared,
}

/// Flags of the embedding service; each also reads an environment variable.
///
/// ```
/// use clap::Parser;
/// use corestream_serve::Args;
///
/// #[derive(Parser)]
/// struct Command {
///     #[command(flatten)]
///     serve: Args,
/// }
///
/// let command = Command::parse_from(["serve", "--model", "models/minilm", "--streams", "2"]);
/// assert_eq!(command.serve.streams, corestream::Streams::Count(2));
/// let tuned = Command::parse_from(["serve", "--streams", "tune", "--tune-seconds", "2.5"]);
/// assert_eq!(tuned.serve.streams, corestream_serve::StreamsChoice::Tune);
/// assert_eq!(tuned.serve.tune_seconds, 2.5);
/// assert_eq!(command.serve.server, corestream_serve::Server::Axum);
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The model: a Hugging Face model directory as text-embeddings-inference takes it
    /// (tokenizer.json, onnx/model.onnx or model.onnx, 1_Pooling/config.json,
    /// sentence_bert_config.json), or an ONNX file (with --tokenizer, or the tokenizer.json
    /// beside it). Repeat it to serve several models (`NAME=PATH` names one): requests pick
    /// one by the OpenAI `model` field or the path `/models/NAME/...`; each reads its
    /// settings from its directory.
    #[arg(
        long,
        visible_alias = "model-id",
        env = "CORESTREAM_MODEL",
        value_name = "[NAME=]DIR|FILE.onnx",
        action = clap::ArgAction::Append
    )]
    pub model: Vec<ModelSpec>,
    /// With several --model: `split` gives each model its own equal share of the CPUs (its
    /// streams pinned there), `shared` gives every model streams on all of them.
    #[arg(
        long,
        value_enum,
        env = "CORESTREAM_MODEL_CPUS",
        default_value_t = ModelCpus::Split
    )]
    pub model_cpus: ModelCpus,
    /// Which ONNX file of the model directory to serve, relative to it, e.g.
    /// `onnx/model_qint8_avx512_vnni.onnx` among the quantized files Hugging Face repositories
    /// ship, or `model.onnx` for the FP32 file. Default: chosen as --quantized says. A
    /// quantized file passes the accuracy gate first (--min-cosine).
    #[arg(long, env = "CORESTREAM_ONNX_FILE", value_name = "PATH")]
    pub onnx_file: Option<PathBuf>,
    /// Without --onnx-file, which ONNX file of a model directory serves. `auto`: on ONNX
    /// Runtime, a quantized file of Hugging Face's names when the CPU (its /proc/cpuinfo flags)
    /// has what it is made for: AVX-512 VNNI or AMX -> onnx/model_qint8_avx512_vnni.onnx (else
    /// model_qint8_avx512.onnx, else model_quint8_avx2.onnx); AVX-512 BW ->
    /// model_qint8_avx512.onnx (else the AVX2 file); AVX2 -> model_quint8_avx2.onnx; else, or
    /// without such a file, the FP32 onnx/model.onnx or model.onnx. Other names (model_O1..O4,
    /// anything else) are never chosen by themselves. On tract the FP32 file (tract's int8 path
    /// measured 0.5-0.7x FP32's speed). `off`: the FP32 file. /info and the log
    /// say which file and why (`onnx_file`, `onnx_file_reason`). The chosen quantized file is
    /// served only if it passes the accuracy gate (--min-cosine), which adds about 1.2 s to
    /// startup for all-MiniLM-L6-v2 on ONNX Runtime (2 shared CPUs: ready after 1.4-1.6 s
    /// instead of 0.4-0.5 s; 2.5 s on tract).
    #[arg(
        long,
        value_enum,
        env = "CORESTREAM_QUANTIZED",
        default_value_t = QuantizedMode::Auto
    )]
    pub quantized: QuantizedMode,
    /// The accuracy gate's thresholds (`--min-cosine`, `--min-agreement`).
    #[command(flatten)]
    pub gate: GateArgs,
    /// The tokenizer file (a Hugging Face tokenizer.json) of an ONNX file given to --model.
    #[arg(long, env = "CORESTREAM_TOKENIZER", value_name = "FILE.json")]
    pub tokenizer: Option<PathBuf>,
    /// The model's name in answers, /info and metrics. Default: the model directory's name.
    #[arg(long, env = "CORESTREAM_SERVED_MODEL_NAME", value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Pooling, overriding the model's 1_Pooling/config.json: mean, cls, max or last-token.
    #[arg(long, env = "CORESTREAM_POOLING", value_name = "MODE")]
    pub pooling: Option<Pooling>,
    /// The prompt of the model's `config_sentence_transformers.json` that inputs get when a
    /// request names none (`prompt_name`); default: the file's `default_prompt_name`, else
    /// none.
    #[arg(
        long,
        env = "CORESTREAM_DEFAULT_PROMPT_NAME",
        value_name = "NAME",
        conflicts_with = "default_prompt"
    )]
    pub default_prompt_name: Option<String>,
    /// A text put before every input when a request names no prompt (e.g. `"query: "`).
    #[arg(long, env = "CORESTREAM_DEFAULT_PROMPT", value_name = "TEXT")]
    pub default_prompt: Option<String>,
    /// Without --model: a folder holding paraphrase-MiniLM-L3-v2.onnx and tokenizer.json, as
    /// scripts/fetch-models.sh leaves it (or any model directory).
    #[arg(
        long,
        env = "CORESTREAM_MODELS",
        default_value = "models",
        value_name = "DIR"
    )]
    pub models: PathBuf,
    /// Serve the bundled ExampleNet1 stand-in instead (no download needed; its vectors carry
    /// no meaning).
    #[arg(long, env = "CORESTREAM_TEXTNET")]
    pub textnet: bool,
    /// Inference backend: ort (ONNX Runtime) or tract. Default (also when empty or `auto`):
    /// ort when the ONNX Runtime library is found, else tract.
    #[arg(long, env = "CORESTREAM_BACKEND", value_name = "ort|tract")]
    pub backend: Option<String>,
    /// Streams: `auto` (one per CPU this process may use, within its CPU quota), a number, or
    /// `tune` (before serving, measure a few profiles on the model itself: stream counts, each
    /// with the CPUs shared out among its streams, and token budgets, on the CPUs `auto` would
    /// use, for --tune-seconds in all; the fastest serves, and /info and the log show them).
    /// The CPUs are shared out among the streams and each stream is pinned to its share.
    #[arg(
        long,
        env = "CORESTREAM_STREAMS",
        default_value = "auto",
        value_name = "auto|N|tune"
    )]
    pub streams: StreamsChoice,
    /// With `--streams tune`: how long the sweep measures, in seconds, all profiles together
    /// (0.5 to 60; each profile gets an equal share, its first part to warm up; a profile too
    /// slow to be measured within its share measures on, for up to this long again, and /info
    /// says how long the sweep took).
    #[arg(
        long,
        env = "CORESTREAM_TUNE_SECONDS",
        default_value_t = DEFAULT_TUNE_SECONDS,
        value_name = "SECONDS",
        value_parser = tune_seconds
    )]
    pub tune_seconds: f64,
    /// Most rows (inputs) per model call.
    #[arg(
        long,
        env = "CORESTREAM_MAX_BATCH",
        default_value_t = 16,
        value_name = "ROWS"
    )]
    pub max_batch: usize,
    /// Most tokens per model call (rows x longest row). Default: max-batch x the model's
    /// maximum input length (the row limit binds first).
    #[arg(long, env = "CORESTREAM_MAX_BATCH_TOKENS", value_name = "TOKENS")]
    pub max_batch_tokens: Option<usize>,
    /// Most inputs in one request (413 beyond).
    #[arg(
        long,
        env = "CORESTREAM_MAX_CLIENT_BATCH",
        default_value_t = 32,
        value_name = "N"
    )]
    pub max_client_batch: usize,
    /// How long an idle stream may wait for a fuller batch, in milliseconds.
    #[arg(
        long,
        env = "CORESTREAM_MAX_WAIT_MS",
        default_value_t = 0,
        value_name = "MS"
    )]
    pub max_wait_ms: u64,
    /// How wide batches run: adaptive (a small batch across all the model's CPUs when nothing
    /// else wants them, the rest on one stream each), narrow (throughput mode) or wide
    /// (latency mode).
    #[arg(long, value_enum, env = "CORESTREAM_WIDTH", default_value_t = WidthMode::Adaptive)]
    pub width: WidthMode,
    /// Most rows of a batch run across all CPUs under `--width adaptive`.
    #[arg(
        long,
        env = "CORESTREAM_WIDE_MAX_ROWS",
        default_value_t = DEFAULT_WIDE_MAX_ROWS,
        value_name = "N",
        value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u64).range(1..=1 << 20),
            |n| n as usize
        )
    )]
    pub wide_max_rows: usize,
    /// Most requests waiting; more get 503.
    #[arg(
        long,
        env = "CORESTREAM_QUEUE",
        default_value_t = 256,
        value_name = "N"
    )]
    pub queue: usize,
    /// Truncate over-long inputs when a request does not say (default: answer 413).
    #[arg(long, env = "CORESTREAM_TRUNCATE")]
    pub truncate: bool,
    /// Address to listen on.
    #[arg(
        long,
        env = "CORESTREAM_BIND",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR:PORT"
    )]
    pub bind: String,
    /// The HTTP server: axum (default) or actix (actix-web).
    #[arg(long, value_enum, env = "CORESTREAM_SERVER", default_value_t = Server::Axum)]
    pub server: Server,
    /// Threads of the HTTP server: tokio workers for axum (default: one per CPU), actix-web
    /// workers, each an event loop, for actix (default: 1, leaving the cores to the streams).
    #[arg(long, env = "CORESTREAM_HTTP_WORKERS", value_name = "N")]
    pub http_workers: Option<usize>,
    /// After SIGTERM, answer 503 on /health for this long (so load balancers stop routing
    /// here) while still serving, then stop accepting connections and finish what is in
    /// flight.
    #[arg(
        long,
        env = "CORESTREAM_DRAIN_DELAY_MS",
        default_value_t = 0,
        value_name = "MS"
    )]
    pub drain_delay_ms: u64,
    /// How long a client may take to send a request's headers, in milliseconds (then the
    /// connection is closed; actix-web answers 408 first).
    #[arg(
        long,
        env = "CORESTREAM_HEADER_TIMEOUT_MS",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request body, in milliseconds (then 408).
    #[arg(
        long,
        env = "CORESTREAM_BODY_TIMEOUT_MS",
        default_value_t = 10_000,
        value_name = "MS"
    )]
    pub body_timeout_ms: u64,
    /// Request body bytes held at once, in MiB: each request reserves its body's size (its
    /// Content-Length, or the 2 MiB limit for a chunked body) until it is answered; one that
    /// cannot within the body timeout gets 429 with a `Retry-After`.
    #[arg(
        long,
        env = "CORESTREAM_BODY_BUDGET_MIB",
        default_value_t = 64,
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(2..=1 << 20)
    )]
    pub body_budget_mib: u64,
    /// Answer 504 to a request not answered this long after its body arrived (e.g. `30s`,
    /// `1500ms`; a bare number is seconds). Default: no limit.
    #[arg(long, env = "CORESTREAM_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub request_timeout: Option<Duration>,
    /// Call the service stuck (`/health/live` and `/health` 503, so that an orchestrator
    /// restarts it) once a model call has run, or a request has waited for a stream, this long
    /// (e.g. `60s`; a bare number is seconds). A serve loop that ended makes it stuck at once.
    #[arg(
        long,
        env = "CORESTREAM_STUCK_AFTER",
        default_value = "60s",
        value_name = "DURATION",
        value_parser = duration
    )]
    pub stuck_after: Duration,
    /// Answer only requests with `Authorization: Bearer KEY` (401 otherwise) on every route
    /// but the health probes, `/metrics` and `/openapi.json`. Prefer the environment variable
    /// to the flag: a flag shows in the process list. Never logged.
    #[arg(
        long,
        env = "CORESTREAM_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = api_key
    )]
    pub api_key: Option<ApiKey>,
    /// The most POST requests in flight at once; past it, 429 with a `Retry-After` from the
    /// measured answer rate (as a full queue or body budget is answered).
    #[arg(
        long,
        env = "CORESTREAM_MAX_CONCURRENT_REQUESTS",
        default_value_t = crate::service::admission::DEFAULT_MAX_CONCURRENT_REQUESTS,
        value_name = "N",
        value_parser = clap::builder::TypedValueParser::map(
            clap::value_parser!(u64).range(1..=1 << 20),
            |n| n as usize
        )
    )]
    pub max_concurrent_requests: usize,
}

impl Args {
    /// Whether the flags fit together: with several `--model`, the flags that describe one
    /// model (`--served-model-name`, `--onnx-file`, `--tokenizer`, `--pooling`,
    /// `--default-prompt`, `--default-prompt-name`) are refused, since each model reads them
    /// from its own directory (`NAME=` names it); and no two models may share a name.
    ///
    /// ```
    /// use clap::Parser;
    /// use corestream_serve::Args;
    ///
    /// #[derive(Parser)]
    /// struct Command {
    ///     #[command(flatten)]
    ///     serve: Args,
    /// }
    ///
    /// let two = ["serve", "--model", "a=models/x", "--model", "b=models/y"];
    /// assert!(Command::parse_from(two).serve.check().is_ok());
    /// let pooled = Command::parse_from(two.into_iter().chain(["--pooling", "cls"]));
    /// assert!(pooled.serve.check().unwrap_err().contains("--pooling"));
    /// let same = ["serve", "--model", "a=models/x", "--model", "a=models/y"];
    /// assert!(Command::parse_from(same).serve.check().is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// What does not fit, and how to say it instead.
    pub fn check(&self) -> Result<(), String> {
        if self.model.len() <= 1 {
            return Ok(());
        }
        let one_model = [
            ("--served-model-name", self.served_model_name.is_some()),
            ("--onnx-file", self.onnx_file.is_some()),
            ("--tokenizer", self.tokenizer.is_some()),
            ("--pooling", self.pooling.is_some()),
            ("--default-prompt", self.default_prompt.is_some()),
            ("--default-prompt-name", self.default_prompt_name.is_some()),
        ];
        let given: Vec<&str> = one_model
            .iter()
            .filter(|(_, given)| *given)
            .map(|(flag, _)| *flag)
            .collect();
        if !given.is_empty() {
            return Err(format!(
                "{} describe one model, and {} --model are given: each model reads its \
                 settings from its own directory (1_Pooling/config.json, \
                 config_sentence_transformers.json), and `--model NAME=DIR` names it",
                given.join(", "),
                self.model.len()
            ));
        }
        for (i, spec) in self.model.iter().enumerate() {
            let Some(name) = &spec.name else { continue };
            if self.model[..i]
                .iter()
                .any(|s| s.name.as_ref() == Some(name))
            {
                return Err(format!("two --model are named {name:?}"));
            }
        }
        Ok(())
    }
}

/// An `--api-key`: not empty.
fn api_key(text: &str) -> Result<ApiKey, String> {
    ApiKey::new(text).ok_or_else(|| "the API key is empty".to_owned())
}

/// A duration flag: `humantime`'s `30s`, `1500ms`, `2m`, or a bare number of seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|e| e.to_string()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("{e}: give a duration such as 30s, 1500ms or 2m"))?;
    if parsed.is_zero() {
        return Err("the duration must be above zero".to_owned());
    }
    Ok(parsed)
}

/// A `--tune-seconds`: a number of seconds within [`TUNE_SECONDS_RANGE`].
fn tune_seconds(text: &str) -> Result<f64, String> {
    let (low, high) = (*TUNE_SECONDS_RANGE.start(), *TUNE_SECONDS_RANGE.end());
    match text.trim().parse::<f64>() {
        Ok(seconds) if TUNE_SECONDS_RANGE.contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "{text:?}: give the sweep's time in seconds, from {low} to {high} (e.g. 4)"
        )),
    }
}
