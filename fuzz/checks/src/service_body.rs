//! Target `service_body`: the embedding service's request bodies (`corestream-serve`),
//! through the framework-neutral `handlers::handle` of one process-wide ready `Service`: the
//! fuzz bytes are the body of `POST /v1/embeddings`, `POST /embed`, `POST /tokenize` and
//! `POST /decode`, and the first byte
//! picks one of the GET routes, asked as well. The model is [`Toy`] (8 numbers per row computed
//! from the token ids) behind the service's real batcher, with the byte tokenizer (inputs of at
//! most [`MAX_INPUT_LENGTH`] tokens), at most [`MAX_CLIENT_BATCH`] inputs per request.
//!
//! Checks, on every POST route: no panic; the status is 200, 400 or 413 (nothing else loads
//! the service, so a 503 is a failure, as is a 500); the body is JSON whatever the status; a
//! 4xx carries the route's error shape (OpenAI's `error.message` and `error.type`,
//! text-embeddings-inference's `error` and `error_type`); a 200 answers exactly one vector per
//! input of the request, in order, each the model's vector for that input (after the
//! request's truncation), unit length unless `"normalize": false`: OpenAI's `data[i].index == i`
//! with floats or base64 of `DIM * 4` bytes as `encoding_format` says (`dimensions` d: the
//! first d numbers, unit length again), text-embeddings-
//! inference's bare list for `{"inputs"}`, `{model, dim, embeddings}` for `{"texts"}`. The
//! expected inputs are read from the fuzz bytes with `serde_json` only after a 200. The GET
//! routes answer 200 (JSON, but `/metrics`: text). `/tokenize` answers one token per byte of
//! each input, its id the byte and its offsets the byte's; `/decode` a non-empty list.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use corestream::batch::Rows;
use corestream::{BoxError, CpuPool, Module, Streams};
use serde_json::Value;

use corestream_serve::http::{handle, BodyError, BodySize, Method, Reply, RequestHead, Route};
use corestream_serve::model::{Encoded, TextTokenizer};
use corestream_serve::service::{serve_model, BatchOptions, Service};

/// Length of every vector.
pub const DIM: usize = 8;
/// The longest input, in tokens (bytes).
pub const MAX_INPUT_LENGTH: usize = 64;
/// Most inputs in one request.
pub const MAX_CLIENT_BATCH: usize = 32;
/// The model's name, echoed in answers.
pub const MODEL: &str = "toy";

/// A cheap deterministic embedder: [`DIM`] positive numbers per row from its token ids
/// (never a zero vector, so every normalised vector has unit length).
pub struct Toy;

/// The unnormalised vector [`Toy`] answers for `ids`.
pub fn toy_vector(ids: &[u32]) -> Vec<f32> {
    (0..DIM as u64)
        .map(|k| {
            let h = ids.iter().enumerate().fold(k + 1, |h, (i, &id)| {
                (h * 31 + (u64::from(id) + 1) * (i as u64 + k + 1)) % 1009
            });
            1.0 + h as f32 / 64.0
        })
        .collect()
}

impl Module for Toy {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;

    fn forward(&self, rows: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        Ok(Rows(
            rows.0.iter().map(|row| toy_vector(&row.ids)).collect(),
        ))
    }
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    service: Service,
}

/// The process-wide runtime and ready service (the batcher's streams are built once).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime");
        let options = BatchOptions {
            pool: CpuPool::all().expect("the allowed CPUs"),
            streams: Streams::Auto,
            max_batch: 16,
            max_batch_tokens: None,
            max_wait: Duration::ZERO,
            queue: 64,
            max_client_batch: MAX_CLIENT_BATCH,
            auto_truncate: false,
            count_only: false,
            width: corestream::Width::Narrow,
            tune: None,
        };
        let tokenizer = TextTokenizer::Bytes {
            max_input_length: MAX_INPUT_LENGTH,
        };
        let loaded = serve_model(Toy, tokenizer, MODEL, "toy".into(), &options)
            .expect("the toy model is served");
        assert_eq!(loaded.info.dimension, DIM);
        let service = Service::ready(loaded, Arc::new(String::new));
        Fixture { runtime, service }
    })
}

/// Answers `route` for `body` on the process-wide service.
pub fn ask(route: Route, body: &[u8]) -> Reply {
    let f = fixture();
    let read = std::future::ready(Ok::<_, BodyError>(body));
    let size = BodySize::Exact(body.len() as u64);
    f.runtime
        .block_on(handle(&f.service, route, RequestHead::json(size), read))
}

/// Sends `data` as both POST bodies and asks one GET route, checking every answer.
pub fn check(data: &[u8]) {
    let openai = ask(Route::OpenAiEmbeddings, data);
    check_openai(data, &openai);
    let embed = ask(Route::Embed, data);
    check_embed(data, &embed);
    let tokens = ask(Route::Tokenize, data);
    check_tokenize(data, &tokens);
    let decoded = ask(Route::Decode, data);
    let answer = json(&decoded, Route::Decode);
    if decoded.status == 200 {
        assert!(answer.as_array().is_some_and(|a| !a.is_empty()), "{answer}");
    } else {
        assert_eq!(answer["error_type"], "Validation", "{answer}");
    }
    // The GET routes, in `Route::ALL`'s order; the first byte picks one.
    let gets: Vec<Route> = Route::ALL
        .into_iter()
        .filter(|r| r.method() == Method::Get)
        .collect();
    let get = gets[usize::from(data.first().copied().unwrap_or(0)) % gets.len()];
    let reply = ask(get, b"");
    assert_eq!(reply.status, 200, "GET {}: {}", get.path(), text(&reply));
    if get != Route::Metrics {
        json(&reply, get);
    }
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The reply's body as JSON, after checking its status is 200, 400 or 413.
fn json(reply: &Reply, route: Route) -> Value {
    assert!(
        matches!(reply.status, 200 | 400 | 413),
        "{} answered {}: {}",
        route.path(),
        reply.status,
        text(reply)
    );
    assert_eq!(reply.content_type, "application/json", "{}", route.path());
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", route.path(), text(reply)))
}

fn check_openai(data: &[u8], reply: &Reply) {
    let answer = json(reply, Route::OpenAiEmbeddings);
    if reply.status != 200 {
        let error = &answer["error"];
        assert!(error["message"].is_string(), "{answer}");
        assert_eq!(error["type"], "invalid_request_error", "{answer}");
        assert!(error["code"].is_string(), "{answer}");
        return;
    }
    // serde_json skips the fields OpenAiRequest ignores without checking their UTF-8 (it does
    // check every string it keeps): such a body answers 200, and its known fields read the same
    // after a lossy conversion.
    let request: Value =
        serde_json::from_str(&String::from_utf8_lossy(data)).expect("a 200 for a JSON body");
    let truncate = request["truncate"] == Value::Bool(true);
    let inputs: Vec<Vec<u32>> = match &request["input"] {
        Value::String(t) => vec![text_ids(t, truncate, Keep::Start)],
        Value::Array(items) if items.first().is_some_and(Value::is_number) => {
            vec![token_ids(items, truncate)]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(t) => text_ids(t, truncate, Keep::Start),
                Value::Array(ids) => token_ids(ids, truncate),
                other => panic!("a 200 for input item {other}"),
            })
            .collect(),
        other => panic!("a 200 for input {other}"),
    };
    assert!((1..=MAX_CLIENT_BATCH).contains(&inputs.len()), "{request}");
    let base64 = request["encoding_format"] == "base64";
    // `dimensions` (an integer, possibly written `6.0`): the leading ones, unit length again.
    let dims = match request.get("dimensions").and_then(Value::as_f64) {
        Some(d) => {
            assert!(
                d.fract() == 0.0 && (1.0..=DIM as f64).contains(&d),
                "a 200 for dimensions {d}"
            );
            d as usize
        }
        None => DIM,
    };
    assert_eq!(answer["object"], "list", "{answer}");
    assert_eq!(answer["model"], MODEL, "{answer}");
    let data = answer["data"].as_array().expect("data is a list");
    assert_eq!(data.len(), inputs.len(), "one vector per input: {answer}");
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    assert_eq!(answer["usage"]["prompt_tokens"], tokens, "{answer}");
    for (i, (entry, ids)) in data.iter().zip(&inputs).enumerate() {
        assert_eq!(entry["index"], i, "{answer}");
        assert_eq!(entry["object"], "embedding", "{answer}");
        let v = if base64 {
            let s = entry["embedding"].as_str().expect("a base64 string");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("valid base64");
            assert_eq!(bytes.len(), dims * 4, "{answer}");
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            floats(&entry["embedding"])
        };
        same(&v, ids, true, dims, &answer);
    }
}

/// `/tokenize` on the byte tokenizer: one token per byte of each input, its id the byte, its
/// offsets the byte's.
fn check_tokenize(data: &[u8], reply: &Reply) {
    let answer = json(reply, Route::Tokenize);
    if reply.status != 200 {
        assert!(answer["error"].is_string(), "{answer}");
        assert_eq!(answer["error_type"], "Validation", "{answer}");
        return;
    }
    let request: Value = serde_json::from_slice(data).expect("a 200 for a JSON body");
    let texts: Vec<&str> = match &request["inputs"] {
        Value::String(t) => vec![t],
        Value::Array(items) => items.iter().map(|t| t.as_str().expect("a text")).collect(),
        other => panic!("a 200 for inputs {other}"),
    };
    let lists = answer.as_array().expect("a list per input");
    assert_eq!(lists.len(), texts.len(), "{answer}");
    for (text, list) in texts.iter().zip(lists) {
        let list = list.as_array().expect("a list of tokens");
        assert_eq!(list.len(), text.len(), "{answer}");
        for (i, (token, byte)) in list.iter().zip(text.bytes()).enumerate() {
            assert_eq!(token["id"], u64::from(byte), "{answer}");
            assert_eq!(
                (token["start"].as_u64(), token["stop"].as_u64()),
                (Some(i as u64), Some(i as u64 + 1))
            );
        }
    }
}

fn check_embed(data: &[u8], reply: &Reply) {
    let answer = json(reply, Route::Embed);
    if reply.status != 200 {
        assert!(answer["error"].is_string(), "{answer}");
        assert_eq!(answer["error_type"], "Validation", "{answer}");
        return;
    }
    let request: Value = serde_json::from_slice(data).expect("a 200 for a JSON body");
    if request.get("texts").is_some() && request.get("inputs").is_none() {
        let texts = request["texts"].as_array().expect("texts is a list");
        assert_eq!(answer["model"], MODEL, "{answer}");
        assert_eq!(answer["dim"], DIM, "{answer}");
        let vectors = answer["embeddings"].as_array().expect("embeddings");
        assert_eq!(vectors.len(), texts.len(), "one vector per text: {answer}");
        assert!((1..=MAX_CLIENT_BATCH).contains(&texts.len()), "{request}");
        for (v, t) in vectors.iter().zip(texts) {
            let ids = text_ids(t.as_str().expect("a text"), false, Keep::Start);
            same(&floats(v), &ids, true, DIM, &answer);
        }
        return;
    }
    let truncate = request["truncate"] == Value::Bool(true);
    let keep = if request["truncation_direction"] == "Left" {
        Keep::End
    } else {
        Keep::Start
    };
    let normalize = request["normalize"] != Value::Bool(false);
    let texts: Vec<&str> = match &request["inputs"] {
        Value::String(t) => vec![t],
        Value::Array(items) => items.iter().map(|t| t.as_str().expect("a text")).collect(),
        other => panic!("a 200 for inputs {other}"),
    };
    assert!((1..=MAX_CLIENT_BATCH).contains(&texts.len()), "{request}");
    let vectors = answer.as_array().expect("a bare list of vectors");
    assert_eq!(vectors.len(), texts.len(), "one vector per input: {answer}");
    for (v, t) in vectors.iter().zip(texts) {
        same(
            &floats(v),
            &text_ids(t, truncate, keep),
            normalize,
            DIM,
            &answer,
        );
    }
}

/// Which end truncation keeps.
#[derive(Clone, Copy)]
enum Keep {
    Start,
    End,
}

/// The byte tokenizer's ids of `text`, cut as the service cuts them (a 200 for a longer text
/// without truncation is a failure).
fn text_ids(text: &str, truncate: bool, keep: Keep) -> Vec<u32> {
    let ids: Vec<u32> = text.bytes().map(u32::from).collect();
    cut(ids, truncate, keep)
}

fn token_ids(ids: &[Value], truncate: bool) -> Vec<u32> {
    let ids: Vec<u32> = ids
        .iter()
        .map(|id| {
            // A whole number, possibly written with a fraction (`2.0`).
            let id = id
                .as_u64()
                .or_else(|| {
                    id.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .expect("a token id");
            assert!(id < 256, "a 200 for token id {id} outside the vocabulary");
            id as u32
        })
        .collect();
    assert!(!ids.is_empty(), "a 200 for an input without tokens");
    cut(ids, truncate, Keep::Start)
}

fn cut(mut ids: Vec<u32>, truncate: bool, keep: Keep) -> Vec<u32> {
    if ids.len() > MAX_INPUT_LENGTH {
        assert!(
            truncate,
            "a 200 for {} tokens without truncation",
            ids.len()
        );
        match keep {
            Keep::Start => ids.truncate(MAX_INPUT_LENGTH),
            Keep::End => {
                ids.drain(..ids.len() - MAX_INPUT_LENGTH);
            }
        }
    }
    ids
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a vector is a list of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// `v` is the model's vector for `ids` (unit length when `normalize`), cut to its first
/// `dims` numbers and made unit length again when fewer than all.
fn same(v: &[f32], ids: &[u32], normalize: bool, dims: usize, answer: &Value) {
    assert_eq!(v.len(), dims, "{answer}");
    let unit = |v: &mut Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
    };
    let mut expected = toy_vector(ids);
    if normalize {
        unit(&mut expected);
    }
    if dims < expected.len() {
        expected.truncate(dims);
        unit(&mut expected);
    }
    for (got, want) in v.iter().zip(&expected) {
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "vector {v:?} for ids {ids:?}, expected {expected:?}: {answer}"
        );
    }
}
