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

use crate::model::graph;
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
    /// `token_type_ids`: zeros (one segment).
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

/// Sentence embeddings from a transformer exported to ONNX (BERT, MiniLM, MPNet, ...): token
/// ids in, pooled hidden states out. Feeds the graph's `input_ids`, `attention_mask` and
/// `token_type_ids` (whichever it takes) and pools its first `(batch, tokens, hidden)` output
/// as the model's `1_Pooling/config.json` says.
pub struct TextEmbedder {
    model: OnnxModule,
    feeds: Vec<Feed>,
    pooling: Pooling,
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
        Ok(TextEmbedder {
            model: backend.load(&files.onnx)?,
            feeds,
            pooling: files.pooling,
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

    /// How it pools.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }
}

impl Module for TextEmbedder {
    type Input = Rows<Vec<u32>>;
    type Output = Rows<Vec<f32>>;

    fn forward(&self, ids: Rows<Vec<u32>>) -> Result<Rows<Vec<f32>>, BoxError> {
        let ids = ids.0;
        let (b, len) = (ids.len(), ids.iter().map(Vec::len).max().unwrap_or(0));
        if len == 0 {
            return Err("every row is empty: each input needs at least one token".into());
        }
        let mut flat_ids = vec![0i64; b * len];
        let mut mask = vec![0i64; b * len];
        for (r, row) in ids.iter().enumerate() {
            for (slot, &id) in flat_ids[r * len..].iter_mut().zip(row) {
                *slot = i64::from(id);
            }
            mask[r * len..r * len + row.len()].fill(1);
        }
        let mut inputs = Vec::with_capacity(self.feeds.len());
        for feed in &self.feeds {
            let values = match feed {
                Feed::Ids => std::mem::take(&mut flat_ids),
                Feed::Mask => std::mem::take(&mut mask),
                Feed::TokenTypes => vec![0i64; b * len],
            };
            inputs.push(Tensor::from_shape_vec(&[b, len], values)?);
        }
        let outputs = self.model.forward(inputs)?;
        let hidden = outputs
            .iter()
            .find(|t| t.ndim() == 3)
            .ok_or("the model has no (batch, tokens, hidden) output")?;
        let hidden = hidden.view::<f32>()?;
        let dim = hidden.shape()[2];
        Ok(Rows(
            ids.iter()
                .enumerate()
                .map(|(r, row)| self.pooling.pool(|t, d| hidden[[r, t, d]], row.len(), dim))
                .collect(),
        ))
    }
}

impl std::fmt::Debug for TextEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEmbedder")
            .field("feeds", &self.feeds)
            .field("pooling", &self.pooling)
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
    type Input = Rows<Vec<u32>>;
    type Output = Rows<Vec<f32>>;

    fn forward(&self, ids: Rows<Vec<u32>>) -> Result<Rows<Vec<f32>>, BoxError> {
        let b = ids.0.len();
        let mut x = vec![0f32; b * 576];
        for (r, row) in ids.0.iter().enumerate() {
            for (i, &id) in row.iter().enumerate() {
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
}

/// The naive baseline: the same model called once per request on tokio's blocking pool; no
/// batching, no pinning, no streams. (Used by the load generator, `benches/serve.rs`.)
pub struct Naive<M>(pub Arc<M>);

impl<M> std::fmt::Debug for Naive<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Naive(..)")
    }
}

#[async_trait::async_trait]
impl<M> Infer<Rows<Vec<u32>>, Rows<Vec<f32>>> for Naive<M>
where
    M: Module<Input = Rows<Vec<u32>>, Output = Rows<Vec<f32>>>,
{
    async fn infer(&self, ids: Rows<Vec<u32>>) -> corestream::Result<Rows<Vec<f32>>> {
        let model = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || model.forward(ids))
            .await
            .map_err(|e| Error::Panicked(e.to_string()))?
            .map_err(Error::from)
    }
}
