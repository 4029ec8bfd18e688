//! Prompts (`config_sentence_transformers.json`) and their default, on both servers (run from
//! `server_scenarios!`): a request's `prompt_name` puts that prompt before each text on
//! `/embed`, `/v1/embeddings` (extension) and `/tokenize`; without one the default prompt is
//! put; an unknown name is a 400 listing the model's prompts; `/info` lists them.

use std::sync::Arc;

use corestream::batch::Rows;
use corestream::Module;
use corestream_serve::model::{embedder, Backend, Prompts};
use corestream_serve::service::{serve_model, Service};
use serde_json::{json, Value};

use crate::support::{load, max_diff, openai_vector, options, post, telemetry, Kind, Launch};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub async fn prompts_go_before_the_inputs(launch: Launch, name: &str) {
    let kind = if crate::support::minilm_dir().is_some() {
        Kind::MiniLm
    } else {
        Kind::TextNet
    };
    let (model, tokenizer) = load(kind, Backend::Tract);
    let (reference, reference_tokenizer) = load(kind, Backend::Tract);
    let mut loaded = serve_model(model, tokenizer, name, "test".into(), &options(64, 16)).unwrap();
    let prompts =
        Prompts::from_json(r#"{"prompts": {"query": "query: ", "passage": "passage: "}}"#)
            .unwrap()
            .with_default(None, Some("passage"))
            .unwrap();
    loaded.set_prompts(prompts);
    let base = launch(Arc::new(Service::ready(loaded, telemetry())));
    let client = reqwest::Client::new();
    let expected = |text: &str| {
        let ids = reference_tokenizer.encode(text).unwrap();
        embedder::normalize(
            reference
                .forward(Rows(vec![ids.into()]))
                .unwrap()
                .0
                .remove(0),
        )
    };

    let (s, named) = post(
        &client,
        format!("{base}/embed"),
        json!({"inputs": "cats purr", "prompt_name": "query"}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{named}");
    assert!(max_diff(&[floats(&named[0])], &[expected("query: cats purr")]) <= 1e-4);

    let (s, default) = post(
        &client,
        format!("{base}/embed"),
        json!({"inputs": ["cats purr"]}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{default}");
    assert!(max_diff(&[floats(&default[0])], &[expected("passage: cats purr")]) <= 1e-4);

    let (s, openai) = post(
        &client,
        format!("{base}/v1/embeddings"),
        json!({"input": "cats purr", "prompt_name": "query"}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{openai}");
    let v = openai_vector(&openai["data"][0]["embedding"]);
    assert!(max_diff(&[v], &[expected("query: cats purr")]) <= 1e-4);

    let (s, tokens) = post(
        &client,
        format!("{base}/tokenize"),
        json!({"inputs": "cats", "prompt_name": "query", "add_special_tokens": false}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{tokens}");
    let ids: Vec<u64> = tokens[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = reference_tokenizer
        .tokens("query: cats", false)
        .unwrap()
        .iter()
        .map(|t| u64::from(t.id))
        .collect();
    assert_eq!(ids, want);

    for (path, body) in [
        ("/embed", json!({"inputs": "a", "prompt_name": "title"})),
        ("/tokenize", json!({"inputs": "a", "prompt_name": "title"})),
        (
            "/v1/embeddings",
            json!({"input": "a", "prompt_name": "title"}),
        ),
    ] {
        let (s, e) = post(&client, format!("{base}{path}"), body.to_string()).await;
        assert_eq!(s, 400, "{path}: {e}");
        assert!(e.to_string().contains("passage, query"), "{path}: {e}");
    }

    let info: Value = reqwest::get(format!("{base}/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["prompts"], json!(["passage", "query"]));
    assert_eq!(info["default_prompt_name"], "passage");
    assert_eq!(info["default_prompt"], "passage: ");
}
