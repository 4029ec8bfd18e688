//! Request bodies parsed without amplification.
//!
//! serde's `#[serde(untagged)]` enums buffer the whole value in a tree of `Content` nodes
//! before they choose a variant, and a `serde_json::Value` is such a tree too: a 2 MiB body
//! of `[[1],[1],...]` became ~500k nodes and inner vectors, ~13x the bytes received, all
//! parsed before the request's input count was checked. The inputs here are read by visitors
//! instead, straight from the JSON text into their final vectors, and a list of inputs stops
//! being read at the request limit ([`parse`]'s `max_items`, `--max-client-batch`): what one
//! request costs in memory is then about its body's size.
//!
//! The limit of the parse running on this thread is a thread-local, set by [`parse`] around
//! one synchronous `serde_json` call: serde's derived structs give a field's deserialiser no
//! other way to learn a value known only at run time. Outside [`parse`] (clients using the
//! API types) lists are not limited.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::http::api::{InputIds, OpenAiInput, PredictInput, PredictItem, TeiInput};

thread_local! {
    /// The most inputs a list may hold in the parse running on this thread.
    static MAX_ITEMS: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Set when that parse stopped at the limit.
    static OVER: Cell<bool> = const { Cell::new(false) };
}

/// Why a body could not be parsed.
#[derive(Debug)]
pub enum ParseError {
    /// A list of inputs holds more than the limit; parsing stopped there.
    TooManyInputs {
        /// The limit.
        max: usize,
    },
    /// Not JSON, or not the request's shape.
    Json(serde_json::Error),
}

/// Parses `text` as `T`, reading at most `max_items` inputs of any list of inputs (past it:
/// [`ParseError::TooManyInputs`], the rest of the body unread).
///
/// ```
/// use corestream_serve::http::api::{OpenAiInput, OpenAiRequest};
/// use corestream_serve::http::bounded::{parse, ParseError};
///
/// let ok: OpenAiRequest = parse(r#"{"input": [[1, 2], [3]]}"#, 2).unwrap();
/// assert!(matches!(ok.input, OpenAiInput::TokenLists(ref l) if l.len() == 2));
/// let over = parse::<OpenAiRequest>(r#"{"input": ["a", "b", "c"]}"#, 2);
/// assert!(matches!(over, Err(ParseError::TooManyInputs { max: 2 })));
/// ```
pub fn parse<T: DeserializeOwned>(text: &str, max_items: usize) -> Result<T, ParseError> {
    /// Restores the thread's limit however the parse ends.
    struct Scope(usize);
    impl Drop for Scope {
        fn drop(&mut self) {
            MAX_ITEMS.with(|m| m.set(self.0));
        }
    }
    let _scope = Scope(MAX_ITEMS.with(|m| m.replace(max_items)));
    OVER.with(|o| o.set(false));
    serde_json::from_str(text).map_err(|e| {
        if OVER.with(|o| o.replace(false)) {
            ParseError::TooManyInputs { max: max_items }
        } else {
            ParseError::Json(e)
        }
    })
}

/// Reads the rest of a list into `items` (which holds what was read already), one `T` at a
/// time, stopping with an error past the thread's limit.
fn read_rest<'de, T, A>(mut seq: A, mut items: Vec<T>) -> Result<Vec<T>, A::Error>
where
    T: Deserialize<'de>,
    A: SeqAccess<'de>,
{
    let max = MAX_ITEMS.with(Cell::get);
    loop {
        if items.len() >= max {
            // One more item (skipped, not kept) means over the limit.
            return match seq.next_element::<IgnoredAny>()? {
                None => Ok(items),
                Some(_) => {
                    OVER.with(|o| o.set(true));
                    Err(de::Error::custom(format_args!(
                        "more than {max} inputs in one request"
                    )))
                }
            };
        }
        match seq.next_element()? {
            Some(item) => items.push(item),
            None => return Ok(items),
        }
    }
}

/// The first item of an OpenAI `input` list, which decides what the list holds.
enum First {
    Text(String),
    Id(u32),
    Ids(Vec<u32>),
}

impl<'de> Deserialize<'de> for First {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstVisitor;
        impl<'de> Visitor<'de> for FirstVisitor {
            type Value = First;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, a token id or a list of token ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<First, E> {
                Ok(First::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<First, E> {
                Ok(First::Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<First, E> {
                token_id(v).map(First::Id)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<First, E> {
                whole(v).and_then(token_id).map(First::Id)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<First, A::Error> {
                read_ids(seq, Vec::new()).map(First::Ids)
            }
        }
        deserializer.deserialize_any(FirstVisitor)
    }
}

/// A token id: a `u32`.
fn token_id<E: de::Error>(v: u64) -> Result<u32, E> {
    u32::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &"a token id"))
}

/// A JSON number with no fraction (`180.0`: an integer to JSON Schema, which the OpenAPI
/// document's `integer` follows), as a `u64`.
fn whole<E: de::Error>(v: f64) -> Result<u64, E> {
    if v.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&v) {
        Ok(v as u64)
    } else {
        Err(E::invalid_type(de::Unexpected::Float(v), &"a whole number"))
    }
}

/// A non-negative integer, written `7` or `7.0`.
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeVisitor;
        impl Visitor<'_> for WholeVisitor {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
                whole(v).map(Whole)
            }
        }
        deserializer.deserialize_any(WholeVisitor)
    }
}

/// `#[serde(default, deserialize_with = "bounded::optional_whole")]`: an optional non-negative
/// integer that may be written `7.0` (absent: `None`; `null` too).
pub fn optional_whole<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<Whole>::deserialize(deserializer).map(|w| w.map(|w| w.0))
}

/// One input's token ids, each written `7` or `7.0` (as the first list's are).
struct TokenIds(Vec<u32>);

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdsVisitor;
        impl<'de> Visitor<'de> for IdsVisitor {
            type Value = TokenIds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of token ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TokenIds, A::Error> {
                read_ids(seq, Vec::new()).map(TokenIds)
            }
        }
        deserializer.deserialize_seq(IdsVisitor)
    }
}

/// The rest of a list of token-id lists after `first`.
fn read_id_lists<'de, A: SeqAccess<'de>>(
    seq: A,
    first: Vec<u32>,
) -> Result<Vec<Vec<u32>>, A::Error> {
    let lists = read_rest(seq, vec![TokenIds(first)])?;
    Ok(lists.into_iter().map(|ids| ids.0).collect())
}

/// The rest of one input's token ids after `ids`. Not limited in count: bounded by the body
/// (4 bytes kept per id of at least 2 bytes sent), and by the model's length once parsed.
fn read_ids<'de, A: SeqAccess<'de>>(mut seq: A, mut ids: Vec<u32>) -> Result<Vec<u32>, A::Error> {
    while let Some(Whole(id)) = seq.next_element()? {
        ids.push(token_id(id)?);
    }
    Ok(ids)
}

impl<'de> Deserialize<'de> for OpenAiInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = OpenAiInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a text, a list of texts, a list of token ids or a list of lists of token ids",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OpenAiInput, E> {
                Ok(OpenAiInput::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<OpenAiInput, E> {
                Ok(OpenAiInput::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OpenAiInput, A::Error> {
                Ok(match seq.next_element::<First>()? {
                    None => OpenAiInput::Texts(Vec::new()),
                    Some(First::Text(t)) => OpenAiInput::Texts(read_rest(seq, vec![t])?),
                    Some(First::Id(id)) => OpenAiInput::Tokens(read_ids(seq, vec![id])?),
                    Some(First::Ids(ids)) => OpenAiInput::TokenLists(read_id_lists(seq, ids)?),
                })
            }
        }
        deserializer.deserialize_any(InputVisitor)
    }
}

impl<'de> Deserialize<'de> for TeiInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = TeiInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text or a list of texts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TeiInput, E> {
                Ok(TeiInput::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<TeiInput, E> {
                Ok(TeiInput::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<TeiInput, A::Error> {
                read_rest(seq, Vec::new()).map(TeiInput::Texts)
            }
        }
        deserializer.deserialize_any(InputVisitor)
    }
}

impl<'de> Deserialize<'de> for InputIds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdsVisitor;
        impl<'de> Visitor<'de> for IdsVisitor {
            type Value = InputIds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of token ids or a list of lists of token ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputIds, A::Error> {
                Ok(match seq.next_element::<First>()? {
                    None => InputIds::Single(Vec::new()),
                    Some(First::Id(id)) => InputIds::Single(read_ids(seq, vec![id])?),
                    Some(First::Ids(ids)) => InputIds::Batch(read_id_lists(seq, ids)?),
                    Some(First::Text(_)) => {
                        return Err(de::Error::invalid_type(
                            de::Unexpected::Str("..."),
                            &"a token id or a list of token ids",
                        ))
                    }
                })
            }
        }
        deserializer.deserialize_seq(IdsVisitor)
    }
}

impl<'de> Deserialize<'de> for PredictInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = PredictInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, a pair of texts, or a list of texts and pairs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PredictInput, E> {
                Ok(PredictInput::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<PredictInput, E> {
                Ok(PredictInput::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PredictInput, A::Error> {
                let items: Vec<PredictItem> = read_rest(seq, Vec::new())?;
                // Exactly two texts are one pair, as text-embeddings-inference reads them.
                Ok(match items.as_slice() {
                    [PredictItem::Text(a), PredictItem::Text(b)] => {
                        PredictInput::Pair([a.clone(), b.clone()])
                    }
                    _ => PredictInput::Batch(items),
                })
            }
        }
        deserializer.deserialize_any(InputVisitor)
    }
}

/// `#[serde(deserialize_with = "bounded::list")]`: a list of inputs under the limit.
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ListVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            read_rest(seq, Vec::new())
        }
    }
    deserializer.deserialize_seq(ListVisitor(PhantomData))
}

/// [`list`] for an optional field (`#[serde(default, deserialize_with = ...)]`).
pub fn optional_list<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    list(deserializer).map(Some)
}
