//! The model layer: where a model's files are ([`ModelFiles`]), what its ONNX graph takes
//! ([`graph`]), text to token ids ([`TextTokenizer`]), pooling ([`Pooling`]) and the
//! embedders themselves ([`TextEmbedder`], the bundled [`TextNet`]); which of a directory's
//! ONNX files to serve ([`quantized`]) and the accuracy gate a quantized one passes first
//! ([`accuracy`], on the inputs of [`probes`]). Nothing here knows about batching or HTTP.

pub mod accuracy;
pub mod embedder;
pub mod encoded;
pub mod graph;
pub mod kind;
pub mod pooling;
pub mod probes;
pub mod prompts;
pub mod quantized;
pub mod source;
pub mod tokenizer;

pub use embedder::{normalize, Backend, Naive, TextEmbedder, TextNet};
pub use encoded::Encoded;
pub use kind::ModelKind;
pub use pooling::Pooling;
pub use prompts::Prompts;
pub use source::ModelFiles;
pub use tokenizer::{Keep, TextTokenizer, Token};
