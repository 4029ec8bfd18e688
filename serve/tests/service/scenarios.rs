//! The scenarios both servers run (`axum_server.rs`, `actix_server.rs`): requests against a
//! live service over HTTP, each checking answers, statuses, error shapes, `/info`, the
//! OpenAPI document, metrics, spans, health and the official `openai` client.

use std::collections::HashSet;
use std::sync::Arc;

use corestream::CpuPool;
use corestream_serve::model::{Backend, TextTokenizer};
use corestream_serve::service::Service;
use serde_json::{json, Value};

use crate::support::{
    self, from_base64, load, max_diff, openai_vector, options, post, reference, service, span_seen,
    telemetry, texts, Kind, Launch, Model,
};

/// 64 concurrent requests over the three request forms (OpenAI float, OpenAI base64, TEI
/// `inputs`, the original `texts`): each answer equals the unbatched result within 1e-4, and
/// OpenAI's usage counts the tokens.
pub async fn concurrent_requests_equal_unbatched(
    base: &str,
    model: &Model,
    tokenizer: &TextTokenizer,
) {
    let client = reqwest::Client::new();
    let mut handles = Vec::new();
    for i in 0..64 {
        let (client, base) = (client.clone(), base.to_owned());
        handles.push(tokio::spawn(async move {
            let t = texts(i);
            let (path, body) = match i % 4 {
                0 => ("/v1/embeddings", json!({"input": t, "model": "any"})),
                1 => (
                    "/v1/embeddings",
                    json!({"input": t, "model": "any", "encoding_format": "base64"}),
                ),
                2 => ("/embed", json!({"inputs": t})),
                _ => ("/embed", json!({"texts": t})),
            };
            let (status, answer) = post(&client, format!("{base}{path}"), body.to_string()).await;
            assert_eq!(status, 200, "request {i}: {answer}");
            (i, answer)
        }));
    }
    for h in handles {
        let (i, answer) = h.await.unwrap();
        let t = texts(i);
        let expected = reference(model, tokenizer, &t, true);
        let got: Vec<Vec<f32>> = match i % 4 {
            0 | 1 => {
                assert_eq!(answer["object"], "list");
                let tokens: usize = t.iter().map(|x| tokenizer.encode(x).unwrap().len()).sum();
                assert_eq!(answer["usage"]["prompt_tokens"], tokens, "request {i}");
                assert_eq!(answer["usage"]["total_tokens"], tokens, "request {i}");
                let data = answer["data"].as_array().unwrap();
                for (k, d) in data.iter().enumerate() {
                    assert_eq!(d["index"], k);
                    assert_eq!(d["object"], "embedding");
                    assert_eq!(d["embedding"].is_string(), i % 4 == 1, "request {i}");
                }
                data.iter()
                    .map(|d| openai_vector(&d["embedding"]))
                    .collect()
            }
            2 => serde_json::from_value(answer).unwrap(),
            _ => {
                assert_eq!(answer["dim"], expected[0].len());
                serde_json::from_value(answer["embeddings"].clone()).unwrap()
            }
        };
        let diff = max_diff(&got, &expected);
        assert!(diff <= 1e-4, "request {i}: max diff {diff}");
    }
}

/// The same input answered as floats and as base64 decodes to the same vectors; TEI's
/// `normalize: false` answers the unnormalised vector.
pub async fn base64_equals_float(base: &str, model: &Model, tokenizer: &TextTokenizer) {
    let client = reqwest::Client::new();
    let input = json!(["a cat sits on the mat", "stocks fell"]);
    let url = format!("{base}/v1/embeddings");
    let (s1, floats) = post(
        &client,
        url.clone(),
        json!({"input": input, "encoding_format": "float"}).to_string(),
    )
    .await;
    let (s2, b64) = post(
        &client,
        url,
        json!({"input": input, "encoding_format": "base64"}).to_string(),
    )
    .await;
    assert_eq!((s1, s2), (200, 200), "{floats} {b64}");
    for k in 0..2 {
        let f = openai_vector(&floats["data"][k]["embedding"]);
        let b = from_base64(b64["data"][k]["embedding"].as_str().unwrap());
        let d = max_diff(&[f], &[b]);
        assert!(d <= 1e-6, "input {k}: base64 vs float differ by {d}");
    }
    let text = "a cat sits on the mat".to_owned();
    let (s, raw) = post(
        &client,
        format!("{base}/embed"),
        json!({"inputs": text, "normalize": false}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{raw}");
    let raw: Vec<Vec<f32>> = serde_json::from_value(raw).unwrap();
    let expected = reference(model, tokenizer, &[text], false);
    let d = max_diff(&raw, &expected);
    assert!(d <= 1e-4, "normalize false: max diff {d}");
}

/// `/info` answers the model, its dimension and the limits.
pub async fn info(base: &str, name: &str, dim: usize, max_input_length: usize) {
    let info: Value = reqwest::get(format!("{base}/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["model_id"], name);
    assert_eq!(info["model_type"], "embedding");
    assert_eq!(info["dimension"], dim);
    let models: Value = reqwest::get(format!("{base}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], name);
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(info["max_input_length"], max_input_length);
    assert_eq!(info["max_batch"], 16);
    assert_eq!(info["max_batch_tokens"], 16 * max_input_length);
    assert_eq!(info["max_client_batch_size"], 32);
    assert_eq!(info["queue_capacity"], 256);
    assert_eq!(info["auto_truncate"], false);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let streams = info["streams"].as_u64().unwrap() as usize;
    let quota = corestream::quota::CpuQuota::detect();
    assert_eq!(
        streams,
        corestream::Streams::auto_count(CpuPool::all().unwrap().len(), quota.as_ref())
    );
    assert_eq!(info["stream_cpus"].as_array().unwrap().len(), streams);
    assert_eq!(info["backend"], "test");
}

/// `/openapi.json` is an OpenAPI 3.1 document listing every route with its method, and
/// stating the loaded model's limits (dimension, inputs per request, ids per input, id range).
pub async fn openapi(base: &str, dim: usize, max_input_length: usize, vocab: usize) {
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    // Every route but the scoring ones (an embedding model's document leaves them out).
    let scoring = ["/rerank", "/v1/rerank", "/predict"];
    for route in corestream_serve::http::handlers::Route::ALL {
        if scoring.contains(&route.path()) {
            assert!(doc["paths"][route.path()].is_null(), "{}", route.path());
            continue;
        }
        let method = match route.method() {
            corestream_serve::http::handlers::Method::Get => "get",
            corestream_serve::http::handlers::Method::Post => "post",
        };
        let op = &doc["paths"][route.path()][method];
        assert!(op.is_object(), "{} {} missing", method, route.path());
        assert!(op["responses"]["200"].is_object(), "{}", route.path());
    }
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["OpenAiRequest"]["properties"]["dimensions"]["maximum"],
        dim
    );
    let lists = [
        &schemas["OpenAiInput"]["oneOf"][1],
        &schemas["OpenAiInput"]["oneOf"][3],
        &schemas["TeiInput"]["oneOf"][1],
        &schemas["TextsRequest"]["properties"]["texts"],
        &schemas["InputIds"]["oneOf"][1],
    ];
    for list in lists {
        assert_eq!(list["minItems"], 1, "{list}");
        assert_eq!(list["maxItems"], 32, "{list}");
    }
    let ids = &schemas["OpenAiInput"]["oneOf"][2];
    assert_eq!(ids["maxItems"], max_input_length, "{ids}");
    assert_eq!(ids["items"]["maximum"], vocab - 1, "{ids}");
    assert_eq!(
        schemas["InputIds"]["oneOf"][1]["items"]["items"]["maximum"],
        vocab - 1
    );
    let openai = &doc["paths"]["/v1/embeddings"]["post"];
    for status in ["400", "413", "503"] {
        assert!(
            openai["responses"][status].is_object(),
            "/v1/embeddings {status}"
        );
    }
    for schema in [
        "OpenAiRequest",
        "OpenAiResponse",
        "OpenAiError",
        "TeiRequest",
        "Info",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
}

/// `/metrics` has the HTTP and the batcher metrics labelled with `name` (per stream), each
/// metric's HELP and TYPE once.
pub async fn metrics(base: &str, name: &str) {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "corestream_http_requests_total{route=\"/v1/embeddings\",status=\"200\"}".to_owned(),
        "corestream_http_requests_total{route=\"/embed\",status=\"413\"}".to_owned(),
        "corestream_http_request_duration_seconds_bucket{route=\"/embed\"".to_owned(),
        format!("corestream_batcher_requests_completed_total{{model=\"{name}\",stream=\"0\"}}"),
        format!("corestream_batcher_requests_accepted_total{{model=\"{name}\"}}"),
        format!("corestream_batcher_batch_tokens_bucket{{model=\"{name}\",stream=\"0\""),
        format!("corestream_batcher_queue_seconds_bucket{{model=\"{name}\",stream=\"0\""),
        format!("corestream_embed_tokens_total{{model=\"{name}\"}}"),
    ] {
        assert!(text.contains(&needle), "{needle} not in\n{text}");
    }
    let mut seen = HashSet::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("# HELP") || l.starts_with("# TYPE"))
    {
        assert!(seen.insert(line.to_owned()), "duplicated: {line}");
    }
}

/// The service's spans and the batcher's (queue wait, batch, stream run) were opened for the
/// model called `name`, and `batch_form` exactly when a batch of several requests ran (how
/// often concurrent requests meet in one batch depends on the machine's load; the library's
/// tests/batcher_tracing.rs checks that span deterministically).
pub fn spans(name: &str) {
    assert!(span_seen("infer", name), "no infer span for {name}");
    for span in ["queue_wait", "batch", "stream_run"] {
        assert!(span_seen(span, name), "no {span} span for batcher {name}");
    }
    let stacked = support::stacked(name);
    assert_eq!(
        span_seen("batch_form", name),
        stacked,
        "batch_form spans for {name} must match batches of several requests"
    );
    assert!(support::any_span_named("http_request"));
}

/// The full end-to-end run on one model: requests, limits, info, OpenAPI, metrics, spans.
pub async fn end_to_end(launch: Launch, kind: Kind, backend: Backend, name: &str) {
    let (model, tokenizer) = load(kind, backend);
    let (reference_model, reference_tokenizer) = load(kind, backend);
    let max_input_length = tokenizer.max_input_length();
    let service = service(model, tokenizer, name, &options(256, 16));
    let dim = service.models().unwrap().first().info.dimension;
    let base = launch(service);
    concurrent_requests_equal_unbatched(&base, &reference_model, &reference_tokenizer).await;
    base64_equals_float(&base, &reference_model, &reference_tokenizer).await;
    crate::validation::limits_and_validation(&base, &reference_model, &reference_tokenizer, dim)
        .await;
    info(&base, name, dim, max_input_length).await;
    openapi(
        &base,
        dim,
        max_input_length,
        reference_tokenizer.vocab_size(),
    )
    .await;
    metrics(&base, name).await;
    spans(name);
}

/// `/health` (readiness) and `/health/live` follow the model's state: loading, ready, failed
/// to load, draining (which still serves).
pub async fn health_follows_state(launch: Launch, name: &str) {
    let render = telemetry();
    let get = |base: String, path: &'static str| async move {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    // Loading, then a failed load.
    let failing = Arc::new(Service::new(render.clone()));
    let base = launch(Arc::clone(&failing));
    let (s, b) = get(base.clone(), "/health").await;
    assert_eq!((s, b["status"].as_str()), (503, Some("loading")), "{b}");
    assert_eq!(get(base.clone(), "/health/live").await.0, 200);
    let (s, e) = post(
        &reqwest::Client::new(),
        format!("{base}/v1/embeddings"),
        json!({"input": "a"}).to_string(),
    )
    .await;
    assert_eq!(s, 503, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("loading"),
        "{e}"
    );
    failing.set_failed("model.onnx: no such file".into());
    for path in ["/health", "/health/ready", "/health/live"] {
        let (s, b) = get(base.clone(), path).await;
        assert_eq!(s, 503, "{path}: {b}");
        assert_eq!(b["status"], "failed");
        // The reason (file paths) is logged, not told to clients.
        assert_eq!(
            b["message"],
            corestream_serve::service::state::LOAD_FAILED,
            "{b}"
        );
    }
    let (s, e) = post(
        &reqwest::Client::new(),
        format!("{base}/embed"),
        json!({"inputs": "a"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, e["error_type"].as_str()),
        (503, Some("Unhealthy")),
        "{e}"
    );
    assert_eq!(get(base.clone(), "/info").await.0, 503);

    // Ready, then draining: not ready, still alive and serving.
    let (model, tokenizer) = load(Kind::TextNet, Backend::Tract);
    let ready = service(model, tokenizer, name, &options(256, 16));
    let base = launch(Arc::clone(&ready));
    for path in ["/health", "/health/ready", "/health/live"] {
        let (s, b) = get(base.clone(), path).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("ok")), "{path}: {b}");
    }
    ready.health.set(
        corestream_serve::service::State::Draining,
        Some("draining".into()),
    );
    let (s, b) = get(base.clone(), "/health").await;
    assert_eq!((s, b["status"].as_str()), (503, Some("draining")), "{b}");
    assert_eq!(get(base.clone(), "/health/ready").await.0, 503);
    assert_eq!(get(base.clone(), "/health/live").await.0, 200);
    // A late load result does not undo draining.
    ready
        .health
        .set(corestream_serve::service::State::Ready, None);
    assert_eq!(get(base.clone(), "/health").await.0, 503);
    let (s, a) = post(
        &reqwest::Client::new(),
        format!("{base}/embed"),
        json!({"inputs": "a"}).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{a}");
}

/// The official `openai` Python client, with its defaults (base64), against the service:
/// `scripts/openai_client_check.py` prints the vectors it decoded, compared here with the
/// unbatched result. Skipped with a note when `python3 -c "import openai"` fails, unless
/// `CORESTREAM_REQUIRE_PY_CLIENTS=1`.
pub async fn openai_python_client(launch: Launch, kind: Kind, name: &str) {
    let python = std::env::var("CORESTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let have = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        assert!(
            std::env::var("CORESTREAM_REQUIRE_PY_CLIENTS").as_deref() != Ok("1"),
            "CORESTREAM_REQUIRE_PY_CLIENTS=1 but `{python} -c \"import openai\"` fails"
        );
        eprintln!("openai Python client not installed: skipped (pip install openai)");
        return;
    }
    let (model, tokenizer) = load(kind, Backend::Tract);
    let (reference_model, reference_tokenizer) = load(kind, Backend::Tract);
    let base = launch(service(model, tokenizer, name, &options(256, 16)));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/openai_client_check.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args([script, &base])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let texts: Vec<String> = serde_json::from_value(report["texts"].clone()).unwrap();
    let vectors: Vec<Vec<f32>> = serde_json::from_value(report["embeddings"].clone()).unwrap();
    let expected = reference(&reference_model, &reference_tokenizer, &texts, true);
    let d = max_diff(&vectors, &expected);
    assert!(d <= 1e-4, "openai client vectors: max diff {d}");
    assert_eq!(report["model"], name);
}
