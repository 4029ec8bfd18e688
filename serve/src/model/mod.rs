//! The model layer: where a model's files are ([`ModelFiles`]), what its ONNX graph takes
//! ([`graph`]), text to token ids ([`TextTokenizer`]), pooling ([`Pooling`]) and the
//! embedders themselves ([`TextEmbedder`], the bundled [`TextNet`]). Nothing here knows about
//! batching or HTTP.

pub mod embedder;
pub mod encoded;
pub mod graph;
pub mod kind;
pub mod pooling;
pub mod prompts;
pub mod source;
pub mod tokenizer;

pub use embedder::{normalize, Backend, Naive, TextEmbedder, TextNet};
pub use encoded::Encoded;
pub use kind::ModelKind;
pub use pooling::Pooling;
pub use prompts::Prompts;
pub use source::ModelFiles;
pub use tokenizer::{Keep, TextTokenizer, Token};
