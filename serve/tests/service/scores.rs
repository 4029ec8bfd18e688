//! `POST /rerank`, `POST /v1/rerank` and `POST /predict` on both servers (run from
//! `server_scenarios!`), on a cross-encoder and a classifier made from MiniLM-L3 with a random
//! scoring head (`heads.rs`), checked against scores computed by hand from the unmodified
//! MiniLM with the tokenizer's own pair encoding: scores to 1e-4, ranking order and labels
//! exact; 64 concurrent callers get the unbatched scores; a route the model does not answer,
//! empty lists and over-long pairs get their errors; `/info` and `/openapi.json` follow the
//! model's kind. Skipped (outside CI) when `models/` is not fetched.

use std::path::Path;
use std::sync::Arc;

use corestream_serve::model::{Backend, ModelFiles, ModelKind};
use corestream_serve::service::{serve_files, BatchOptions, Service};
use serde_json::{json, Value};

use crate::support::{get, minilm_dir, options, post, telemetry, Launch};
use corestream_testkit::heads::{classifier_config, reranker_config, Head, LABELS};

const QUERY: &str = "how do cats sleep";

/// 64 distinct documents of mixed lengths (5 to 64 words).
fn documents() -> Vec<String> {
    let words = [
        "cats", "sleep", "sixteen", "hours", "a", "day", "dogs", "bark", "the", "market", "fell",
        "sharply", "kittens", "nap", "in", "sunny", "spots", "while", "owners", "work",
    ];
    (0..64)
        .map(|i| {
            let n = 3 + (i * 7) % 60;
            // Distinct documents (a tie would leave the ranking order to rounding).
            let text: Vec<&str> = (0..n)
                .map(|k| words[(i * 3 + k * 5) % words.len()])
                .collect();
            format!("{} number {i}", text.join(" "))
        })
        .collect()
}

/// The service over the model directory `dir`, named `name`, on ONNX Runtime when its library
/// is found (CI), else tract; the references run on tract, so the two backends are compared.
fn serve(dir: &Path, name: &str) -> Arc<Service> {
    let mut files = ModelFiles::from_dir(dir).unwrap();
    name.clone_into(&mut files.name);
    let backend = *crate::support::backends(name).last().expect("a backend");
    let options = BatchOptions {
        max_client_batch: 64,
        ..options(256, 16)
    };
    let loaded = serve_files(&files, backend, &options).unwrap();
    Arc::new(Service::ready(loaded, telemetry()))
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn close(a: f64, b: f32, what: &str) {
    assert!((a - f64::from(b)).abs() < 1e-4, "{what}: {a} vs {b}");
}

/// The order of `scores`, highest first.
fn order(scores: &[f32]) -> Vec<usize> {
    let mut o: Vec<usize> = (0..scores.len()).collect();
    o.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    o
}

pub async fn rerank_scores(launch: Launch, name: &str) {
    let Some(minilm) = minilm_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let head = Head::random(1, 7);
    head.write(minilm, dir.path(), &reranker_config()).unwrap();
    assert_eq!(
        ModelFiles::from_dir(dir.path()).unwrap().kind,
        ModelKind::Reranker
    );
    let base = launch(serve(dir.path(), name));
    let client = reqwest::Client::new();
    let docs = documents();
    let reference = head.reference(minilm, Backend::Tract);
    let raw: Vec<f32> = docs
        .iter()
        .map(|d| reference.scores(QUERY, Some(d))[0])
        .collect();
    let expected_order = order(&raw);

    // TEI's /rerank: every text, most relevant first, probabilities.
    let (s, a) = post(
        &client,
        format!("{base}/rerank"),
        json!({"query": QUERY, "texts": docs, "return_text": true}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let ranks = a.as_array().unwrap();
    let got_order: Vec<usize> = ranks
        .iter()
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got_order, expected_order, "ranking order");
    for r in ranks {
        let i = r["index"].as_u64().unwrap() as usize;
        close(r["score"].as_f64().unwrap(), sigmoid(raw[i]), "score");
        assert_eq!(r["text"], docs[i].as_str());
    }
    // raw_scores: the model's scores; no text unless asked.
    let (s, a) = post(
        &client,
        format!("{base}/rerank"),
        json!({"query": QUERY, "texts": docs[..5], "raw_scores": true}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    for r in a.as_array().unwrap() {
        let i = r["index"].as_u64().unwrap() as usize;
        close(r["score"].as_f64().unwrap(), raw[i], "raw score");
        assert!(r.get("text").is_none());
    }

    // Cohere/Jina /v1/rerank: top_n, documents as texts or objects, usage.
    let mixed: Vec<Value> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                json!(d)
            } else {
                json!({"text": d})
            }
        })
        .collect();
    let (s, a) = post(
        &client,
        format!("{base}/v1/rerank"),
        json!({"model": "any", "query": QUERY, "documents": mixed, "top_n": 3, "return_documents": true})
            .to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["model"], name);
    let results = a["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (r, &i) in results.iter().zip(&expected_order) {
        assert_eq!(r["index"], i);
        close(
            r["relevance_score"].as_f64().unwrap(),
            sigmoid(raw[i]),
            "relevance",
        );
        assert_eq!(r["document"]["text"], docs[i].as_str());
    }
    assert!(a["usage"]["total_tokens"].as_u64().unwrap() > 64 * 8);

    // 64 concurrent callers, one document each: the scores of unbatched runs.
    let calls = docs.iter().enumerate().map(|(i, d)| {
        let (client, url) = (client.clone(), format!("{base}/rerank"));
        let body = json!({"query": QUERY, "texts": [d], "raw_scores": true}).to_string();
        async move {
            let (s, a) = post(&client, url, body).await;
            assert_eq!(s, 200, "{a}");
            (i, a[0]["score"].as_f64().unwrap())
        }
    });
    for (i, score) in futures::future::join_all(calls).await {
        close(score, raw[i], "concurrent score");
    }

    // Errors: the embedding and classifier routes, no texts, an over-long pair.
    let (s, e) = post(
        &client,
        format!("{base}/embed"),
        json!({"inputs": "x"}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("reranker"), "{e}");
    let (s, e) = post(
        &client,
        format!("{base}/v1/embeddings"),
        json!({"input": "x"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("wrong_model_type")),
        "{e}"
    );
    let (s, e) = post(
        &client,
        format!("{base}/predict"),
        json!({"inputs": "x"}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = post(
        &client,
        format!("{base}/rerank"),
        json!({"query": QUERY, "texts": []}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = post(
        &client,
        format!("{base}/v1/rerank"),
        json!({"query": QUERY, "documents": ["a"], "top_n": 0}).to_string(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{e}"
    );
    let long = "word ".repeat(400);
    let (s, e) = post(
        &client,
        format!("{base}/rerank"),
        json!({"query": QUERY, "texts": [long]}).to_string(),
    )
    .await;
    assert_eq!(s, 413, "{e}");
    let (s, a) = post(
        &client,
        format!("{base}/rerank"),
        json!({"query": QUERY, "texts": [long], "truncate": true}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");

    // /info and the OpenAPI document follow the kind.
    let (_, info) = get(&client, format!("{base}/info")).await;
    assert_eq!(
        (info["model_type"].as_str(), info["dimension"].as_u64()),
        (Some("reranker"), Some(1))
    );
    let (_, doc) = get(&client, format!("{base}/openapi.json")).await;
    assert!(doc["paths"]["/rerank"].is_object() && doc["paths"]["/v1/rerank"].is_object());
    assert!(doc["paths"]["/embed"].is_null() && doc["paths"]["/predict"].is_null());
}

pub async fn predict_scores(launch: Launch, name: &str) {
    let Some(minilm) = minilm_dir() else { return };
    let labels = LABELS;
    let dir = tempfile::tempdir().unwrap();
    let head = Head::random(3, 11);
    head.write(minilm, dir.path(), &classifier_config(false))
        .unwrap();
    let base = launch(serve(dir.path(), name));
    let client = reqwest::Client::new();
    let softmax = |x: &[f32]| {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        e.iter().map(|v| v / s).collect::<Vec<f32>>()
    };
    // One answer (labels, highest first) against its reference scores.
    let check = |answer: &Value, expected: &[f32]| {
        let got = answer.as_array().unwrap();
        assert_eq!(got.len(), 3);
        let want = order(expected);
        for (g, &l) in got.iter().zip(&want) {
            assert_eq!(g["label"], labels[l], "{answer}");
            close(g["score"].as_f64().unwrap(), expected[l], "label score");
        }
    };

    let reference = head.reference(minilm, Backend::Tract);
    let text = "the service answered quickly and well";
    let raw = reference.scores(text, None);
    let (s, a) = post(
        &client,
        format!("{base}/predict"),
        json!({"inputs": text}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    check(&a, &softmax(&raw));
    let (s, a) = post(
        &client,
        format!("{base}/predict"),
        json!({"inputs": text, "raw_scores": true}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    check(&a, &raw);

    // Two texts are one pair (as TEI reads them); a longer list holds texts and pairs.
    let pair = reference.scores("a cat sleeps", Some("a kitten naps"));
    let (s, a) = post(
        &client,
        format!("{base}/predict"),
        json!({"inputs": ["a cat sleeps", "a kitten naps"]}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    check(&a, &softmax(&pair));
    let (s, a) = post(
        &client,
        format!("{base}/predict"),
        json!({"inputs": [text, ["a cat sleeps", "a kitten naps"], "markets fell"]}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    let many = a.as_array().unwrap();
    assert_eq!(many.len(), 3);
    check(&many[0], &softmax(&raw));
    check(&many[1], &softmax(&pair));
    check(&many[2], &softmax(&reference.scores("markets fell", None)));

    // 64 concurrent callers get the unbatched scores.
    let texts: Vec<String> = documents();
    let calls = texts.iter().map(|t| {
        let (client, url) = (client.clone(), format!("{base}/predict"));
        let body = json!({"inputs": t, "raw_scores": true}).to_string();
        async move {
            let (s, a) = post(&client, url, body).await;
            assert_eq!(s, 200, "{a}");
            a
        }
    });
    let answers = futures::future::join_all(calls).await;
    for (t, a) in texts.iter().zip(&answers) {
        check(a, &reference.scores(t, None));
    }

    // The reranking routes are not this model's; an empty list is refused.
    let (s, e) = post(
        &client,
        format!("{base}/rerank"),
        json!({"query": "q", "texts": ["a"]}).to_string(),
    )
    .await;
    assert!(
        s == 400 && e["error"].as_str().unwrap().contains("classifier"),
        "{s} {e}"
    );
    let (s, e) = post(
        &client,
        format!("{base}/predict"),
        json!({"inputs": []}).to_string(),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (_, info) = get(&client, format!("{base}/info")).await;
    assert_eq!(info["model_type"], "classifier");
    assert_eq!(info["labels"], json!(labels));

    // A multi-label classifier scores each label on its own (sigmoid).
    let dir = tempfile::tempdir().unwrap();
    head.write(minilm, dir.path(), &classifier_config(true))
        .unwrap();
    let base = launch(serve(dir.path(), &format!("{name}-multi")));
    let (s, a) = post(
        &client,
        format!("{base}/predict"),
        json!({"inputs": text}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    check(&a, &raw.iter().map(|&x| sigmoid(x)).collect::<Vec<_>>());
}

/// An embedding model refuses the scoring routes, naming what it answers.
pub async fn embedders_refuse_scoring(launch: Launch, name: &str) {
    let (model, tokenizer) = crate::support::load(crate::support::Kind::TextNet, Backend::Tract);
    let base = launch(crate::support::service(
        model,
        tokenizer,
        name,
        &options(16, 16),
    ));
    let client = reqwest::Client::new();
    for (path, body) in [
        ("/rerank", json!({"query": "q", "texts": ["a"]})),
        ("/predict", json!({"inputs": "a"})),
    ] {
        let (s, e) = post(&client, format!("{base}{path}"), body.to_string()).await;
        assert_eq!(s, 400, "{path}: {e}");
        assert!(e["error"].as_str().unwrap().contains("/embed"), "{e}");
    }
    let (s, e) = post(
        &client,
        format!("{base}/v1/rerank"),
        json!({"query": "q", "documents": ["a"]}).to_string(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("wrong_model_type")),
        "{e}"
    );
}
