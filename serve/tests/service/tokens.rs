//! `POST /tokenize` and `POST /decode` on both servers (run from `server_scenarios!`), as
//! text-embeddings-inference answers them: on MiniLM-L3's WordPiece tokenizer when `models/`
//! is fetched (BERT-uncased ids: `[CLS]` 101, `[SEP]` 102, "hello" 7592, "world" 2088, and
//! byte offsets into the text), else on TextNet's one-token-per-byte stand-in; the tokens'
//! ids are the ids the embedding routes feed the model; decode round-trips; 64 concurrent
//! callers get what one caller gets; the limits answer 400 and 413 in TEI's error shape.

use corestream_serve::model::{Backend, TextTokenizer};
use serde_json::{json, Value};

use crate::support::{load, options, post, service, Kind, Launch};

/// The service over MiniLM when fetched (`true`), else TextNet.
fn model(
    name: &str,
) -> (
    std::sync::Arc<corestream_serve::service::Service>,
    TextTokenizer,
    bool,
) {
    let minilm = crate::support::minilm_dir().is_some();
    let kind = if minilm { Kind::MiniLm } else { Kind::TextNet };
    let (model, tokenizer) = load(kind, Backend::Tract);
    let (_, reference) = load(kind, Backend::Tract);
    (
        service(model, tokenizer, name, &options(64, 16)),
        reference,
        minilm,
    )
}

/// One token of an answer: `(id, text, special, start, stop)`.
type Seen = (u64, String, bool, Option<u64>, Option<u64>);

/// Each token of one input's answer.
fn tokens(value: &Value) -> Vec<Seen> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["text"].as_str().unwrap().to_owned(),
                t["special"].as_bool().unwrap(),
                t["start"].as_u64(),
                t["stop"].as_u64(),
            )
        })
        .collect()
}

pub async fn tokenize_and_decode(launch: Launch, name: &str) {
    let (service, tokenizer, minilm) = model(name);
    let base = launch(service);
    let client = reqwest::Client::new();
    let tokenize = format!("{base}/tokenize");
    let decode = format!("{base}/decode");

    // One text: a list of one list.
    let (status, one) = post(
        &client,
        tokenize.clone(),
        json!({"inputs": "Hello world"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    let got = tokens(&one[0]);
    if minilm {
        let s = |t: &str| t.to_owned();
        assert_eq!(
            got,
            vec![
                (101, s("[CLS]"), true, None, None),
                (7592, s("Hello"), false, Some(0), Some(5)),
                (2088, s("world"), false, Some(6), Some(11)),
                (102, s("[SEP]"), true, None, None),
            ]
        );
    } else {
        assert_eq!(got.len(), "Hello world".len());
        assert_eq!(
            got[1],
            (u64::from(b'e'), "e".to_owned(), false, Some(1), Some(2))
        );
    }
    // Without special tokens.
    let (status, bare) = post(
        &client,
        tokenize.clone(),
        json!({"inputs": "Hello world", "add_special_tokens": false}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{bare}");
    assert!(tokens(&bare[0]).iter().all(|t| !t.2), "{bare}");

    // Several texts: each token's text is its slice of the input, and the ids are those the
    // embedding routes feed the model.
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "naïve café — ünïcödé, emoji 🦀 and tabs\there",
        "short",
    ];
    let (status, many) = post(
        &client,
        tokenize.clone(),
        json!({"inputs": texts}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many.as_array().unwrap().len(), texts.len());
    for (text, answer) in texts.iter().zip(many.as_array().unwrap()) {
        let got = tokens(answer);
        let ids: Vec<u32> = got.iter().map(|t| t.0 as u32).collect();
        assert_eq!(ids, tokenizer.encode(text).unwrap(), "{text}");
        for (_, piece, special, start, stop) in &got {
            if !special {
                let (a, b) = (start.unwrap() as usize, stop.unwrap() as usize);
                let slice = String::from_utf8_lossy(&text.as_bytes()[a..b]);
                assert_eq!(piece, &slice, "{text}");
            }
        }
    }

    // Decode: back to text; special tokens kept on request.
    let hello: Vec<u64> = got_ids(&one[0]);
    let (status, text) = post(&client, decode.clone(), json!({"ids": hello}).to_string()).await;
    assert_eq!(status, 200, "{text}");
    let expected = if minilm { "hello world" } else { "Hello world" };
    assert_eq!(text, json!([expected]));
    if minilm {
        let (status, text) = post(
            &client,
            decode.clone(),
            json!({"ids": hello, "skip_special_tokens": false}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(text, json!(["[CLS] hello world [SEP]"]));
    }
    let batch: Vec<Vec<u64>> = many.as_array().unwrap().iter().map(got_ids).collect();
    let (status, texts_back) =
        post(&client, decode.clone(), json!({"ids": batch}).to_string()).await;
    assert_eq!(status, 200, "{texts_back}");
    assert_eq!(texts_back.as_array().unwrap().len(), texts.len());
    assert_eq!(texts_back[2], "short");

    // 64 concurrent callers: each answer equals the one-caller answer.
    let mut handles = Vec::new();
    for i in 0..64 {
        let (client, tokenize, decode) = (client.clone(), tokenize.clone(), decode.clone());
        let batch = batch.clone();
        handles.push(tokio::spawn(async move {
            if i % 2 == 0 {
                post(&client, tokenize, json!({"inputs": texts}).to_string()).await
            } else {
                post(&client, decode, json!({"ids": batch}).to_string()).await
            }
        }));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let (status, answer) = h.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, if i % 2 == 0 { &many } else { &texts_back }.clone());
    }

    // No ids: one input, the empty text (as TEI reads `[]`: a single list).
    let (status, empty) = post(&client, decode.clone(), json!({"ids": []}).to_string()).await;
    assert_eq!((status, empty), (200, json!([""])));

    // Limits, in TEI's error shape.
    let vocab = tokenizer.vocab_size();
    let long = "word ".repeat(100_000);
    let cases = [
        (&decode, json!({"ids": [1, vocab]}), 400),
        (&decode, json!({"ids": vec![vec![1]; 33]}), 413),
        (&decode, json!({"ids": "hello"}), 400),
        (&tokenize, json!({"inputs": []}), 400),
        (&tokenize, json!({"inputs": vec!["a"; 33]}), 413),
        (
            &tokenize,
            json!({"inputs": "a", "prompt_name": "query"}),
            400,
        ),
        (&tokenize, json!({"inputs": "a", "unknown": 1}), 400),
        (&tokenize, json!({"inputs": long}), 413),
    ];
    for (url, body, expected) in cases {
        let shown = body.to_string().chars().take(80).collect::<String>();
        let (status, answer) = post(&client, url.clone(), body.to_string()).await;
        assert_eq!(status, expected, "{url} {shown}: {answer}");
        assert_eq!(answer["error_type"], "Validation", "{answer}");
    }
}

fn got_ids(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}
