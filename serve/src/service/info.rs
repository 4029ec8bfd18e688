//! What `GET /info` answers: the served model and how it is served (backend, streams and their
//! CPUs, batch limits, input length), decided when the model is loaded.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::accuracy::Accuracy;
use crate::service::tune::Tuning;

/// `GET /info`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Info {
    /// The served model.
    pub model_id: String,
    /// What it answers: `embedding` (`/embed`, `/v1/embeddings`), `reranker` (`/rerank`,
    /// `/v1/rerank`) or `classifier` (`/predict`), from its `config.json`.
    pub model_type: String,
    /// A classifier's labels, in output order (`config.json`'s `id2label`).
    pub labels: Vec<String>,
    /// Length of each vector (of a reranker's or classifier's scores: 1 or the labels).
    pub dimension: usize,
    /// Longest input in tokens, special tokens included.
    pub max_input_length: usize,
    /// Where `max_input_length` was read.
    pub max_input_length_source: String,
    /// The inference backend (`ort` with its library version, or `tract`).
    pub backend: String,
    /// Streams serving the model (`--streams auto`: one per CPU, no more than the CPU quota
    /// pays for; `--streams tune`: the count `tuning` chose).
    pub streams: usize,
    /// The process's CPU quota in CPUs (cgroup `cpu.max`, Kubernetes' CPU limit), if set.
    pub cpu_quota: Option<f64>,
    /// The CPUs of each stream, e.g. `CpuPool[0]`.
    pub stream_cpus: Vec<String>,
    /// How wide batches run: `narrow` (each on one stream), `wide` (each across all the
    /// model's CPUs) or `adaptive (wide up to N rows)` (`--width`).
    pub width: String,
    /// Most rows in one model call.
    pub max_batch: usize,
    /// Most tokens (rows x longest row) in one model call (0: batches by rows alone).
    pub max_batch_tokens: usize,
    /// Most inputs in one request.
    pub max_client_batch_size: usize,
    /// Most requests waiting; more answer 503.
    pub queue_capacity: usize,
    /// Whether over-long inputs are truncated when a request does not say.
    pub auto_truncate: bool,
    /// How token vectors become one vector: `mean`, `cls`, `max`, `last-token`, or `none` for
    /// a model that answers one vector per input itself.
    pub pooling: String,
    /// The ONNX file served (its name; `--onnx-file` picks one of a directory's, else the
    /// CPU's features choose among its quantized files: `--quantized`).
    pub onnx_file: Option<String>,
    /// Why that file: `cpu has avx512_vnni: onnx/model_qint8_avx512_vnni.onnx`, `the
    /// directory's FP32 file: onnx/model.onnx`, `--onnx-file ...`, `--quantized off: ...`.
    #[serde(default)]
    pub onnx_file_reason: Option<String>,
    /// For a quantized file: how it compared with the directory's FP32 file on the accuracy
    /// gate's probes (mean and worst cosine, or rank or label agreement), the thresholds and
    /// how long the gate took; `null` when no gate ran (an FP32 file, no FP32 file to compare
    /// with, or the gate turned off).
    #[serde(default)]
    pub accuracy_gate: Option<Accuracy>,
    /// The prompts a request may name (`prompt_name`), from the model's
    /// `config_sentence_transformers.json`.
    pub prompts: Vec<String>,
    /// The prompt a request gets when it names none, when it is a named one.
    pub default_prompt_name: Option<String>,
    /// The text of the prompt a request gets when it names none.
    pub default_prompt: Option<String>,
    /// The service's (corestream's) version.
    pub version: String,
    /// Every model this server serves, by name, in `--model` order (this one among them):
    /// `/models/{name}/info` describes each.
    #[serde(default)]
    pub models: Vec<String>,
    /// With `--streams tune`: the profiles (streams x threads per stream, token budget)
    /// measured on the model before it served, each one's rows per second, and the one
    /// chosen, which `streams`, `stream_cpus` and `max_batch_tokens` describe; `null` when the
    /// streams were not tuned.
    #[serde(default)]
    pub tuning: Option<Tuning>,
}
