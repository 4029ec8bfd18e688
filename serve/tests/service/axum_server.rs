//! The axum server (`corestream_serve::http::axum`) end to end on 127.0.0.1, with the
//! scenarios shared with the actix-web server (`support.rs`): 64 concurrent
//! requests over the OpenAI, text-embeddings-inference and original forms each equal to the
//! unbatched result (1e-4), base64 equal to float, 413 on over-long input without truncation
//! and the truncated vector with it, 400 on bad JSON, 503 on a full queue, `/info`,
//! `/openapi.json`, health through loading / failed / ready / draining, Prometheus metrics
//! with their labels, tracing spans seen by a test subscriber, and the official `openai` Python
//! client. Runs with the bundled TextNet always, and with MiniLM-L3 when `models/` has been
//! fetched (CI fetches it); each on tract and on ONNX Runtime (skipped with a notice when its
//! library is not found, unless `CORESTREAM_REQUIRE_ORT=1`), whose embeddings must agree
//! within 1e-4. Also the model files' readers (maximum input length, truncation).

use corestream::batch::Rows;
use corestream::Module;
use corestream_serve::Server;

use crate::scenarios;
use crate::support::{self, Kind, Model};
use corestream_serve::model::tokenizer;
use corestream_serve::model::{embedder, Backend, Keep, TextTokenizer};

/// The same texts give the same embeddings (within 1e-4) on tract and on ONNX Runtime, in
/// one padded batch and one at a time.
fn assert_backends_agree(kind: Kind) {
    let (tract, tokenizer) = support::load(kind, Backend::Tract);
    let (ort, _) = support::load(kind, Backend::Ort);
    let all: Vec<String> = (0..8).flat_map(support::texts).collect();
    let ids: Vec<Vec<u32>> = all.iter().map(|t| tokenizer.encode(t).unwrap()).collect();
    let norm = |m: &Model, ids: Vec<Vec<u32>>| -> Vec<Vec<f32>> {
        m.forward(Rows(
            ids.into_iter()
                .map(corestream_serve::model::Encoded::single)
                .collect(),
        ))
        .unwrap()
        .0
        .into_iter()
        .map(embedder::normalize)
        .collect()
    };
    let d = support::max_diff(&norm(&tract, ids.clone()), &norm(&ort, ids.clone()));
    assert!(d <= 1e-4, "tract vs ort, one batch: max diff {d}");
    for row in ids {
        let d = support::max_diff(&norm(&tract, vec![row.clone()]), &norm(&ort, vec![row]));
        assert!(d <= 1e-4, "tract vs ort, one row: max diff {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn textnet_end_to_end() {
    let _shared = support::shared().await;
    let backends = support::backends("textnet_end_to_end");
    for &backend in &backends {
        eprintln!("textnet on {backend}");
        scenarios::end_to_end(
            support::launcher(Server::Axum),
            Kind::TextNet,
            backend,
            &format!("axum-textnet-{backend}"),
        )
        .await;
    }
    if backends.contains(&Backend::Ort) {
        assert_backends_agree(Kind::TextNet);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_end_to_end() {
    let _shared = support::shared().await;
    let Some(dir) = support::minilm_dir() else {
        return;
    };
    let backends = support::backends("minilm_end_to_end");
    for &backend in &backends {
        eprintln!("MiniLM-L3 on {backend}");
        // The embeddings are real: cosine similarities match onnxruntime's run of the same
        // model and tokenizer (0.7411 for the paraphrase pair, 0.0958 for the unrelated pair).
        let (model, tokenizer) = corestream_serve::model::TextEmbedder::load_with_tokenizer(
            &corestream_serve::model::ModelFiles::from_dir(dir).unwrap(),
            backend,
        )
        .unwrap();
        let v: Vec<Vec<f32>> = [
            "A man is playing a guitar.",
            "Someone plays the guitar.",
            "The stock market fell sharply today.",
        ]
        .iter()
        .map(|t| {
            let ids = tokenizer.encode(t).unwrap();
            embedder::normalize(model.forward(Rows(vec![ids.into()])).unwrap().0.remove(0))
        })
        .collect();
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(
            (cos(&v[0], &v[1]) - 0.7411).abs() < 1e-3,
            "{backend}: {}",
            cos(&v[0], &v[1])
        );
        assert!(
            (cos(&v[0], &v[2]) - 0.0958).abs() < 1e-3,
            "{backend}: {}",
            cos(&v[0], &v[2])
        );
        scenarios::end_to_end(
            support::launcher(Server::Axum),
            Kind::MiniLm,
            backend,
            &format!("axum-minilm-{backend}"),
        )
        .await;
    }
    if backends.contains(&Backend::Ort) {
        assert_backends_agree(Kind::MiniLm);
    }
}

#[test]
fn max_input_length_is_read_from_the_model_files() {
    let _shared = support::shared_blocking();
    let Some(dir) = support::minilm_dir() else {
        return;
    };
    let onnx = dir.join(corestream_serve::model::source::LEGACY_ONNX);
    // The fetched files: tokenizer.json says 128 (what sentence-transformers uses).
    let (n, source) = tokenizer::max_input_length(dir, &onnx).unwrap();
    assert_eq!(
        (n, source.as_str()),
        (128, "tokenizer.json /truncation/max_length")
    );
    // sentence_bert_config.json wins; without any JSON file, the position embeddings (512).
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("sentence_bert_config.json"),
        r#"{"max_seq_length": 256}"#,
    )
    .unwrap();
    assert_eq!(
        tokenizer::max_input_length(tmp.path(), &onnx).unwrap().0,
        256
    );
    let empty = tempfile::tempdir().unwrap();
    let (n, source) = tokenizer::max_input_length(empty.path(), &onnx).unwrap();
    assert_eq!(n, 512, "{source}");
    assert!(source.contains("position embeddings"), "{source}");
    // tokenizer_config.json's "no limit" sentinel is ignored.
    std::fs::write(
        empty.path().join("tokenizer_config.json"),
        r#"{"model_max_length": 1000000000000000019884624838656}"#,
    )
    .unwrap();
    assert_eq!(
        tokenizer::max_input_length(empty.path(), &onnx).unwrap().0,
        512
    );
    // Nothing at all: a typed error.
    let none = tokenizer::max_input_length(empty.path(), &empty.path().join("missing.onnx"));
    assert!(
        matches!(none, Err(corestream::Error::ModelLoad { .. })),
        "{none:?}"
    );
}

#[test]
fn truncation_keeps_special_tokens_and_the_asked_end() {
    let _shared = support::shared_blocking();
    let bytes = TextTokenizer::Bytes {
        max_input_length: 4,
    };
    let mut ids = bytes.encode("abcdef").unwrap();
    bytes.truncate(&mut ids, 4, Keep::Start);
    assert_eq!(ids, b"abcd".map(u32::from));
    let mut ids = bytes.encode("abcdef").unwrap();
    bytes.truncate(&mut ids, 4, Keep::End);
    assert_eq!(ids, b"cdef".map(u32::from));
    let Some(dir) = support::minilm_dir() else {
        return;
    };
    let hf = TextTokenizer::from_file(
        &dir.join("tokenizer.json"),
        &dir.join(corestream_serve::model::source::LEGACY_ONNX),
    )
    .unwrap();
    let full = hf.encode("one two three four five six").unwrap();
    assert_eq!(full.len(), 8); // [CLS] six words [SEP]
    let mut start = full.clone();
    hf.truncate(&mut start, 4, Keep::Start);
    assert_eq!(start, [full[0], full[1], full[2], full[7]]);
    let mut end = full.clone();
    hf.truncate(&mut end, 4, Keep::End);
    assert_eq!(end, [full[0], full[5], full[6], full[7]]);
}

server_scenarios!(Server::Axum, "axum");
