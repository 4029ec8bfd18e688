//! Access and overload, on both servers (run from `server_scenarios!`): `--api-key` guards
//! every route but the probes, `/metrics` and `/openapi.json` (401 with `WWW-Authenticate`);
//! a POST body not declared `application/json` is a 415; a full queue and too many requests
//! in flight are 429 with a `Retry-After` from the measured answer rate, in each route's error
//! shape, while the probes keep answering.

use corestream_serve::model::Encoded;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{BoxError, Module};
use corestream_serve::model::Backend;
use corestream_serve::service::{serve_model, ApiKey, Service};
use serde_json::{json, Value};

use crate::support::{load, options, service, telemetry, Kind, Launch, Model, Slow};

/// Status, `Retry-After`, `WWW-Authenticate` and JSON body of a POST.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    authenticate: Option<String>,
    body: Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let r = request.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let retry_after = header("retry-after").map(|v| v.parse().unwrap());
    let authenticate = header("www-authenticate");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        retry_after,
        authenticate,
        body,
    }
}

fn json_post(client: &reqwest::Client, url: String, body: &Value) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
}

/// The two embedding routes with a body each.
fn routes(text: &str) -> [(&'static str, Value); 2] {
    [
        ("/v1/embeddings", json!({"input": text})),
        ("/embed", json!({"inputs": text})),
    ]
}

/// Checks the error shape of a refusal: OpenAI's on `/v1/*`, TEI's elsewhere.
fn assert_shape(path: &str, a: &Answer, openai_type: &str, tei_type: &str, code: &str) {
    if path.starts_with("/v1/") {
        assert_eq!(a.body["error"]["type"], openai_type, "{}", a.body);
        assert_eq!(a.body["error"]["code"], code, "{}", a.body);
    } else {
        assert_eq!(a.body["error_type"], tei_type, "{}", a.body);
        assert!(a.body["error"].is_string(), "{}", a.body);
    }
}

/// `--api-key`: guarded routes answer 401 without the key or with another, and serve with
/// it; the probes, `/metrics` and `/openapi.json` answer without it.
pub async fn api_key_guards_the_model_routes(launch: Launch, name: &str) {
    let (model, tokenizer) = load(Kind::TextNet, Backend::Tract);
    let loaded = serve_model(model, tokenizer, name, "test".into(), &options(64, 16)).unwrap();
    let service = Service::ready(loaded, telemetry()).with_api_key(ApiKey::new("k3y-0f-test"));
    let base = launch(Arc::new(service));
    let client = reqwest::Client::new();
    for (path, body) in routes("guarded") {
        let url = format!("{base}{path}");
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("k3y-0f-test"),
            Some("Basic k3y-0f-test"),
        ] {
            let mut request = json_post(&client, url.clone(), &body);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let a = send(request).await;
            assert_eq!(a.status, 401, "{path} {auth:?}: {}", a.body);
            assert_eq!(a.authenticate.as_deref(), Some("Bearer"), "{path}");
            assert_shape(
                path,
                &a,
                "invalid_request_error",
                "Validation",
                "unauthorized",
            );
        }
        let a = send(json_post(&client, url, &body).bearer_auth("k3y-0f-test")).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    let info = send(client.get(format!("{base}/info"))).await;
    assert_eq!(info.status, 401, "{}", info.body);
    let info = send(
        client
            .get(format!("{base}/info"))
            .bearer_auth("k3y-0f-test"),
    )
    .await;
    assert_eq!(info.status, 200, "{}", info.body);
    for open in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/openapi.json",
    ] {
        let a = send(client.get(format!("{base}{open}"))).await;
        assert_eq!(a.status, 200, "{open} needs no key: {}", a.body);
    }
}

/// A POST body must be declared JSON: other or no `Content-Type` is a 415 in the route's
/// shape, before the body is read; parameters and case do not matter.
pub async fn only_json_bodies(launch: Launch, name: &str) {
    let (model, tokenizer) = load(Kind::TextNet, Backend::Tract);
    let base = launch(service(model, tokenizer, name, &options(64, 16)));
    let client = reqwest::Client::new();
    for (path, body) in routes("typed") {
        let url = format!("{base}{path}");
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let mut request = client.post(url.clone()).body(body.to_string());
            if let Some(t) = content_type {
                request = request.header("content-type", t);
            }
            let a = send(request).await;
            assert_eq!(a.status, 415, "{path} {content_type:?}: {}", a.body);
            assert_shape(
                path,
                &a,
                "invalid_request_error",
                "Validation",
                "unsupported_media_type",
            );
        }
        for content_type in ["application/json; charset=utf-8", "Application/JSON"] {
            let request = client
                .post(url.clone())
                .header("content-type", content_type)
                .body(body.to_string());
            let a = send(request).await;
            assert_eq!(a.status, 200, "{path} {content_type}: {}", a.body);
        }
    }
}

/// A full queue is a 429 with a `Retry-After` in each route's error shape; the accepted
/// requests succeed and the batcher counts the rejections.
pub async fn full_queue_is_429(launch: Launch, name: &str) {
    let (model, tokenizer) = load(Kind::TextNet, Backend::Tract);
    let base = launch(service(Slow(model), tokenizer, name, &options(1, 1)));
    let client = reqwest::Client::new();
    let mut handles = Vec::new();
    for i in 0..12 {
        let (client, base) = (client.clone(), base.clone());
        handles.push(tokio::spawn(async move {
            let (path, body) = routes(&format!("text {i}"))[i % 2].clone();
            (
                path,
                send(json_post(&client, format!("{base}{path}"), &body)).await,
            )
        }));
    }
    let mut statuses = Vec::new();
    for h in handles {
        let (path, a) = h.await.unwrap();
        if a.status == 429 {
            assert_shape(path, &a, "overloaded_error", "Overloaded", "overloaded");
            let after = a.retry_after.expect("a 429 says when to retry");
            assert!((1..=60).contains(&after), "Retry-After {after}");
        } else {
            assert_eq!(a.status, 200, "{path}: {}", a.body);
        }
        statuses.push(a.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle = format!("corestream_batcher_requests_rejected_total{{model=\"{name}\"}}");
    assert!(text.contains(&needle), "{needle} not in\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("corestream_http_overloaded_total{")
                && l.contains("why=\"queue\"")),
        "the queue's refusals are counted:\n{text}"
    );
}

/// A model that holds every call until its gate opens (10 s at most).
struct Gated {
    inner: Model,
    open: Arc<AtomicBool>,
}

impl Module for Gated {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.open.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.forward(x)
    }
}

/// `--max-concurrent-requests 2`: with two requests held by the model, a third is a 429 with
/// a `Retry-After` computed from the answer rate measured before (1 to 60 s), while `/health`
/// and `/metrics` answer; once the two are answered, requests are taken again.
pub async fn too_many_in_flight_is_429(launch: Launch, name: &str) {
    let (model, tokenizer) = load(Kind::TextNet, Backend::Tract);
    let open = Arc::new(AtomicBool::new(true));
    let gated = Gated {
        inner: model,
        open: Arc::clone(&open),
    };
    let loaded = serve_model(gated, tokenizer, name, "test".into(), &options(64, 16)).unwrap();
    let service = Arc::new(Service::ready(loaded, telemetry()).with_max_concurrent_requests(2));
    let base = launch(Arc::clone(&service));
    let client = reqwest::Client::new();
    // Answered for 600 ms: the service measures its answer rate.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        let (path, body) = routes("warm")[0].clone();
        let a = send(json_post(&client, format!("{base}{path}"), &body)).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let rate = service
        .admission
        .drain
        .rate()
        .expect("the answer rate was measured");
    assert!(rate > 0.0, "{rate}");

    open.store(false, Ordering::Release);
    let mut held = Vec::new();
    for i in 0..2 {
        let (client, base) = (client.clone(), base.clone());
        held.push(tokio::spawn(async move {
            let (path, body) = routes(&format!("held {i}"))[i].clone();
            send(json_post(&client, format!("{base}{path}"), &body)).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.admission.in_flight() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two requests were not admitted"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (path, body) in routes("refused") {
        let a = send(json_post(&client, format!("{base}{path}"), &body)).await;
        assert_eq!(a.status, 429, "{path}: {}", a.body);
        assert_shape(path, &a, "overloaded_error", "Overloaded", "overloaded");
        let after = a.retry_after.expect("a 429 says when to retry");
        // Two requests ahead at the measured rate: a few seconds at most, never 0.
        let expected = (2.0 / rate).ceil().clamp(1.0, 60.0) as u64;
        assert!(
            after >= 1 && after <= expected.max(1) + 1,
            "Retry-After {after}, expected about {expected} at {rate:.0}/s"
        );
    }
    for probe in ["/health", "/health/live", "/metrics"] {
        let a = send(client.get(format!("{base}{probe}"))).await;
        assert_eq!(a.status, 200, "{probe} under overload: {}", a.body);
    }
    // The autoscaler's load signal.
    let scraped = send(client.get(format!("{base}/metrics"))).await;
    // All models' requests: one gauge per process.
    let gauge = "corestream_http_requests_in_flight 2";
    assert!(
        scraped.body.as_str().unwrap_or_default().contains(gauge),
        "{gauge} not in {}",
        scraped.body
    );
    open.store(true, Ordering::Release);
    for h in held {
        let a = h.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let (path, body) = routes("again")[1].clone();
    let a = send(json_post(&client, format!("{base}{path}"), &body)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(service.admission.in_flight(), 0);
    let metrics = send(client.get(format!("{base}/metrics"))).await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap_or_default()
            .contains("corestream_http_overloaded_total"),
        "the refusals are counted"
    );
}
