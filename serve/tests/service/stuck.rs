//! Stuck or dead work, and the body budget, on both servers:
//!
//! - a model call that does not return: requests get 504 after `--request-timeout` (in each
//!   route's error shape), readiness and liveness turn 503 ("stuck", saying what) after
//!   `--stuck-after`, and both are 200 again once the model returns;
//! - serve loops that ended (a batcher that reports them): liveness 503;
//! - request bodies over the body budget: a request that cannot reserve its declared size
//!   within the body timeout gets 429 before sending its body, health probes are not held up,
//!   and the budget comes back when the requests holding it are answered.

use corestream_serve::model::Encoded;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{BatcherHealth, BatcherStats, BoxError, Module};
use corestream_serve::http::{handle, BodyError, BodySize, RequestHead, Route};
use corestream_serve::model::Backend;
use corestream_serve::service::{serve_model, Loaded, Monitor, Service};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, get, Kind, Launch, Model};

/// TextNet behind a gate: every call waits until the gate opens.
struct Gated {
    model: Model,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl Module for Gated {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        let (open, opened) = &*self.gate;
        let mut open = open.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
        drop(open);
        self.model.forward(x)
    }
}

async fn stuck_model(launch: Launch, name: &str) {
    let (model, tokenizer) = support::load(Kind::TextNet, Backend::Tract);
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let gated = Gated {
        model,
        gate: Arc::clone(&gate),
    };
    let options = support::options(64, 8);
    let loaded = serve_model(gated, tokenizer, name, "test".into(), &options).unwrap();
    let service = Service::ready(loaded, support::telemetry())
        .with_stuck_after(Duration::from_millis(300))
        .with_request_timeout(Some(Duration::from_millis(400)));
    let base = launch(Arc::new(service));
    let client = reqwest::Client::new();
    let openai = format!("{base}/v1/embeddings");
    let (status, _) =
        support::post(&client, openai.clone(), json!({"input": "x"}).to_string()).await;
    assert_eq!(status, 200, "{name}: the open gate serves");

    *gate.0.lock().unwrap() = false;
    let start = Instant::now();
    let (status, body) =
        support::post(&client, openai.clone(), json!({"input": "x"}).to_string()).await;
    let took = start.elapsed();
    assert_eq!(status, 504, "{name}: {body}");
    assert_eq!(body["error"]["type"], "timeout_error", "{name}: {body}");
    assert_eq!(body["error"]["code"], "request_timeout", "{name}: {body}");
    assert!(took >= Duration::from_millis(400), "{name}: {took:?}");
    assert!(took < Duration::from_secs(3), "{name}: {took:?}");
    let (status, body) = support::post(
        &client,
        format!("{base}/embed"),
        json!({"inputs": "x"}).to_string(),
    )
    .await;
    assert_eq!(status, 504, "{name}: {body}");
    assert_eq!(body["error_type"], "Backend", "{name}: {body}");

    // The model call the first timed-out request started has not returned: stuck.
    for route in ["/health/live", "/health", "/health/ready"] {
        let (status, body) = get(&client, format!("{base}{route}")).await;
        assert_eq!(status, 503, "{name} {route}: {body}");
        assert_eq!(body["status"], "stuck", "{name} {route}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("has run for") || message.contains("has waited"),
            "{name} {route}: {body}"
        );
    }
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("corestream_longest_batch_seconds"),
        "{name}: no liveness gauge in /metrics"
    );

    // The model returns: healthy again.
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&client, format!("{base}/health/live")).await;
        if status == 200 {
            assert_eq!(body["status"], "ok");
            break;
        }
        assert!(Instant::now() < deadline, "{name}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = support::post(&client, openai, json!({"input": "x"}).to_string()).await;
    assert_eq!(status, 200, "{name}");
}

/// A batcher that reports serve loops that ended (the library's own test makes one die:
/// tests/batcher_dead_loop.rs); here, what the service makes of it.
struct Ended(BatcherHealth);

impl Ended {
    /// A real batcher's health (`BatcherHealth` is `non_exhaustive`), with its loops ended.
    fn new() -> Ended {
        let cpu = corestream::CpuPool::all().unwrap().cpus()[0];
        let msm =
            corestream::MultiStreamModule::builder(corestream::module_fn(|x: Rows<u32>| Ok(x)))
                .pool(corestream::CpuPool::new([cpu]).unwrap())
                .build()
                .unwrap();
        let mut health = corestream::Batcher::builder(msm).build().unwrap().health();
        health.serving = 0;
        health.ended = health.streams;
        Ended(health)
    }
}

impl Monitor for Ended {
    fn stats(&self) -> BatcherStats {
        unreachable!("not asked for stats")
    }
    fn health(&self) -> BatcherHealth {
        self.0
    }
}

#[tokio::test]
async fn ended_serve_loops_fail_liveness() {
    let _shared = support::shared().await;
    let (model, tokenizer) = support::load(Kind::TextNet, Backend::Tract);
    let options = support::options(8, 8);
    let mut loaded: Loaded =
        serve_model(model, tokenizer, "ended", "test".into(), &options).unwrap();
    loaded.monitor = Some(Arc::new(Ended::new()));
    let service = Service::ready(loaded, support::telemetry());
    for route in [Route::Live, Route::Health] {
        let reply = handle(
            &service,
            route,
            RequestHead::json(BodySize::Exact(0)),
            async { Ok::<_, BodyError>(Vec::new()) },
        )
        .await;
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(reply.status, 503, "{route:?}: {body}");
        assert_eq!(body["status"], "stuck");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("serve loops ended"),
            "{body}"
        );
    }
}

/// Headers of a `POST /v1/embeddings` declaring a body of `len` bytes.
fn headers(len: usize) -> String {
    format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {len}\r\n\r\n"
    )
}

/// The status of the first response on `stream`, within `within`.
async fn status_of(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(_)) = response.parse(&buf) {
            return response.code;
        }
    }
}

async fn body_budget(launch: Launch, name: &str) {
    let (model, tokenizer) = support::load(Kind::TextNet, Backend::Tract);
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let gated = Gated {
        model,
        gate: Arc::clone(&gate),
    };
    let options = support::options(64, 8);
    let loaded = serve_model(gated, tokenizer, name, "test".into(), &options).unwrap();
    // Open for the load's probe call; closed from now on.
    *gate.0.lock().unwrap() = false;
    let body_timeout = Duration::from_millis(1000);
    let service = Service::ready(loaded, support::telemetry())
        .with_body_timeout(body_timeout)
        .with_body_budget(4 << 20);
    let base = launch(Arc::new(service));
    let addr = base.trim_start_matches("http://").to_owned();
    let limit = corestream_serve::http::BODY_LIMIT;
    let client = reqwest::Client::new();

    // Two requests of 2 MiB each (a short input padded with spaces), held in the model: the
    // 4 MiB budget is taken until they are answered.
    let mut padded = json!({"input": "held"}).to_string();
    padded.push_str(&" ".repeat(limit - padded.len()));
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, body) = (
                client.clone(),
                format!("{base}/v1/embeddings"),
                padded.clone(),
            );
            tokio::spawn(async move { support::post(&client, url, body).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third declares 2 MiB and sends nothing: refused, 429, before its body is read.
    let start = Instant::now();
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(headers(limit).as_bytes()).await.unwrap();
    let (live, _) = get(&client, format!("{base}/health/live")).await;
    assert_eq!(live, 200, "{name}: a probe is not held up by a full budget");
    let status = status_of(&mut third, body_timeout * 5).await;
    assert_eq!(status, Some(429), "{name}: the third request");
    assert!(
        start.elapsed() >= body_timeout / 2,
        "{name}: {:?}",
        start.elapsed()
    );
    // The model answers the two: the budget is back.
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    for h in held {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, 200, "{name}: {body}");
    }
    let (status, body) = support::post(&client, format!("{base}/v1/embeddings"), padded).await;
    assert_eq!(status, 200, "{name}: {body}");
}

macro_rules! on_both_servers {
    ($($scenario:ident),*) => {
        mod axum_server_stuck {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let _shared = crate::support::shared().await;
                    let launch = crate::support::launcher(corestream_serve::Server::Axum);
                    super::$scenario(launch, concat!("axum-", stringify!($scenario))).await;
                }
            )*
        }
        mod actix_server_stuck {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let _shared = crate::support::shared().await;
                    let launch = crate::support::launcher(corestream_serve::Server::Actix);
                    super::$scenario(launch, concat!("actix-", stringify!($scenario))).await;
                }
            )*
        }
    };
}

on_both_servers!(stuck_model, body_budget);
