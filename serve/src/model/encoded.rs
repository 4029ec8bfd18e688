//! One input as the model is fed it ([`Encoded`]): token ids, and where the second text of a
//! pair starts (a cross-encoder's query and document), which decides its `token_type_ids`.

use corestream::batch::Rows;

/// One input's token ids, special tokens included, and where its second segment starts.
///
/// A single text is one segment (`token_type_ids` all 0); a pair tokenised by
/// [`TextTokenizer::encode_pair`](crate::model::TextTokenizer::encode_pair) is
/// `[CLS] first [SEP] second [SEP]` with type 0 up to and including the first `[SEP]` and type
/// 1 from `second` on, as BERT's tokenizer gives them.
///
/// ```
/// use corestream_serve::model::Encoded;
///
/// let one = Encoded::single(vec![101, 7592, 102]);
/// assert_eq!(one.type_ids().collect::<Vec<_>>(), [0, 0, 0]);
/// let pair = Encoded::pair(vec![101, 7592, 102, 2088, 102], 3);
/// assert_eq!(pair.type_ids().collect::<Vec<_>>(), [0, 0, 0, 1, 1]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The token ids.
    pub ids: Vec<u32>,
    /// The index of the first token of type 1 (`ids.len()` for a single text).
    pub second: usize,
}

impl Encoded {
    /// One text's ids: one segment.
    pub fn single(ids: Vec<u32>) -> Encoded {
        let second = ids.len();
        Encoded { ids, second }
    }

    /// A pair's ids, the second segment starting at `second` (clamped to the length).
    pub fn pair(ids: Vec<u32>, second: usize) -> Encoded {
        let second = second.min(ids.len());
        Encoded { ids, second }
    }

    /// Its length in tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no token.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `token_type_ids` of its tokens: 0 before [`second`](Self::second), 1 from it.
    pub fn type_ids(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.ids.len()).map(|t| i64::from(t >= self.second))
    }
}

impl From<Vec<u32>> for Encoded {
    fn from(ids: Vec<u32>) -> Encoded {
        Encoded::single(ids)
    }
}

/// The padded length of one batch of inputs: its longest, in tokens (the batcher's token cost
/// of a request).
pub fn longest(rows: &Rows<Encoded>) -> usize {
    rows.0.iter().map(Encoded::len).max().unwrap_or(0)
}
