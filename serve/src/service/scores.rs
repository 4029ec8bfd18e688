//! The scoring path of rerankers and classifiers: `(query, text)` pairs or single texts
//! tokenised as the model takes them, run through the same batcher as embeddings (a query with
//! many texts is one request of many rows, spread over the batches and streams), and the raw
//! scores turned into probabilities (sigmoid, or softmax over a classifier's labels).

use crate::model::encoded::Encoded;
use crate::model::kind::{sigmoid, softmax, ModelKind};
use crate::model::tokenizer::TextTokenizer;
use crate::service::failure::Failure;
use crate::service::state::{Loaded, Service};

/// One input of `POST /predict`: a text, or a pair of texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequence {
    /// One text.
    Single(String),
    /// Two texts, tokenised as a pair.
    Pair(String, String),
}

impl Sequence {
    fn bytes(&self) -> usize {
        match self {
            Sequence::Single(a) => a.len(),
            Sequence::Pair(a, b) => a.len() + b.len(),
        }
    }
}

/// A 400 saying that the loaded model does not answer `route`, and which routes it answers.
pub fn wrong_model(loaded: &Loaded, route: &str) -> Failure {
    let serves = match loaded.kind {
        ModelKind::Embedding => "/embed and /v1/embeddings",
        ModelKind::Reranker => "/rerank and /v1/rerank",
        ModelKind::Classifier { .. } => "/predict",
    };
    Failure::bad_request(
        "wrong_model_type",
        format!(
            "{route} needs a {}; {} is a {} model: it answers {serves}",
            match route {
                "/predict" => "classifier",
                "/rerank" | "/v1/rerank" => "reranker (a cross-encoder)",
                _ => "embedding model",
            },
            loaded.info.model_id,
            loaded.kind.name()
        ),
    )
}

impl Service {
    /// The relevance of each of `texts` to `query`, in input order: a probability (sigmoid
    /// of the model's score) or, with `raw_scores`, the score itself; and the pairs' tokens. Each pair is cut to the
    /// model's length when `truncate` (or the server's `--truncate` when `None`) says so, else
    /// an over-long pair is a 413.
    pub async fn rerank(
        &self,
        loaded: &Loaded,
        query: String,
        texts: Vec<String>,
        truncate: Option<bool>,
        raw_scores: bool,
    ) -> Result<(Vec<f32>, usize), Failure> {
        if loaded.kind != ModelKind::Reranker {
            return Err(wrong_model(loaded, "/rerank"));
        }
        self.check_count(loaded, texts.len())?;
        let pairs = texts
            .into_iter()
            .map(|t| Sequence::Pair(query.clone(), t))
            .collect();
        let (scores, tokens) = self.score(loaded, pairs, truncate).await?;
        let scores = scores
            .into_iter()
            .map(|s| {
                let s = s.first().copied().unwrap_or(f32::NAN);
                if raw_scores {
                    s
                } else {
                    sigmoid(s)
                }
            })
            .collect();
        Ok((scores, tokens))
    }

    /// The scores of each input for each of the classifier's labels, in label order:
    /// probabilities (softmax over the labels, or a sigmoid each for a multi-label model) or,
    /// with `raw_scores`, the model's scores.
    pub async fn predict(
        &self,
        loaded: &Loaded,
        inputs: Vec<Sequence>,
        truncate: Option<bool>,
        raw_scores: bool,
    ) -> Result<Vec<Vec<f32>>, Failure> {
        let ModelKind::Classifier { multi_label, .. } = loaded.kind else {
            return Err(wrong_model(loaded, "/predict"));
        };
        self.check_count(loaded, inputs.len())?;
        let (scores, _tokens) = self.score(loaded, inputs, truncate).await?;
        Ok(scores
            .into_iter()
            .map(|s| match (raw_scores, multi_label) {
                (true, _) => s,
                (false, true) => s.into_iter().map(sigmoid).collect(),
                (false, false) => softmax(&s),
            })
            .collect())
    }

    /// Tokenises `inputs` (off the HTTP threads when large, as texts to embed) and runs them:
    /// their raw scores, and their tokens.
    async fn score(
        &self,
        loaded: &Loaded,
        inputs: Vec<Sequence>,
        truncate: Option<bool>,
    ) -> Result<(Vec<Vec<f32>>, usize), Failure> {
        let truncate = truncate.unwrap_or(loaded.info.auto_truncate);
        let max = loaded.info.max_input_length;
        let bytes: usize = inputs.iter().map(Sequence::bytes).sum();
        let encoded = self
            .with_tokenizer_bytes(loaded, bytes, move |tokenizer| {
                encode_sequences(tokenizer, &inputs, max, truncate)
            })
            .await??;
        let tokens = encoded.iter().map(Encoded::len).sum();
        let expected = loaded.kind.scores().unwrap_or(0);
        let scores = self.infer(loaded, encoded, tokens).await?;
        if let Some(bad) = scores.iter().find(|s| s.len() != expected) {
            return Err(Failure::internal(
                "model_error",
                format!(
                    "the model answered {} scores for an input; its config.json says {expected}",
                    bad.len()
                ),
            ));
        }
        Ok((scores, tokens))
    }
}

/// Each input encoded within `max` tokens, or the 413 / 400 saying why not.
fn encode_sequences(
    tokenizer: &TextTokenizer,
    inputs: &[Sequence],
    max: usize,
    truncate: bool,
) -> Result<Vec<Encoded>, Failure> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let encoded = match input {
                Sequence::Single(text) => {
                    let mut ids = tokenizer
                        .encode_within(text, max, crate::model::Keep::Start)
                        .map_err(|m| Failure::bad_request("invalid_request", m))?;
                    if ids.len() > max {
                        if !truncate {
                            return Err(too_long(i, ids.len(), max));
                        }
                        tokenizer.truncate(&mut ids, max, crate::model::Keep::Start);
                    }
                    Ok(Encoded::single(ids))
                }
                Sequence::Pair(a, b) => tokenizer
                    .encode_pair(a, b, max, truncate)
                    .map_err(|m| Failure::bad_request("invalid_request", m))?,
            };
            encoded.map_err(|len| too_long(i, len, max))
        })
        .collect()
}

/// The 413 of input `i`, at least `len` tokens long, over the model's `max`.
pub(crate) fn too_long(i: usize, len: usize, max: usize) -> Failure {
    Failure::too_large(
        "input_too_long",
        format!(
            "input {i} is at least {len} tokens long; the model takes at most {max} (send \
             \"truncate\": true, or start the server with --truncate, to cut it)"
        ),
    )
}
