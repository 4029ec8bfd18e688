//! Text to token ids, done in the HTTP handler (not on the stream threads): the handler needs
//! the counts for OpenAI's `usage`, for the length check (413 or truncation) and for the
//! batcher's token cost. `Hf` is a HuggingFace `tokenizer.json`; `Bytes` is TextNet's
//! stand-in (one token per UTF-8 byte).
//!
//! The longest input a model takes is read from the files beside `tokenizer.json`, as
//! sentence-transformers does, first found wins: `sentence_bert_config.json` `max_seq_length`,
//! `tokenizer_config.json` `model_max_length`, `tokenizer.json` `truncation.max_length` (128
//! for the fetched paraphrase-MiniLM-L3-v2), `config.json` `max_position_embeddings` (what
//! text-embeddings-inference reads), and last the size of the ONNX model's position-embedding
//! table (512 for BERT models).

use std::path::Path;

use corestream::Error;

/// Which end of an over-long input truncation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Keep the start (drop the end): the default, as sentence-transformers.
    #[default]
    Start,
    /// Keep the end (drop the start).
    End,
}

/// A model's tokenizer with the longest input the model takes.
pub enum TextTokenizer {
    /// A HuggingFace tokenizer; special tokens (`[CLS]` ... `[SEP]`) are added.
    Hf {
        /// The tokenizer, with its own padding and truncation turned off.
        tokenizer: Box<tokenizers::Tokenizer>,
        /// The longest input, in tokens, special tokens included.
        max_input_length: usize,
        /// Which file said so.
        source: String,
    },
    /// One token per UTF-8 byte (TextNet).
    Bytes {
        /// The longest input, in bytes.
        max_input_length: usize,
    },
}

fn load_error(path: &Path, message: impl ToString) -> Error {
    Error::ModelLoad {
        model: path.display().to_string(),
        message: message.to_string(),
    }
}

/// A positive integer at `pointer` in the JSON file `path`, if the file and the value exist.
fn json_usize(path: &Path, pointer: &str) -> Option<usize> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let n = value.pointer(pointer)?.as_u64()?;
    // tokenizer_config.json says 1000000000000000019884624838656 for "no limit".
    (n > 0 && n < 1 << 20).then_some(n as usize)
}

/// Rows of the ONNX model's position-embedding table (an initializer whose name mentions
/// `position_embeddings`), read from the file's protobuf without building the model.
fn position_embeddings(onnx: &Path) -> Option<usize> {
    crate::model::graph::read(onnx)
        .ok()?
        .initializer
        .iter()
        .find(|t| t.name.contains("position_embeddings") && t.dims.len() == 2)
        .and_then(|t| usize::try_from(t.dims[0]).ok())
}

/// The longest input of the model in `dir` (see the module documentation) and where it was
/// read.
pub fn max_input_length(dir: &Path, onnx: &Path) -> corestream::Result<(usize, String)> {
    let candidates = [
        ("sentence_bert_config.json", "/max_seq_length"),
        ("tokenizer_config.json", "/model_max_length"),
        ("tokenizer.json", "/truncation/max_length"),
        ("config.json", "/max_position_embeddings"),
    ];
    for (file, pointer) in candidates {
        if let Some(n) = json_usize(&dir.join(file), pointer) {
            return Ok((n, format!("{file} {pointer}")));
        }
    }
    position_embeddings(onnx)
        .map(|n| (n, format!("{} position embeddings", onnx.display())))
        .ok_or_else(|| {
            load_error(
                dir,
                "no maximum input length: none of sentence_bert_config.json, \
                 tokenizer_config.json, tokenizer.json, config.json says it and the ONNX \
                 model has no position_embeddings table",
            )
        })
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            TextTokenizer::Hf { .. } => "Hf",
            TextTokenizer::Bytes { .. } => "Bytes",
        };
        f.debug_struct("TextTokenizer")
            .field("kind", &kind)
            .field("max_input_length", &self.max_input_length())
            .field("source", &self.max_input_length_source())
            .finish()
    }
}

impl TextTokenizer {
    /// The HuggingFace tokenizer file `path` (a `tokenizer.json`), with the longest input read
    /// from the files beside it and the ONNX model `onnx` as [`max_input_length`] says.
    pub fn from_file(path: &Path, onnx: &Path) -> corestream::Result<TextTokenizer> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tokenizer =
            tokenizers::Tokenizer::from_file(path).map_err(|e| load_error(path, e))?;
        // The file pads and truncates every text to 128 tokens; the model pads each batch to
        // its longest row and masks the rest, and the service decides about truncation.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_error(path, e))?;
        let (max_input_length, source) = max_input_length(dir, onnx)?;
        Ok(TextTokenizer::Hf {
            tokenizer: Box::new(tokenizer),
            max_input_length,
            source,
        })
    }

    /// The longest input the model takes, in tokens.
    pub fn max_input_length(&self) -> usize {
        match self {
            TextTokenizer::Hf {
                max_input_length, ..
            }
            | TextTokenizer::Bytes { max_input_length } => *max_input_length,
        }
    }

    /// Where the maximum input length was read.
    pub fn max_input_length_source(&self) -> &str {
        match self {
            TextTokenizer::Hf { source, .. } => source,
            TextTokenizer::Bytes { .. } => "TextNet::MAX_INPUT_LENGTH",
        }
    }

    /// Token ids accepted as input: `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Hf { tokenizer, .. } => tokenizer.get_vocab_size(true),
            TextTokenizer::Bytes { .. } => 256,
        }
    }

    /// The token ids of `text`, special tokens included, not truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            TextTokenizer::Hf { tokenizer, .. } => tokenizer
                .encode(text, true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| format!("cannot tokenise the input: {e}")),
            TextTokenizer::Bytes { .. } => Ok(text.bytes().map(u32::from).collect()),
        }
    }

    /// Cuts `ids` to `max` tokens keeping `keep`'s end; a HuggingFace tokenizer's first and
    /// last tokens (`[CLS]`, `[SEP]`) stay in place.
    pub fn truncate(&self, ids: &mut Vec<u32>, max: usize, keep: Keep) {
        if ids.len() <= max {
            return;
        }
        let special = matches!(self, TextTokenizer::Hf { .. }) && max >= 2;
        match (keep, special) {
            (Keep::Start, false) => ids.truncate(max),
            (Keep::End, false) => {
                ids.drain(..ids.len() - max);
            }
            (Keep::Start, true) => {
                let last = ids[ids.len() - 1];
                ids.truncate(max - 1);
                ids.push(last);
            }
            (Keep::End, true) => {
                let cut = ids.len() - max;
                ids.drain(1..1 + cut);
            }
        }
    }
}
