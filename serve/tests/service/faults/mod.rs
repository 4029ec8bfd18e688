//! The embedding service under misbehaving clients and faults, on 127.0.0.1, against both
//! servers (axum and actix-web, `corestream_serve::http`), bounded in count
//! and time:
//!
//! - clients that disconnect mid-request: each request is cancelled (its future dropped, the
//!   batcher skips it; on actix-web through the adapter's socket check), the counters say so,
//!   nothing stays in flight or queued;
//! - bodies over the 2 MiB limit (declared 1 GiB, sent 3 MiB, chunked 3 MiB): 413 at once,
//!   memory flat;
//! - a client that never finishes its body: 408 after the body timeout; one that never
//!   finishes its headers: disconnected after the header timeout;
//! - 2,000 concurrent connections against a queue of 256: every one answered 200 or 429,
//!   memory bounded, and the server serves normally afterwards;
//! - a model that panics for one input: that request fails (500), the requests batched with
//!   it and after it are served;
//!
//! `connections.rs` holds the connection scenarios, `bodies.rs` the body and input ones; this
//! file the faulty model, the server under test, raw HTTP helpers and the two test entry points.
//!
//! The scenarios run alone in this test binary (`support::exclusive`), so the process's RSS
//! and descriptors are theirs.

use corestream_serve::model::Encoded;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{self, Kind, Launch, Model};
use corestream::batch::Rows;
use corestream::{BoxError, Module};
use corestream_serve::model::{Backend, TextTokenizer};
use corestream_serve::service::{serve_model, Service};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ----- the model and the service under test -----

/// What a poisoned request sends: the model panics on it.
const POISON: &str = "PANIC NOW";

/// TextNet that sleeps `delay` per call (to build queues) and panics on [`POISON`].
struct Faulty {
    model: Model,
    delay: Duration,
    poison: Vec<u32>,
}

impl Module for Faulty {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        std::thread::sleep(self.delay);
        if x.0.iter().any(|row| row.ids == self.poison) {
            panic!("the model cannot take this input");
        }
        self.model.forward(x)
    }
}

/// One service under test: its state (counters) and where it listens.
struct Server {
    service: Arc<Service>,
    /// `127.0.0.1:port`.
    addr: String,
}

impl Server {
    /// TextNet (tract) behind `Faulty`, a queue of `queue`, `max_batch` rows per call.
    fn start(
        launch: Launch,
        name: &str,
        delay: Duration,
        queue: usize,
        max_batch: usize,
        body_timeout: Duration,
    ) -> Server {
        let (_, tokenizer) = support::load(Kind::TextNet, Backend::Tract);
        Server::start_with(
            launch,
            name,
            tokenizer,
            delay,
            queue,
            max_batch,
            body_timeout,
        )
    }

    /// As [`Server::start`], with another tokenizer in front of TextNet (which takes any ids).
    fn start_with(
        launch: Launch,
        name: &str,
        tokenizer: TextTokenizer,
        delay: Duration,
        queue: usize,
        max_batch: usize,
        body_timeout: Duration,
    ) -> Server {
        let (model, _) = support::load(Kind::TextNet, Backend::Tract);
        let poison = tokenizer.encode(POISON).unwrap();
        let faulty = Faulty {
            model,
            delay,
            poison,
        };
        let options = support::options(queue, max_batch);
        let loaded = serve_model(faulty, tokenizer, name, "test".into(), &options).unwrap();
        let service =
            Arc::new(Service::ready(loaded, support::telemetry()).with_body_timeout(body_timeout));
        let base = launch(Arc::clone(&service));
        Server {
            service,
            addr: base.trim_start_matches("http://").to_owned(),
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stats(&self) -> corestream::BatcherStats {
        self.service
            .models()
            .unwrap()
            .first()
            .monitor
            .as_ref()
            .unwrap()
            .stats()
    }

    /// Waits until no request is in flight and the batcher's queue is empty and every request
    /// it accepted has ended; panics after 10 s.
    async fn settle(&self) {
        wait_for("requests and the batcher to settle", || {
            let s = self.stats();
            self.service.requests.counts().in_flight() == 0
                && s.queue_depth == 0
                && s.accepted == s.completed + s.failed + s.cancelled
        })
        .await;
    }

    /// One well-formed request on a fresh client: its status.
    async fn healthy_request(&self) -> u16 {
        let (status, body) = support::post(
            &reqwest::Client::new(),
            format!("{}/v1/embeddings", self.base()),
            json!({"input": "still serving"}).to_string(),
        )
        .await;
        if status == 200 {
            assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 512);
        }
        status
    }
}

// ----- raw HTTP: clients that misbehave -----

/// A complete `POST /v1/embeddings` for `text`, closing the connection after the answer.
fn request_bytes(text: &str) -> Vec<u8> {
    let body = json!({ "input": text }).to_string();
    format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads until a response's status line and headers have arrived: the status, or why none
/// came (`"closed"` when the server closed the connection first).
async fn read_status(stream: &mut TcpStream, within: Duration) -> Result<u16, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("no answer within {within:?}")),
            Ok(Err(e)) => return Err(format!("read failed: {e}")),
            Ok(Ok(0)) => return Err("closed".into()),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => return Ok(response.code.unwrap_or(0)),
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("bad response: {e}")),
        }
    }
}

/// Connects to `addr`, retrying refused or dropped attempts for up to 20 s (a flood fills
/// the listen backlog; the kernel drops what does not fit and the client retries).
async fn connect(addr: &str) -> Result<TcpStream, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(format!("connect: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Polls `done` every 10 ms; panics with `what` after 10 s.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The value of the Prometheus sample `series` (name and labels as rendered), 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

const MB: f64 = 1048576.0;

mod bodies;
mod connections;

use bodies::{bodies_over_the_limit, large_bodies_do_not_stall, panicking_input};
use connections::{client_disconnects, connection_flood, idle_connections, slow_clients};

// ----- in-process runs -----

/// One scenario set at a time in this process (RSS and CPU are theirs).
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every in-process scenario against one server, one after the other; `prefix` names their
/// batchers.
async fn all_faults(launch: Launch, prefix: &str, header_timeout: Duration) {
    let name = |scenario: &str| format!("{prefix}-{scenario}");
    idle_connections(launch, &name("idle"), header_timeout).await;
    client_disconnects(launch, &name("disconnect")).await;
    bodies_over_the_limit(launch, &name("body-limit")).await;
    slow_clients(launch, &name("slow-client"), header_timeout).await;
    panicking_input(launch, &name("panic")).await;
    large_bodies_do_not_stall(launch, &name("large-bodies")).await;
    connection_flood(launch, &name("flood")).await;
}

#[test]
fn axum_faults() {
    let _alone = support::exclusive();
    block_on(all_faults(
        support::fault_launcher(corestream_serve::Server::Axum),
        "axum",
        support::HEADER_TIMEOUT,
    ));
}

#[test]
fn actix_faults() {
    let _alone = support::exclusive();
    block_on(all_faults(
        support::fault_launcher(corestream_serve::Server::Actix),
        "actix",
        support::HEADER_TIMEOUT,
    ));
}
