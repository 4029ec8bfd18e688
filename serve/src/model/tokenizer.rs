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
use std::sync::Mutex;

use corestream::Error;

use crate::model::encoded::Encoded;

/// Texts longer than this that must be tokenised whole (see
/// [`TextTokenizer::encode_within`]) are tokenised one at a time.
const WHOLE_ALONE_BYTES: usize = 64 << 10;

/// Which end of an over-long input truncation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Keep the start (drop the end): the default, as sentence-transformers.
    #[default]
    Start,
    /// Keep the end (drop the start).
    End,
}

/// One token of a text (see [`TextTokenizer::tokens`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its id.
    pub id: u32,
    /// The text it covers, or a special token's own text.
    pub text: String,
    /// Its byte range in the text; `None` for a special token.
    pub span: Option<(usize, usize)>,
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

    /// The token ids of `text` as [`encode`](Self::encode) gives them, or, when the text is
    /// longer than `max` tokens, a list longer than `max` whose `keep` end is the full list's
    /// (so [`truncate`](Self::truncate) to `max` gives the same ids, and the length check the
    /// same verdict), without tokenising the whole text.
    ///
    /// A HuggingFace tokenizer's working memory is hundreds of bytes per character (measured:
    /// ~450 MiB for one 2 MiB text with MiniLM's), so a long text is tokenised from its `keep`
    /// end in pieces, each twice the last and cut at whitespace where there is some, until
    /// one holds more than `max + 1` tokens and its `max` tokens at the `keep` end are those
    /// of the piece twice as long: what lies past the cut no longer changes them (a cut
    /// changes only the word it falls in, for BERT's, SentencePiece's and byte-level BPE's
    /// tokenizers alike). A text that never settles is tokenised whole, as before.
    pub fn encode_within(&self, text: &str, max: usize, keep: Keep) -> Result<Vec<u32>, String> {
        match self {
            TextTokenizer::Hf { tokenizer, .. } => {
                Ok(encoding_within(tokenizer, text, max, keep, true)?
                    .get_ids()
                    .to_vec())
            }
            TextTokenizer::Bytes { .. } => self.encode(text),
        }
    }

    /// The pair (`first`, `second`) as a cross-encoder takes it (`[CLS] first [SEP] second
    /// [SEP]` for BERT's tokenizer, with its `token_type_ids`), within `max` tokens: `Ok(Err(n))`
    /// when it is longer (at least `n` tokens) and not `truncate`d. Truncation is longest
    /// first, as Hugging Face's: tokens come off the longer text until both are as long, then
    /// off both. Each text is tokenised only as far as the limit needs (see
    /// [`encode_within`](Self::encode_within)).
    pub fn encode_pair(
        &self,
        first: &str,
        second: &str,
        max: usize,
        truncate: bool,
    ) -> Result<Result<Encoded, usize>, String> {
        match self {
            TextTokenizer::Hf { tokenizer, .. } => {
                let added = tokenizer
                    .get_post_processor()
                    .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, true));
                let budget = max.saturating_sub(added);
                let mut a = encoding_within(tokenizer, first, budget, Keep::Start, false)?;
                let mut b = encoding_within(tokenizer, second, budget, Keep::Start, false)?;
                let (n1, n2) = (a.len(), b.len());
                if n1 + n2 > budget {
                    if !truncate {
                        return Ok(Err(n1 + n2 + added));
                    }
                    let (k1, k2) = longest_first(n1, n2, budget);
                    a.truncate(k1, 0, tokenizers::TruncationDirection::Right);
                    b.truncate(k2, 0, tokenizers::TruncationDirection::Right);
                }
                let pair = tokenizer
                    .post_process(a, Some(b), true)
                    .map_err(|e| format!("cannot tokenise the pair: {e}"))?;
                let second = pair
                    .get_type_ids()
                    .iter()
                    .position(|&t| t != 0)
                    .unwrap_or(pair.len());
                Ok(Ok(Encoded::pair(pair.get_ids().to_vec(), second)))
            }
            TextTokenizer::Bytes { .. } => {
                let (n1, n2) = (first.len(), second.len());
                let (k1, k2) = if n1 + n2 > max {
                    if !truncate {
                        return Ok(Err(n1 + n2));
                    }
                    longest_first(n1, n2, max)
                } else {
                    (n1, n2)
                };
                let ids = first.bytes().take(k1).chain(second.bytes().take(k2));
                Ok(Ok(Encoded::pair(ids.map(u32::from).collect(), k1)))
            }
        }
    }

    /// The tokens of `text` with their byte offsets in it, as `POST /tokenize` answers them
    /// (text-embeddings-inference's shape): a special token (`[CLS]`) has its own text and no
    /// offsets; any other covers `text[start..stop]`.
    pub fn tokens(&self, text: &str, add_special: bool) -> Result<Vec<Token>, String> {
        match self {
            TextTokenizer::Hf { tokenizer, .. } => {
                let encoding = tokenizer
                    .encode(text, add_special)
                    .map_err(|e| format!("cannot tokenise the input: {e}"))?;
                Ok(encoding
                    .get_ids()
                    .iter()
                    .zip(encoding.get_offsets())
                    .zip(encoding.get_special_tokens_mask())
                    .zip(encoding.get_tokens())
                    .map(|(((&id, &(start, stop)), &special), token)| {
                        if special == 1 {
                            Token {
                                id,
                                text: token.clone(),
                                span: None,
                            }
                        } else {
                            let bytes = text.as_bytes().get(start..stop).unwrap_or_default();
                            Token {
                                id,
                                text: String::from_utf8_lossy(bytes).into_owned(),
                                span: Some((start, stop)),
                            }
                        }
                    })
                    .collect())
            }
            TextTokenizer::Bytes { .. } => Ok(text
                .bytes()
                .enumerate()
                .map(|(i, b)| Token {
                    id: u32::from(b),
                    text: String::from_utf8_lossy(&[b]).into_owned(),
                    span: Some((i, i + 1)),
                })
                .collect()),
        }
    }

    /// The text of token ids (each below [`vocab_size`](Self::vocab_size)), without the
    /// special tokens when `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, String> {
        match self {
            TextTokenizer::Hf { tokenizer, .. } => tokenizer
                .decode(ids, skip_special)
                .map_err(|e| format!("cannot decode the ids: {e}")),
            TextTokenizer::Bytes { .. } => {
                let bytes: Vec<u8> = ids.iter().map(|&id| id.min(255) as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
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

/// How many tokens of each text of a pair of `n1` and `n2` tokens stay within `budget`,
/// longest first: the longer text is cut to the shorter's length, then both alike (the second
/// text losing the odd token).
fn longest_first(n1: usize, n2: usize, budget: usize) -> (usize, usize) {
    if n1 + n2 <= budget {
        return (n1, n2);
    }
    let short = n1.min(n2);
    if short * 2 >= budget {
        // Both cut alike.
        return (budget - budget / 2, budget / 2);
    }
    // Only the longer one is cut.
    if n1 <= n2 {
        (n1, budget - n1)
    } else {
        (budget - n2, n2)
    }
}

/// The encoding of `text` (with special tokens when `add_special`) as
/// [`TextTokenizer::encode_within`] describes it: whole, or, for a text longer than `max`
/// tokens, a piece of it whose `keep` end holds the whole text's first (last) `max + 1` tokens.
fn encoding_within(
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    max: usize,
    keep: Keep,
    add_special: bool,
) -> Result<tokenizers::Encoding, String> {
    let encode = |part: &str| {
        tokenizer
            .encode(part, add_special)
            .map_err(|e| format!("cannot tokenise the input: {e}"))
    };
    let cut = |len: usize| match keep {
        Keep::Start => &text[..boundary_after(text, len)],
        Keep::End => &text[boundary_before(text, text.len().saturating_sub(len))..],
    };
    let end = |ids: &[u32]| -> Vec<u32> {
        match keep {
            Keep::Start => ids[..max].to_vec(),
            Keep::End => ids[ids.len() - max..].to_vec(),
        }
    };
    // Room for `max` tokens of up to 16 bytes each in the first piece.
    let mut piece = max.saturating_add(2).saturating_mul(16).max(4096);
    while piece.saturating_mul(2) < text.len() {
        let part = encode(cut(piece))?;
        if part.len() > max.saturating_add(1) {
            let longer = encode(cut(piece * 2))?;
            if longer.len() > max && end(part.get_ids()) == end(longer.get_ids()) {
                return Ok(part);
            }
        }
        piece = piece.saturating_mul(2);
    }
    if text.len() <= WHOLE_ALONE_BYTES {
        return encode(text);
    }
    // A long text whose tokens never settled (one long word, a run of whitespace): its
    // whole tokenisation runs alone in the process, so that its working memory is paid
    // once at a time, not once per CPU. (Texts this long are tokenised on tokio's
    // blocking pool, never on an HTTP thread.)
    static WHOLE: Mutex<()> = Mutex::new(());
    let _alone = WHOLE.lock().unwrap_or_else(|e| e.into_inner());
    encode(text)
}

/// Where a prefix of about `at` bytes ends: at the first whitespace at or after `at` when
/// there is one within 1 KiB (the prefix keeps whole words), else at the char boundary at or
/// after `at`.
fn boundary_after(text: &str, at: usize) -> usize {
    let mut chars = text.char_indices().skip_while(|&(i, _)| i < at).peekable();
    let first = chars.peek().map_or(text.len(), |&(i, _)| i);
    chars
        .take_while(|&(i, _)| i < at + 1024)
        .find(|&(_, c)| c.is_whitespace())
        .map_or(first, |(i, _)| i)
}

/// Where a suffix of about `text.len() - at` bytes starts: just past the last whitespace at
/// or before `at` when there is one within 1 KiB, else at the char boundary at or before `at`.
fn boundary_before(text: &str, at: usize) -> usize {
    let start = (0..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[..start]
        .char_indices()
        .rev()
        .take_while(|&(i, _)| i + 1024 >= start)
        .find(|&(_, c)| c.is_whitespace())
        .map_or(start, |(i, c)| i + c.len_utf8())
}
