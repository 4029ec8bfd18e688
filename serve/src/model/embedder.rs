//! The models behind the embedding service: [`TextEmbedder`] (a sentence-transformers model
//! exported to ONNX, e.g. paraphrase-MiniLM-L3-v2, pooled as its directory says) and
//! [`TextNet`], a small stand-in built on the bundled ExampleNet1 ONNX model for machines
//! without a downloaded model. Both are corestream `Module`s over `Rows` of token ids: the
//! HTTP handler tokenises (it needs the counts for `usage`, the length check and the batcher's
//! token cost), the batcher stacks concurrent requests, and each stream pads its batch to the
//! longest row. Both answer one *unnormalised* vector per row; the handler normalises when the
//! request asks for it. Both run their ONNX model on either [`Backend`]: ONNX Runtime or tract.

use std::sync::Arc;

use corestream::backend::Tensor;
use corestream::batch::Rows;
use corestream::{BoxError, Error, Infer, Module};

pub use corestream::backend::{Backend, OnnxModule, ORT_MISSING_NOTE};

use crate::model::encoded::Encoded;
use crate::model::graph;
use crate::model::kind::ModelKind;
use crate::model::pooling::Pooling;
use crate::model::source::ModelFiles;
use crate::model::tokenizer::TextTokenizer;

/// `explicit`, or the default: ONNX Runtime when its library is found, else tract with one
/// note on stderr saying how to fetch ONNX Runtime.
pub fn backend_or_default(explicit: Option<Backend>) -> Backend {
    explicit.unwrap_or_else(|| {
        let backend = Backend::detect();
        if backend == Backend::Tract {
            eprintln!("{ORT_MISSING_NOTE}");
        }
        backend
    })
}

/// The version of the ONNX Runtime library this process loads (loading it if needed); the
/// error says why it cannot.
pub fn ort_library() -> Result<String, String> {
    corestream::backend::ort::load_library(None)
        .map(|lib| lib.version().to_owned())
        .map_err(|e| e.to_string())
}

/// What one graph input of an embedding model is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// `input_ids`: the token ids.
    Ids,
    /// `attention_mask`: 1 for a token, 0 for padding.
    Mask,
    /// `token_type_ids`: 0 for a single text; 0 then 1 for a pair (see [`Encoded`]).
    TokenTypes,
}

impl Feed {
    fn of(name: &str) -> Option<Feed> {
        match name {
            "input_ids" => Some(Feed::Ids),
            "attention_mask" => Some(Feed::Mask),
            "token_type_ids" => Some(Feed::TokenTypes),
            _ => None,
        }
    }
}

/// What a model's forward answers per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Its `(batch, tokens, hidden)` output pooled: an embedding.
    Pool(Pooling),
    /// Its `(batch, scores)` output as is (`logits`): a reranker's or classifier's raw scores.
    Scores(usize),
}

/// A transformer exported to ONNX (BERT, MiniLM, MPNet, ...) over token ids: sentence
/// embeddings (its first `(batch, tokens, hidden)` output pooled as the model's
/// `1_Pooling/config.json` says) or, for a cross-encoder or classifier ([`ModelKind`]), the raw
/// scores of its `(batch, labels)` output (`logits`). Feeds the graph's `input_ids`,
/// `attention_mask` and `token_type_ids` (whichever it takes).
pub struct TextEmbedder {
    model: OnnxModule,
    feeds: Vec<Feed>,
    head: Head,
    kind: ModelKind,
}

impl TextEmbedder {
    /// Loads the model `files` name on `backend`.
    pub fn load(files: &ModelFiles, backend: Backend) -> corestream::Result<TextEmbedder> {
        let load_error = |message: String| Error::ModelLoad {
            model: files.onnx.display().to_string(),
            message,
        };
        let graph = graph::read(&files.onnx).map_err(load_error)?;
        let names = graph::input_names(&graph);
        let feeds = names
            .iter()
            .map(|name| {
                Feed::of(name).ok_or_else(|| {
                    load_error(format!(
                        "graph input {name:?} is not one of input_ids, attention_mask, \
                         token_type_ids (inputs: {})",
                        names.join(", ")
                    ))
                })
            })
            .collect::<corestream::Result<Vec<Feed>>>()?;
        if !feeds.contains(&Feed::Ids) {
            return Err(load_error(format!(
                "the graph takes no input_ids (inputs: {})",
                names.join(", ")
            )));
        }
        let head = match files.kind.scores() {
            None => Head::Pool(files.pooling),
            Some(n) => {
                let outputs = graph::output_shapes(&graph);
                let fits = outputs
                    .iter()
                    .any(|(_, dims)| dims.len() == 2 && dims[1].is_none_or(|d| d == n));
                if !fits {
                    return Err(load_error(format!(
                        "config.json makes it a {} with {n} score(s) per input, but the graph \
                         has no (batch, {n}) output (outputs: {})",
                        files.kind.name(),
                        graph::describe(&outputs)
                    )));
                }
                Head::Scores(n)
            }
        };
        Ok(TextEmbedder {
            model: backend.load(&files.onnx)?,
            feeds,
            head,
            kind: files.kind.clone(),
        })
    }

    /// The model `files` name and its tokenizer.
    pub fn load_with_tokenizer(
        files: &ModelFiles,
        backend: Backend,
    ) -> corestream::Result<(TextEmbedder, TextTokenizer)> {
        let model = TextEmbedder::load(files, backend)?;
        let tokenizer = TextTokenizer::from_file(&files.tokenizer, &files.onnx)?;
        Ok((model, tokenizer))
    }

    /// How it pools (`None`: it answers scores).
    pub fn pooling(&self) -> Option<Pooling> {
        match self.head {
            Head::Pool(p) => Some(p),
            Head::Scores(_) => None,
        }
    }

    /// What it answers.
    pub fn kind(&self) -> &ModelKind {
        &self.kind
    }
}

impl Module for TextEmbedder {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;

    fn forward(&self, rows: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        let rows = rows.0;
        let (b, len) = (rows.len(), rows.iter().map(Encoded::len).max().unwrap_or(0));
        if len == 0 {
            return Err("every row is empty: each input needs at least one token".into());
        }
        let mut inputs = Vec::with_capacity(self.feeds.len());
        for feed in &self.feeds {
            // Padding is id 0, mask 0, type 0.
            let mut values = vec![0i64; b * len];
            for (row, slots) in rows.iter().zip(values.chunks_mut(len)) {
                match feed {
                    Feed::Ids => slots.iter_mut().zip(&row.ids).for_each(|(s, &id)| {
                        *s = i64::from(id);
                    }),
                    Feed::Mask => slots[..row.len()].fill(1),
                    Feed::TokenTypes => slots.iter_mut().zip(row.type_ids()).for_each(|(s, t)| {
                        *s = t;
                    }),
                }
            }
            inputs.push(Tensor::from_shape_vec(&[b, len], values)?);
        }
        let outputs = self.model.forward(inputs)?;
        match self.head {
            Head::Pool(pooling) => {
                let hidden = outputs
                    .iter()
                    .find(|t| t.ndim() == 3)
                    .ok_or("the model has no (batch, tokens, hidden) output")?;
                let hidden = hidden.view::<f32>()?;
                let dim = hidden.shape()[2];
                Ok(Rows(
                    rows.iter()
                        .enumerate()
                        .map(|(r, row)| pooling.pool(|t, d| hidden[[r, t, d]], row.len(), dim))
                        .collect(),
                ))
            }
            Head::Scores(n) => {
                let scores = outputs
                    .iter()
                    .find(|t| t.ndim() == 2 && t.shape() == [b, n])
                    .ok_or_else(|| format!("the model has no ({b}, {n}) output"))?;
                let scores = scores.view::<f32>()?;
                Ok(Rows(
                    scores
                        .outer_iter()
                        .map(|row| row.iter().copied().collect())
                        .collect(),
                ))
            }
        }
    }

    /// The ONNX model's copy for a NUMA node (see [`corestream::numa`]), with the same feeds,
    /// head and kind.
    fn replicate(&self) -> Option<Result<TextEmbedder, BoxError>> {
        Some(self.model.replicate()?.map(|model| TextEmbedder {
            model,
            feeds: self.feeds.clone(),
            head: self.head,
            kind: self.kind.clone(),
        }))
    }
}

impl std::fmt::Debug for TextEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEmbedder")
            .field("feeds", &self.feeds)
            .field("head", &self.head)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Unit L2 norm (a zero vector stays zero).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A stand-in embedder on the bundled ExampleNet1: each row's token ids (bytes, see
/// [`TextTokenizer::Bytes`]) become a (64, 3, 3) feature map, the convolution maps it to 512
/// values. Real inference, no download needed; its vectors carry no meaning.
pub struct TextNet {
    model: OnnxModule,
}

impl TextNet {
    /// The longest input it is served with, in tokens (bytes).
    pub const MAX_INPUT_LENGTH: usize = 512;

    /// Loads the bundled ExampleNet1 ([`corestream::bundled`]) on `backend`.
    pub fn load(backend: Backend) -> corestream::Result<TextNet> {
        Ok(TextNet {
            model: backend.load_bytes(corestream::bundled::EXAMPLENET1)?,
        })
    }

    /// The model and its byte tokenizer.
    pub fn load_with_tokenizer(backend: Backend) -> corestream::Result<(TextNet, TextTokenizer)> {
        Ok((
            TextNet::load(backend)?,
            TextTokenizer::Bytes {
                max_input_length: Self::MAX_INPUT_LENGTH,
            },
        ))
    }
}

impl std::fmt::Debug for TextNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextNet").finish_non_exhaustive()
    }
}

impl Module for TextNet {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;

    fn forward(&self, rows: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        let b = rows.0.len();
        let mut x = vec![0f32; b * 576];
        for (r, row) in rows.0.iter().enumerate() {
            for (i, &id) in row.ids.iter().enumerate() {
                x[r * 576 + (i * 31) % 576] += (id % 256) as f32 / 255.0;
            }
        }
        let y = self
            .model
            .forward(vec![Tensor::from_shape_vec(&[b, 64, 3, 3], x)?])?;
        let y = y[0].view::<f32>()?;
        Ok(Rows(
            y.outer_iter()
                .map(|row| row.iter().copied().collect())
                .collect(),
        ))
    }

    /// The ONNX model's copy for a NUMA node (see [`corestream::numa`]).
    fn replicate(&self) -> Option<Result<TextNet, BoxError>> {
        Some(self.model.replicate()?.map(|model| TextNet { model }))
    }
}

/// The naive baseline: the same model called once per request on tokio's blocking pool; no
/// batching, no pinning, no streams. (Used by the load generator, `benches/serve/`.)
pub struct Naive<M>(pub Arc<M>);

impl<M> std::fmt::Debug for Naive<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Naive(..)")
    }
}

#[async_trait::async_trait]
impl<M> Infer<Rows<Encoded>, Rows<Vec<f32>>> for Naive<M>
where
    M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
{
    async fn infer(&self, ids: Rows<Encoded>) -> corestream::Result<Rows<Vec<f32>>> {
        let model = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || model.forward(ids))
            .await
            .map_err(|e| Error::Panicked(e.to_string()))?
            .map_err(Error::from)
    }
}
