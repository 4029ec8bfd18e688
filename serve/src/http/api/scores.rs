//! The scoring routes' bodies: text-embeddings-inference's `POST /rerank` and `POST /predict`,
//! and the Cohere/Jina `POST /v1/rerank`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::Sequence;

/// `POST /rerank` (text-embeddings-inference).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// The query every text is scored against.
    pub query: String,
    /// The texts to rank (at most `--max-client-batch`).
    #[serde(deserialize_with = "crate::http::bounded::list")]
    #[schema(min_items = 1)]
    pub texts: Vec<String>,
    /// Truncate over-long pairs instead of answering 413 (default: the server's `--truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Answer the model's scores (logits) rather than probabilities (their sigmoid).
    #[serde(default)]
    pub raw_scores: bool,
    /// Give each text back in its entry.
    #[serde(default)]
    pub return_text: bool,
}

/// One text's place in a `POST /rerank` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rank {
    /// Its index in `texts`.
    pub index: usize,
    /// The text, with `return_text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Its relevance: a probability, or the model's score with `raw_scores`.
    pub score: f32,
}

/// `POST /rerank`'s answer: every text, most relevant first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RerankResponse(pub Vec<Rank>);

/// `POST /v1/rerank` (Cohere's and Jina's API).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CohereRerankRequest {
    /// The model to answer, by its served name; with one model served, any name (that
    /// model answers, and its id is echoed in `model`). A path prefix
    /// `/models/{name}/` wins over it.
    #[serde(default)]
    pub model: Option<String>,
    /// The query every document is scored against.
    pub query: String,
    /// The documents to rank (at most `--max-client-batch`): texts, or `{"text": ...}`.
    #[serde(deserialize_with = "crate::http::bounded::list")]
    #[schema(min_items = 1)]
    pub documents: Vec<Document>,
    /// How many results to answer, most relevant first (default: all; at most
    /// `--max-client-batch`, more than the documents answers them all).
    #[serde(default, deserialize_with = "crate::http::bounded::optional_whole")]
    #[schema(minimum = 1)]
    pub top_n: Option<u64>,
    /// Give each document back in its result.
    #[serde(default)]
    pub return_documents: bool,
    /// Extension: truncate over-long pairs instead of answering 413 (default: the server's
    /// `--truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// A document of `POST /v1/rerank`: a text, or an object with its `text`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Document {
    /// The text.
    Text(String),
    /// `{"text": ...}`.
    Object {
        /// The text.
        text: String,
    },
}

impl Document {
    /// Its text.
    pub fn into_text(self) -> String {
        match self {
            Document::Text(text) | Document::Object { text } => text,
        }
    }
}

/// `POST /v1/rerank`'s answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CohereRerankResponse {
    /// The served model's id.
    pub model: String,
    /// The `top_n` most relevant documents, most relevant first.
    pub results: Vec<CohereResult>,
    /// Tokens read.
    pub usage: RerankUsage,
}

/// One document's place in a `POST /v1/rerank` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CohereResult {
    /// Its index in `documents`.
    pub index: usize,
    /// Its relevance, a probability (the sigmoid of the model's score).
    pub relevance_score: f32,
    /// The document, with `return_documents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentText>,
}

/// A document given back.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DocumentText {
    /// Its text.
    pub text: String,
}

/// Tokens read for a `POST /v1/rerank`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RerankUsage {
    /// All (query, document) pairs' tokens, special tokens included.
    pub total_tokens: usize,
}

/// `POST /predict` (text-embeddings-inference).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// A text, a pair of texts, or a list of texts and pairs.
    pub inputs: PredictInput,
    /// Truncate over-long inputs instead of answering 413 (default: the server's `--truncate`).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Answer the model's scores (logits) rather than probabilities.
    #[serde(default)]
    pub raw_scores: bool,
}

/// `POST /predict`'s `inputs`, read as text-embeddings-inference reads them: a text is one
/// input; a list of exactly two texts is one *pair*; any other list holds inputs, each a text
/// or a pair `[a, b]`. Deserialised by a visitor that stops at `--max-client-batch` inputs
/// (see [`crate::http::bounded`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PredictInput {
    /// One text.
    Text(String),
    /// One pair of texts.
    Pair([String; 2]),
    /// Several inputs.
    Batch(Vec<PredictItem>),
}

/// One input of a `POST /predict` list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PredictItem {
    /// A text.
    Text(String),
    /// A pair of texts.
    Pair([String; 2]),
}

impl PredictInput {
    /// The inputs, and whether the request held one (answered with one list of labels
    /// rather than a list of them).
    pub fn into_sequences(self) -> (Vec<Sequence>, bool) {
        match self {
            PredictInput::Text(t) => (vec![Sequence::Single(t)], true),
            PredictInput::Pair([a, b]) => (vec![Sequence::Pair(a, b)], true),
            PredictInput::Batch(items) => (
                items
                    .into_iter()
                    .map(|i| match i {
                        PredictItem::Text(t) => Sequence::Single(t),
                        PredictItem::Pair([a, b]) => Sequence::Pair(a, b),
                    })
                    .collect(),
                false,
            ),
        }
    }
}

/// One label's score in a `POST /predict` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Prediction {
    /// The label (`config.json`'s `id2label`).
    pub label: String,
    /// Its probability, or the model's score with `raw_scores`.
    pub score: f32,
}

/// `POST /predict`'s answer: for one input, every label, highest score first; for a list,
/// one such list per input.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PredictResponse {
    /// One input's labels.
    One(Vec<Prediction>),
    /// Each input's labels.
    Many(Vec<Vec<Prediction>>),
}
