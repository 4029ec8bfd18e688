//! The models behind the embedding service: paraphrase-MiniLM-L3-v2 (tokenizer, ONNX model,
//! mean pooling, L2 norm) and TextNet, a small stand-in built on the bundled ExampleNet1 ONNX
//! model for machines without `models/`. Both are corestream `Module`s over `Rows` of texts, so
//! the batcher stacks concurrent requests and tokenisation runs on the stream threads, not on
//! the reactor. Both run their ONNX model on either [`Backend`]: ONNX Runtime or tract.

use std::path::Path;
use std::sync::Arc;

use corestream::backend::Tensor;
use corestream::batch::Rows;
use corestream::{BoxError, Error, Infer, Module};

pub use corestream::backend::{Backend, OnnxModule, ORT_MISSING_NOTE};

/// `explicit`, or the default: ONNX Runtime when its library is found, else tract with one
/// note on stderr saying how to fetch ONNX Runtime.
#[allow(dead_code)]
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
#[cfg(feature = "ort")]
#[allow(dead_code)]
pub fn ort_library() -> Result<String, String> {
    corestream::backend::ort::load_library(None)
        .map(|lib| lib.version().to_owned())
        .map_err(|e| e.to_string())
}

/// Without feature `ort`, never.
#[cfg(not(feature = "ort"))]
#[allow(dead_code)]
pub fn ort_library() -> Result<String, String> {
    Err("corestream was built without feature `ort`".into())
}

/// Sentence embeddings from paraphrase-MiniLM-L3-v2.
pub struct MiniLm {
    model: OnnxModule,
    tokenizer: tokenizers::Tokenizer,
    max_tokens: usize,
}

impl MiniLm {
    /// Loads `paraphrase-MiniLM-L3-v2.onnx` (on `backend`) and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path, max_tokens: usize, backend: Backend) -> corestream::Result<MiniLm> {
        let model = backend.load(&dir.join("paraphrase-MiniLM-L3-v2.onnx"))?;
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::ModelLoad {
                model: tokenizer_path.display().to_string(),
                message: e.to_string(),
            })?;
        // The file pads every text to 128 tokens; the model pads each batch to its longest
        // text and masks the rest, so the tokenizer must leave lengths alone.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::ModelLoad {
                model: tokenizer_path.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(MiniLm {
            model,
            tokenizer,
            max_tokens,
        })
    }
}

impl Module for MiniLm {
    type Input = Rows<String>;
    type Output = Rows<Vec<f32>>;

    fn forward(&self, texts: Rows<String>) -> Result<Rows<Vec<f32>>, BoxError> {
        let mut ids: Vec<Vec<i64>> = Vec::with_capacity(texts.0.len());
        for text in &texts.0 {
            let encoding = self.tokenizer.encode(text.as_str(), true)?;
            let mut row: Vec<i64> = encoding.get_ids().iter().map(|&i| i64::from(i)).collect();
            if row.len() > self.max_tokens {
                // Keep [CLS] ... and the final [SEP].
                let sep = row[row.len() - 1];
                row.truncate(self.max_tokens - 1);
                row.push(sep);
            }
            ids.push(row);
        }
        let (b, len) = (ids.len(), ids.iter().map(Vec::len).max().unwrap_or(0));
        let mut flat_ids = vec![0i64; b * len];
        let mut mask = vec![0i64; b * len];
        for (r, row) in ids.iter().enumerate() {
            flat_ids[r * len..r * len + row.len()].copy_from_slice(row);
            mask[r * len..r * len + row.len()].fill(1);
        }
        let outputs = self.model.forward(vec![
            Tensor::from_shape_vec(&[b, len], flat_ids)?,
            Tensor::from_shape_vec(&[b, len], mask)?,
        ])?;
        let hidden = outputs
            .iter()
            .find(|t| t.ndim() == 3)
            .ok_or("the model has no (batch, tokens, hidden) output")?;
        let hidden = hidden.view::<f32>()?;
        let dim = hidden.shape()[2];
        let mut out = Vec::with_capacity(b);
        for (r, row) in ids.iter().enumerate() {
            let mut v = vec![0f32; dim];
            for t in 0..row.len() {
                for (d, acc) in v.iter_mut().enumerate() {
                    *acc += hidden[[r, t, d]];
                }
            }
            out.push(normalize(v, row.len()));
        }
        Ok(Rows(out))
    }
}

/// Mean over `n` tokens, then unit L2 norm.
fn normalize(mut v: Vec<f32>, n: usize) -> Vec<f32> {
    let n = n.max(1) as f32;
    v.iter_mut().for_each(|x| *x /= n);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// A stand-in embedder on the bundled ExampleNet1: each text's bytes become a (64, 3, 3)
/// feature map, the convolution maps it to 512 values, L2-normalised. Real inference, no
/// download needed; its vectors carry no meaning.
pub struct TextNet {
    model: OnnxModule,
}

impl TextNet {
    /// Loads the bundled ExampleNet1 on `backend`.
    pub fn load(backend: Backend) -> corestream::Result<TextNet> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/models/examplenet1.onnx"
        );
        Ok(TextNet {
            model: backend.load(Path::new(path))?,
        })
    }
}

impl Module for TextNet {
    type Input = Rows<String>;
    type Output = Rows<Vec<f32>>;

    fn forward(&self, texts: Rows<String>) -> Result<Rows<Vec<f32>>, BoxError> {
        let b = texts.0.len();
        let mut x = vec![0f32; b * 576];
        for (r, text) in texts.0.iter().enumerate() {
            for (i, byte) in text.bytes().enumerate() {
                x[r * 576 + (i * 31) % 576] += f32::from(byte) / 255.0;
            }
        }
        let y = self
            .model
            .forward(vec![Tensor::from_shape_vec(&[b, 64, 3, 3], x)?])?;
        let y = y[0].view::<f32>()?;
        Ok(Rows(
            y.outer_iter()
                .map(|row| normalize(row.iter().copied().collect(), 1))
                .collect(),
        ))
    }
}

/// The naive baseline: the same model called once per request on tokio's blocking pool; no
/// batching, no pinning, no streams. (Used by the load generator, `benches/serve.rs`.)
#[allow(dead_code)]
pub struct Naive<M>(pub Arc<M>);

#[async_trait::async_trait]
impl<M> Infer<Rows<String>, Rows<Vec<f32>>> for Naive<M>
where
    M: Module<Input = Rows<String>, Output = Rows<Vec<f32>>>,
{
    async fn infer(&self, texts: Rows<String>) -> corestream::Result<Rows<Vec<f32>>> {
        let model = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || model.forward(texts))
            .await
            .map_err(|e| Error::Panicked(e.to_string()))?
            .map_err(Error::from)
    }
}
