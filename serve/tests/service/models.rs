//! Several models in one service (run from `server_scenarios!` on both servers): two
//! embedders of MiniLM-L3 (mean and CLS pooling, so their vectors differ) and a reranker
//! named with a `/` (`org/reranker`, a random head on MiniLM: `heads.rs`). Requests reach a
//! model by the OpenAI `model` field, by the path `/models/{name}/...`, or by their route
//! (`/rerank` the reranker); each answer equals that model's own, unbatched, from 64
//! concurrent callers spread over the three; unknown models, paths and methods get 404 and
//! 405; `/info`, `/v1/models` and `/metrics` list every model. Skipped (outside CI) when
//! `models/` is not fetched.

use std::path::Path;
use std::sync::Arc;

use corestream_serve::model::{Backend, ModelFiles, Pooling, TextEmbedder, TextTokenizer};
use corestream_serve::service::{serve_files, Loaded, Models, Service};
use serde_json::{json, Value};

use crate::support::{get, max_diff, minilm_dir, openai_vector, options, post, telemetry, Launch};
use corestream_testkit::heads::{reranker_config, Head};

const RERANKER: &str = "org/reranker";

/// MiniLM with `pooling`, on `backend`, with its tokenizer.
fn minilm(dir: &Path, pooling: Pooling, backend: Backend) -> (TextEmbedder, TextTokenizer) {
    let mut files = ModelFiles::from_dir(dir).unwrap();
    files.pooling = pooling;
    TextEmbedder::load_with_tokenizer(&files, backend).unwrap()
}

/// The model of `dir` (with `pooling`, when given) served as `name`.
fn loaded(dir: &Path, name: &str, pooling: Option<Pooling>, backend: Backend) -> Loaded {
    let mut files = ModelFiles::from_dir(dir).unwrap();
    if let Some(pooling) = pooling {
        files.pooling = pooling;
    }
    name.clone_into(&mut files.name);
    serve_files(&files, backend, &options(256, 16)).unwrap()
}

/// Each of `texts` alone through `model`, unit length.
fn alone(model: &TextEmbedder, tokenizer: &TextTokenizer, texts: &[String]) -> Vec<Vec<f32>> {
    use corestream::Module;
    texts
        .iter()
        .map(|t| {
            let ids = tokenizer.encode(t).unwrap();
            let v = model
                .forward(corestream::batch::Rows(vec![ids.into()]))
                .unwrap()
                .0
                .remove(0);
            corestream_serve::model::embedder::normalize(v)
        })
        .collect()
}

fn texts(i: usize) -> Vec<String> {
    crate::support::texts(i)
}

fn vectors(answer: &Value) -> Vec<Vec<f32>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| openai_vector(&d["embedding"]))
        .collect()
}

fn tei_vectors(answer: &Value) -> Vec<Vec<f32>> {
    answer
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

pub async fn several_models(launch: Launch, name: &str) {
    let Some(minilm_path) = minilm_dir() else {
        return;
    };
    let backend = *crate::support::backends(name).last().expect("a backend");
    let reranker_dir = tempfile::tempdir().unwrap();
    let head = Head::random(1, 11);
    head.write(minilm_path, reranker_dir.path(), &reranker_config())
        .unwrap();
    let mean_name = format!("{name}-mean");
    let cls_name = format!("{name}-cls");
    let models = Models::new(vec![
        loaded(minilm_path, &mean_name, Some(Pooling::Mean), backend),
        loaded(minilm_path, &cls_name, Some(Pooling::Cls), backend),
        loaded(reranker_dir.path(), RERANKER, None, backend),
    ])
    .unwrap();
    let base = launch(Arc::new(Service::ready(models, telemetry())));
    let client = reqwest::Client::new();

    // The references: each model alone, on tract.
    let (mean_model, mean_tokenizer) = minilm(minilm_path, Pooling::Mean, Backend::Tract);
    let (cls_model, cls_tokenizer) = minilm(minilm_path, Pooling::Cls, Backend::Tract);
    let sample = texts(5);
    let mean_ref = alone(&mean_model, &mean_tokenizer, &sample);
    let cls_ref = alone(&cls_model, &cls_tokenizer, &sample);
    assert!(max_diff(&mean_ref, &cls_ref) > 1e-2, "the poolings differ");

    // Listed everywhere.
    let (s, list) = get(&client, format!("{base}/v1/models")).await;
    assert_eq!(s, 200, "{list}");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mean_name.as_str(), cls_name.as_str(), RERANKER]);
    assert_eq!(list["data"][2]["model_type"], "reranker");
    let (s, info) = get(&client, format!("{base}/info")).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["model_id"], mean_name.as_str());
    assert_eq!(info["models"], json!([mean_name, cls_name, RERANKER]));
    let (s, info) = get(&client, format!("{base}/models/{cls_name}/info")).await;
    assert_eq!((s, &info["model_id"]), (200, &json!(cls_name)), "{info}");
    assert_eq!(info["pooling"], "cls");
    let (s, info) = get(&client, format!("{base}/models/{RERANKER}/info")).await;
    assert_eq!(
        (s, &info["model_type"]),
        (200, &json!("reranker")),
        "{info}"
    );

    // By the OpenAI `model` field; without one, the first embedder.
    for (model, reference) in [
        (Some(&cls_name), &cls_ref),
        (Some(&mean_name), &mean_ref),
        (None, &mean_ref),
    ] {
        let mut body = json!({"input": sample});
        if let Some(model) = model {
            body["model"] = json!(model);
        }
        let (s, a) = post(&client, format!("{base}/v1/embeddings"), body.to_string()).await;
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["model"], json!(model.unwrap_or(&mean_name)));
        let d = max_diff(&vectors(&a), reference);
        assert!(d < 1e-4, "{model:?}: {d} from the model alone");
    }
    // By the path, which wins over the body; TEI's routes too.
    let (s, a) = post(
        &client,
        format!("{base}/models/{cls_name}/v1/embeddings"),
        json!({"input": sample, "model": mean_name}).to_string(),
    )
    .await;
    assert_eq!((s, &a["model"]), (200, &json!(cls_name)), "{a}");
    assert!(max_diff(&vectors(&a), &cls_ref) < 1e-4);
    let (s, a) = post(
        &client,
        format!("{base}/models/{cls_name}/embed"),
        json!({"inputs": sample}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert!(max_diff(&tei_vectors(&a), &cls_ref) < 1e-4);
    // By the route: /rerank reaches the reranker, named or not.
    let rerank = json!({"query": "cats", "texts": sample}).to_string();
    for path in ["/rerank", &format!("/models/{RERANKER}/rerank")] {
        let (s, a) = post(&client, format!("{base}{path}"), rerank.clone()).await;
        assert_eq!(s, 200, "{path}: {a}");
        assert_eq!(a.as_array().unwrap().len(), sample.len());
    }
    let (s, a) = post(
        &client,
        format!("{base}/models/{RERANKER}/v1/rerank"),
        json!({"query": "cats", "documents": sample, "model": "ignored"}).to_string(),
    )
    .await;
    assert_eq!((s, &a["model"]), (200, &json!(RERANKER)), "{a}");
    let (s, a) = post(
        &client,
        format!("{base}/models/{mean_name}/tokenize"),
        json!({"inputs": "cats"}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");

    // Refusals.
    let (s, a) = post(
        &client,
        format!("{base}/v1/embeddings"),
        json!({"input": "x", "model": "text-embedding-3-small"}).to_string(),
    )
    .await;
    assert_eq!(s, 404, "{a}");
    assert_eq!(a["error"]["code"], "model_not_found");
    let message = a["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&cls_name) && message.contains(RERANKER),
        "{message}"
    );
    let (s, a) = post(
        &client,
        format!("{base}/models/{mean_name}/rerank"),
        rerank.clone(),
    )
    .await;
    assert_eq!(s, 400, "{a}");
    assert!(a["error"].as_str().unwrap().contains("reranker"), "{a}");
    let (s, a) = post(
        &client,
        format!("{base}/v1/rerank"),
        json!({"query": "q", "documents": ["d"], "model": cls_name}).to_string(),
    )
    .await;
    assert_eq!(
        (s, &a["error"]["code"]),
        (400, &json!("wrong_model_type")),
        "{a}"
    );
    let (s, a) = post(
        &client,
        format!("{base}/models/nope/embed"),
        "{\"inputs\":\"x\"}".into(),
    )
    .await;
    assert_eq!(s, 404, "{a}");
    assert!(a["error"].as_str().unwrap().contains("nope"), "{a}");
    let (s, a) = get(&client, format!("{base}/models/{mean_name}/health")).await;
    assert_eq!(s, 404, "{a}");
    let wrong_method = client
        .get(format!("{base}/models/{mean_name}/embed"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "POST");

    // 64 concurrent callers over the three models: each answer is its model's own.
    let callers = (0..64).map(|i| {
        let client = client.clone();
        let base = base.clone();
        let (mean_name, cls_name) = (mean_name.clone(), cls_name.clone());
        async move {
            let input = texts(i);
            match i % 3 {
                0 | 1 => {
                    let model = if i % 3 == 0 { mean_name } else { cls_name };
                    let body = json!({"input": input, "model": model}).to_string();
                    let (s, a) = post(&client, format!("{base}/v1/embeddings"), body).await;
                    assert_eq!(s, 200, "{a}");
                    (i, input, Some(vectors(&a)))
                }
                _ => {
                    let body = json!({"query": "fox", "texts": input}).to_string();
                    let (s, a) = post(&client, format!("{base}/rerank"), body).await;
                    assert_eq!(s, 200, "{a}");
                    assert_eq!(a.as_array().unwrap().len(), input.len());
                    (i, input, None)
                }
            }
        }
    });
    for (i, input, got) in futures::future::join_all(callers).await {
        if let Some(got) = got {
            let reference = if i % 3 == 0 {
                alone(&mean_model, &mean_tokenizer, &input)
            } else {
                alone(&cls_model, &cls_tokenizer, &input)
            };
            let d = max_diff(&got, &reference);
            assert!(d < 1e-4, "caller {i}: {d} from its model alone");
        }
    }

    // Metrics per model.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for model in [&mean_name, &cls_name, RERANKER] {
        let gauge = format!("corestream_serve_loops{{model=\"{model}\"}}");
        assert!(metrics.contains(&gauge), "{gauge} not in /metrics");
    }
}
