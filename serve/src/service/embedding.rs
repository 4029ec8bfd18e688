//! The embedding path of a request, after its body is parsed: the input count, tokenisation
//! with the length policy (413 or truncation; large requests off the HTTP threads), token-id
//! inputs checked against the vocabulary, and the batcher call (a request of many inputs in
//! parts, see `parts.rs`), vectors normalised when asked. The scoring path of rerankers and
//! classifiers (`scores.rs`) shares the tokenizer and the batcher call.

use std::sync::Arc;
use std::time::Instant;

use corestream::Error;
use tracing::Instrument;

use crate::model::encoded::Encoded;
use crate::model::tokenizer::{Keep, TextTokenizer};
use crate::service::failure::Failure;
use crate::service::parts::{reassemble, split_by_length};
use crate::service::scores::too_long;
use crate::service::state::{Loaded, Service, Tokenized, INLINE_TOKENIZE_BYTES};

impl Service {
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
