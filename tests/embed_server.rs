//! The embedding service end to end on 127.0.0.1: 64 concurrent requests each equal to the
//! unbatched result, 503 on a full queue, 400 on bad input, health and metrics. Runs with the
//! bundled TextNet always, and with MiniLM-L3 when `models/` has been fetched (CI fetches it);
//! each on tract and on ONNX Runtime, whose embeddings must agree within 1e-4. The ONNX Runtime
//! runs are skipped with a notice when its library is not found (`bash
//! scripts/fetch-onnxruntime.sh`) or the build lacks feature `ort`, unless
//! `CORESTREAM_REQUIRE_ORT=1`.
#![cfg(feature = "tract")]

#[path = "../examples/embed_server/app.rs"]
mod app;
#[path = "../examples/embed_server/embedder.rs"]
mod embedder;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corestream::batch::Rows;
use corestream::{Batcher, BoxError, CpuPool, Module, MultiStreamModule};
use embedder::Backend;

/// tract, and ONNX Runtime when its library is found; a notice (or, with
/// `CORESTREAM_REQUIRE_ORT=1`, a failure) when it is not.
fn backends(test: &str) -> Vec<Backend> {
    let mut out = vec![Backend::Tract];
    match embedder::ort_library() {
        Ok(_) => out.push(Backend::Ort),
        Err(e) => {
            assert!(
                std::env::var("CORESTREAM_REQUIRE_ORT").as_deref() != Ok("1"),
                "CORESTREAM_REQUIRE_ORT=1 but ONNX Runtime is unavailable: {e}"
            );
            eprintln!(
                "{test}: ONNX Runtime run skipped ({e}); fetch it with bash scripts/fetch-onnxruntime.sh"
            );
        }
    }
    out
}

/// Largest absolute difference between two lists of vectors of the same shape.
fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

/// The same texts give the same embeddings (within 1e-4) on tract and on ONNX Runtime.
fn assert_backends_agree<M>(tract: &M, ort: &M)
where
    M: Module<Input = Rows<String>, Output = Rows<Vec<f32>>>,
{
    let all: Vec<String> = (0..8).flat_map(texts).collect();
    // One batch of all texts (padded to the longest), and one text at a time.
    let a = tract.forward(Rows(all.clone())).unwrap().0;
    let b = ort.forward(Rows(all.clone())).unwrap().0;
    let d = max_diff(&a, &b);
    assert!(d <= 1e-4, "tract vs ort, one batch: max diff {d}");
    for text in all {
        let a = tract.forward(Rows(vec![text.clone()])).unwrap().0;
        let b = ort.forward(Rows(vec![text.clone()])).unwrap().0;
        let d = max_diff(&a, &b);
        assert!(d <= 1e-4, "tract vs ort on {text:?}: max diff {d}");
    }
}

/// Serves `model` behind a batcher on an ephemeral loopback port; returns the base URL.
async fn serve<M>(model: M, capacity: usize, max_batch: usize) -> String
where
    M: Module<Input = Rows<String>, Output = Rows<Vec<f32>>>,
{
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::all().unwrap())
        .build()
        .unwrap();
    let batcher = Arc::new(
        Batcher::builder(msm)
            .max_batch(max_batch)
            .queue_capacity(capacity)
            .build()
            .unwrap(),
    );
    let stats = Arc::clone(&batcher);
    let state = app::AppState {
        embedder: batcher,
        metrics: Arc::new(move || stats.stats().prometheus("corestream")),
        model: "test".into(),
        max_texts: 64,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app::router(state)).await.unwrap() });
    format!("http://{addr}")
}

fn texts(i: usize) -> Vec<String> {
    (0..1 + i % 3)
        .map(|j| {
            format!(
                "request {i} sentence {j}: the quick brown fox {}",
                "jumps ".repeat(i % 7)
            )
        })
        .collect()
}

async fn concurrent_requests_match_unbatched<M>(model: M, reference: M)
where
    M: Module<Input = Rows<String>, Output = Rows<Vec<f32>>>,
{
    let base = serve(model, 256, 16).await;
    let client = reqwest::Client::new();
    let mut handles = Vec::new();
    for i in 0..64 {
        let (client, url) = (client.clone(), format!("{base}/embed"));
        handles.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&serde_json::json!({ "texts": texts(i) }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            (i, response.json::<app::EmbedResponse>().await.unwrap())
        }));
    }
    for h in handles {
        let (i, body) = h.await.unwrap();
        let expected = reference.forward(Rows(texts(i))).unwrap().0;
        assert_eq!(body.embeddings.len(), expected.len(), "request {i}");
        let diff = max_diff(&body.embeddings, &expected);
        assert!(diff <= 1e-4, "request {i}: max diff {diff}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn textnet_64_concurrent_requests_equal_unbatched_results() {
    let backends = backends("textnet_64_concurrent_requests_equal_unbatched_results");
    for &backend in &backends {
        eprintln!("textnet on {backend}");
        concurrent_requests_match_unbatched(
            embedder::TextNet::load(backend).unwrap(),
            embedder::TextNet::load(backend).unwrap(),
        )
        .await;
    }
    if backends.contains(&Backend::Ort) {
        assert_backends_agree(
            &embedder::TextNet::load(Backend::Tract).unwrap(),
            &embedder::TextNet::load(Backend::Ort).unwrap(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_64_concurrent_requests_equal_unbatched_results() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    if !dir.join("paraphrase-MiniLM-L3-v2.onnx").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the models (scripts/fetch-models.sh)"
        );
        eprintln!("models/ not fetched: skipping the MiniLM run");
        return;
    }
    let backends = backends("minilm_64_concurrent_requests_equal_unbatched_results");
    for &backend in &backends {
        eprintln!("MiniLM-L3 on {backend}");
        let model = embedder::MiniLm::load(dir, 128, backend).unwrap();
        // The embeddings are real: cosine similarities match onnxruntime's run of the same
        // model and tokenizer (0.7411 for the paraphrase pair, 0.0958 for the unrelated pair).
        let v = model
            .forward(Rows(vec![
                "A man is playing a guitar.".into(),
                "Someone plays the guitar.".into(),
                "The stock market fell sharply today.".into(),
            ]))
            .unwrap()
            .0;
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
        concurrent_requests_match_unbatched(
            model,
            embedder::MiniLm::load(dir, 128, backend).unwrap(),
        )
        .await;
    }
    if backends.contains(&Backend::Ort) {
        assert_backends_agree(
            &embedder::MiniLm::load(dir, 128, Backend::Tract).unwrap(),
            &embedder::MiniLm::load(dir, 128, Backend::Ort).unwrap(),
        );
    }
}

/// TextNet behind a 150 ms sleep, to fill the queue.
struct Slow(embedder::TextNet);

impl Module for Slow {
    type Input = Rows<String>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<String>) -> Result<Rows<Vec<f32>>, BoxError> {
        std::thread::sleep(Duration::from_millis(150));
        self.0.forward(x)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_503_and_bad_input_is_400() {
    let base = serve(Slow(embedder::TextNet::load(Backend::Tract).unwrap()), 1, 1).await;
    let client = reqwest::Client::new();
    let mut handles = Vec::new();
    for i in 0..12 {
        let (client, url) = (client.clone(), format!("{base}/embed"));
        handles.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&serde_json::json!({ "texts": [format!("text {i}")] }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body)
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        let (status, body) = h.await.unwrap();
        if status == 503 {
            assert!(
                body["error"].as_str().unwrap().contains("overloaded"),
                "{body}"
            );
        } else {
            assert_eq!(status, 200, "{body}");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");

    for (body, needle) in [
        ("{not json", "invalid JSON"),
        (r#"{"texts": []}"#, "texts is empty"),
        (r#"{"texts": "one"}"#, "invalid JSON"),
        (r#"{"text": ["a"]}"#, "invalid JSON"),
    ] {
        let r = client
            .post(format!("{base}/embed"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let err: app::ErrorBody = r.json().await.unwrap();
        assert!(err.error.contains(needle), "{body}: {}", err.error);
    }
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("corestream_requests_rejected_total"),
        "{text}"
    );
    assert!(text.contains("corestream_batch_size_bucket"), "{text}");
}
