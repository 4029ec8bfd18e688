//! The models behind the embedding service: paraphrase-MiniLM-L3-v2 (ONNX model, mean pooling)
//! and TextNet, a small stand-in built on the bundled ExampleNet1 ONNX model for machines
//! without `models/`. Both are corestream `Module`s over `Rows` of token ids: the HTTP handler
//! tokenises (it needs the counts for `usage`, the length check and the batcher's token cost),
//! the batcher stacks concurrent requests, and each stream pads its batch to the longest row.
//! Both answer one *unnormalised* vector per row (mean-pooled for MiniLM); the handler
//! normalises when the request asks for it. Both run their ONNX model on either [`Backend`]:
//! ONNX Runtime or tract.

use std::path::Path;
use std::sync::Arc;

use corestream::backend::Tensor;
use corestream::batch::Rows;
use corestream::{BoxError, Error, Infer, Module};

pub use corestream::backend::{Backend, OnnxModule, ORT_MISSING_NOTE};

use crate::tokenizer::TextTokenizer;

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

/// The file names MiniLM is loaded from, inside its folder.
pub const MINILM_ONNX: &str = "paraphrase-MiniLM-L3-v2.onnx";

/// Sentence embeddings from paraphrase-MiniLM-L3-v2: token ids in, mean-pooled hidden states
/// out.
pub struct MiniLm {
    model: OnnxModule,
}

impl MiniLm {
    /// Loads `paraphrase-MiniLM-L3-v2.onnx` from `dir` on `backend`.
    pub fn load(dir: &Path, backend: Backend) -> corestream::Result<MiniLm> {
        Ok(MiniLm {
            model: backend.load(&dir.join(MINILM_ONNX))?,
        })
    }

    /// The model, its tokenizer and the longest input (in tokens) it takes, all from `dir`.
    pub fn load_with_tokenizer(
        dir: &Path,
        backend: Backend,
    ) -> corestream::Result<(MiniLm, TextTokenizer)> {
        let model = MiniLm::load(dir, backend)?;
        let tokenizer = TextTokenizer::from_dir(dir, &dir.join(MINILM_ONNX))?;
        Ok((model, tokenizer))
    }
}

impl Module for MiniLm {
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
            let n = row.len().max(1) as f32;
            v.iter_mut().for_each(|x| *x /= n);
            out.push(v);
        }
        Ok(Rows(out))
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
#[allow(dead_code)]
pub struct Naive<M>(pub Arc<M>);

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
