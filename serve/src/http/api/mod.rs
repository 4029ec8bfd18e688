//! The service's wire format, independent of the HTTP framework: request and response bodies of
//! every route (serde) with their OpenAPI schemas (utoipa), and the two error shapes: OpenAI's
//! `{"error": {"message", "type", "code"}}` on `/v1/*`, text-embeddings-inference's
//! `{"error", "error_type"}` everywhere else (its `error` string is also what the original
//! `{"texts"}` route answered).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod scores;

pub use scores::{
    CohereRerankRequest, CohereRerankResponse, CohereResult, Document, DocumentText, PredictInput,
    PredictItem, PredictRequest, PredictResponse, Prediction, Rank, RerankRequest, RerankResponse,
    RerankUsage,
};

pub use crate::service::info::Info;

/// `POST /v1/embeddings` (OpenAI). Unknown fields are ignored, as OpenAI-compatible servers do.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OpenAiRequest {
    /// A text, a list of texts, a list of token ids, or a list of lists of token ids (ids of
    /// this model's tokenizer, `0..vocab`).
    pub input: OpenAiInput,
    /// The model to answer, by its served name; with one model served, any name (that
    /// model answers, and its id is echoed in `model`). A path prefix
    /// `/models/{name}/` wins over it.
    #[serde(default)]
    pub model: Option<String>,
    /// `float` (default) or `base64`: each vector as little-endian f32 bytes in base64, as
    /// OpenAI sends it (the official clients ask for base64).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// The output size, 1 to the model's dimension (`GET /info`): fewer keep the leading
    /// dimensions and renormalise (Matryoshka truncation: meaningful for models trained for it,
    /// such as nomic-embed, mxbai-embed, gte-modernbert and OpenAI's text-embedding-3).
    #[serde(default, deserialize_with = "crate::http::bounded::optional_whole")]
    #[schema(minimum = 1)]
    pub dimensions: Option<u64>,
    /// Ignored (OpenAI's end-user id).
    #[allow(dead_code)] // accepted, not used
    #[serde(default)]
    pub user: Option<String>,
    /// Extension: truncate over-long inputs instead of answering 413 (default: the server's
    /// `--truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Extension: a prompt of the model's `config_sentence_transformers.json` put before
    /// each text input (`GET /info` lists them; default: the server's default prompt).
    #[serde(default)]
    #[schema(nullable = true)]
    pub prompt_name: Option<String>,
}

/// OpenAI's `input`. Deserialised by a visitor that reads each form straight into its
/// vectors and stops at `--max-client-batch` inputs (see [`crate::http::bounded`]), not by
/// serde's untagged buffering.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum OpenAiInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One input as token ids.
    Tokens(Vec<u32>),
    /// Several inputs as token ids.
    TokenLists(Vec<Vec<u32>>),
}

/// How vectors are encoded in OpenAI responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON list of numbers.
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
}

/// `POST /v1/embeddings` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiResponse {
    /// Always `list`.
    pub object: String,
    /// One entry per input, in input order.
    pub data: Vec<OpenAiEmbedding>,
    /// The served model's id.
    pub model: String,
    /// Token counts.
    pub usage: Usage,
}

/// One vector of an OpenAI answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    pub object: String,
    /// The unit-length vector: numbers, or a base64 string with `encoding_format: base64`.
    pub embedding: EmbeddingValue,
    /// Its input's position.
    pub index: usize,
}

/// A vector as numbers or as base64.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// Tokens counted for a request (special tokens included, after truncation).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Tokens of all inputs.
    pub prompt_tokens: usize,
    /// The same (embeddings produce no tokens).
    pub total_tokens: usize,
}

/// OpenAI's error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiError {
    /// What went wrong.
    pub error: OpenAiErrorDetail,
}

/// OpenAI's error details.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorDetail {
    /// What was wrong and what is allowed.
    pub message: String,
    /// `invalid_request_error`, `overloaded_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A machine-readable code (`invalid_json`, `input_too_long`, `too_many_inputs`, ...).
    pub code: Option<String>,
}

/// `POST /embed`: text-embeddings-inference's body, or the original `{"texts"}`. Only the
/// OpenAPI schema: the handler picks the form by its keys, for clearer errors.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbedRequest {
    /// text-embeddings-inference: answered with a bare list of vectors.
    Tei(TeiRequest),
    /// The original form: answered with `{"model", "dim", "embeddings"}`, unit vectors.
    Texts(TextsRequest),
}

/// text-embeddings-inference's `/embed` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiRequest {
    /// A text or a list of texts.
    pub inputs: TeiInput,
    /// Unit-length vectors (default true).
    #[serde(default = "yes")]
    pub normalize: bool,
    /// Truncate over-long inputs instead of answering 413 (default: the server's `--truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end truncation keeps: `Right` (default) cuts the end, `Left` the start.
    #[serde(default)]
    pub truncation_direction: Option<TruncationDirection>,
    /// A prompt of the model's `config_sentence_transformers.json` put before each input
    /// (`GET /info` lists them; default: the server's default prompt).
    #[serde(default)]
    #[schema(nullable = true)]
    pub prompt_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// An optional field that may be absent but not `null`.
fn not_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// text-embeddings-inference's `inputs` (deserialised as [`OpenAiInput`] is).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TeiInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
}

impl TeiInput {
    /// The texts, one for [`TeiInput::Text`].
    pub fn into_texts(self) -> Vec<String> {
        match self {
            TeiInput::Text(t) => vec![t],
            TeiInput::Texts(t) => t,
        }
    }
}

/// Which end of an over-long input is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum TruncationDirection {
    /// Cut the start.
    Left,
    /// Cut the end.
    Right,
}

/// The original `/embed` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextsRequest {
    /// The texts.
    #[serde(deserialize_with = "crate::http::bounded::list")]
    pub texts: Vec<String>,
}

/// What `POST /embed` is parsed into: either form's fields, so that the body is read once,
/// without an intermediate JSON tree; the handler then checks that the fields make one form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmbedBody {
    pub(crate) inputs: Option<TeiInput>,
    #[serde(default, deserialize_with = "crate::http::bounded::optional_list")]
    pub(crate) texts: Option<Vec<String>>,
    /// Absent is `true`; `null` is refused, as [`TeiRequest::normalize`]'s schema says.
    #[serde(default, deserialize_with = "not_null")]
    pub(crate) normalize: Option<bool>,
    pub(crate) truncate: Option<bool>,
    pub(crate) truncation_direction: Option<TruncationDirection>,
    pub(crate) prompt_name: Option<String>,
}

/// Answer to `{"texts"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbedResponse {
    /// The served model's id.
    pub model: String,
    /// Length of each vector.
    pub dim: usize,
    /// One unit vector per text.
    pub embeddings: Vec<Vec<f32>>,
}

/// What `POST /embed` answers: a bare list for `{"inputs"}`, an object for `{"texts"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbedAnswer {
    /// text-embeddings-inference's answer: one vector per input.
    Tei(Vec<Vec<f32>>),
    /// The original answer.
    Texts(EmbedResponse),
}

/// text-embeddings-inference's error body (also the original service's).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TeiError {
    /// What was wrong and what is allowed.
    pub error: String,
    /// `Validation`, `Overloaded`, `Unhealthy` or `Backend`.
    pub error_type: String,
}

/// `GET /health`, `/health/live`, `/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok`, `loading`, `failed` or `draining`.
    pub status: String,
    /// Why it is not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /tokenize` (text-embeddings-inference): the tokens of each input as the model sees
/// them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// A text or a list of texts (at most `--max-client-batch`).
    pub inputs: TeiInput,
    /// Add the model's special tokens (`[CLS]`, `[SEP]`), as embedding does (default true).
    #[serde(default = "yes")]
    pub add_special_tokens: bool,
    /// A prompt of the model's `config_sentence_transformers.json` put before each input,
    /// as embedding puts it (`GET /info` lists them; default: the server's default prompt);
    /// offsets are then into the prompted text.
    #[serde(default)]
    #[schema(nullable = true)]
    pub prompt_name: Option<String>,
}

/// One token of a `POST /tokenize` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SimpleToken {
    /// Its id in the model's vocabulary.
    pub id: u32,
    /// The input's text it covers, or the special token's own text (`[CLS]`).
    pub text: String,
    /// A special token, added by the tokenizer: no offsets.
    pub special: bool,
    /// The byte offset in the input where it starts (`null` for a special token).
    pub start: Option<usize>,
    /// The byte offset in the input where it ends.
    pub stop: Option<usize>,
}

/// `POST /tokenize` answer: one list of tokens per input, in input order (a list of one
/// for a single text).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!([[{"id": 101, "text": "[CLS]", "special": true, "start": null, "stop": null}, {"id": 7592, "text": "hello", "special": false, "start": 0, "stop": 5}]]))]
pub struct TokenizeResponse(pub Vec<Vec<SimpleToken>>);

/// `POST /decode` (text-embeddings-inference): token ids back to text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeRequest {
    /// One input's token ids, or a list of them (at most `--max-client-batch`); ids of this
    /// model's vocabulary (`0..vocab`).
    pub ids: InputIds,
    /// Leave the special tokens out of the text (default true).
    #[serde(default = "yes")]
    pub skip_special_tokens: bool,
}

/// Token ids of one input or of several. Deserialised by a visitor that reads them straight
/// into their vectors and stops at `--max-client-batch` inputs (see
/// [`crate::http::bounded`]).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum InputIds {
    /// One input.
    Single(Vec<u32>),
    /// Several inputs.
    Batch(Vec<Vec<u32>>),
}

impl InputIds {
    /// The inputs' ids, one list for [`InputIds::Single`].
    pub fn into_lists(self) -> Vec<Vec<u32>> {
        match self {
            InputIds::Single(ids) => vec![ids],
            InputIds::Batch(ids) => ids,
        }
    }
}

/// `POST /decode` answer: one text per input.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!(["hello world"]))]
pub struct DecodeResponse(pub Vec<String>);

/// `GET /v1/models` (OpenAI): the served model.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The served model.
    pub data: Vec<ModelCard>,
}

/// One model of `GET /v1/models`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelCard {
    /// Its id, as the answers' `model` field gives it.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds of its creation: 0, unknown (a model directory carries no date).
    pub created: u64,
    /// Always `corestream`.
    pub owned_by: String,
    /// Extension: what it answers (`embedding`, `reranker`, `classifier`).
    pub model_type: String,
}
