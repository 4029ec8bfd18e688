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

// ----- the scenarios -----

/// Clients that send a request and disconnect before the answer: each request is cancelled
/// (counted, in the metric too; hyper drops the handler, and the actix-web adapter stops it
/// when a peek at the socket finds the client gone), the batcher skips those still queued,
/// nothing stays in flight, and the service answers the next client.
async fn client_disconnects(launch: Launch, name: &str) {
    let server = Server::start(
        launch,
        name,
        Duration::from_millis(500),
        256,
        1,
        Duration::from_secs(10),
    );
    let series = "corestream_http_requests_cancelled_total{route=\"/v1/embeddings\"}";
    let cancelled_before = metric(&server.service.render_metrics(), series);
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut stream = connect(&server.addr).await.unwrap();
        stream
            .write_all(&request_bytes(&format!("left early {i}")))
            .await
            .unwrap();
        clients.push(stream);
    }
    wait_for("8 requests to start", || {
        server.service.requests.counts().started == 8
    })
    .await;
    drop(clients);
    server.settle().await;
    let counts = server.service.requests.counts();
    let stats = server.stats();
    let cancelled = metric(&server.service.render_metrics(), series) - cancelled_before;
    assert_eq!((counts.cancelled, counts.answered), (8, 0), "{counts:?}");
    // At most one request per stream was running (max_batch 1, 500 ms per call): the others
    // were still queued and never ran.
    let streams = server.service.models().unwrap().first().info.streams as u64;
    assert!(stats.cancelled >= 8 - streams, "{stats:?}");
    assert_eq!(cancelled, 8.0);
    assert_eq!(server.healthy_request().await, 200);
    eprintln!(
        "{name}: 8 clients gone mid-request: {} requests cancelled ({} never ran), {} ran \
         to an answer nobody read; next request 200",
        counts.cancelled, stats.cancelled, stats.completed
    );
}

/// Bodies over the limit are refused with 413 without being buffered: declared 1 GiB (1 KiB
/// sent), 3 MiB sent with its length, 3 MiB chunked without one.
async fn bodies_over_the_limit(launch: Launch, name: &str) {
    let server = Server::start(
        launch,
        name,
        Duration::ZERO,
        256,
        16,
        Duration::from_secs(10),
    );
    assert_eq!(server.healthy_request().await, 200);
    let before = rss();
    let head = |length: &str| {
        format!(
            "POST /v1/embeddings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             {length}\r\nconnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let big = vec![b' '; 3 << 20];
    let cases: [(&str, Vec<u8>, Vec<u8>); 3] = [
        (
            "declared 1 GiB",
            head("content-length: 1073741824"),
            vec![b' '; 1024],
        ),
        (
            "3 MiB with its length",
            head(&format!("content-length: {}", big.len())),
            big.clone(),
        ),
        ("3 MiB chunked", head("transfer-encoding: chunked"), {
            let mut body = Vec::new();
            for chunk in big.chunks(64 << 10) {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            body
        }),
    ];
    for (what, head, body) in cases {
        let stream = connect(&server.addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let start = Instant::now();
        // The server may answer and close before taking the whole body: writing is allowed
        // to fail.
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&head).await;
            let _ = write.write_all(&body).await;
            write
        });
        let status = {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut chunk))
                    .await
                    .unwrap_or_else(|_| panic!("{what}: no answer in 10 s"))
                    .unwrap_or(0);
                assert!(n > 0, "{what}: closed without an answer");
                buf.extend_from_slice(&chunk[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                if let Ok(httparse::Status::Complete(_)) = response.parse(&buf) {
                    break response.code.unwrap();
                }
            }
        };
        assert_eq!(status, 413, "{what}");
        writer.abort();
        eprintln!("{name}: {what}: 413 in {:?}", start.elapsed());
    }
    let grown = rss().saturating_sub(before) as f64 / MB;
    assert!(
        grown < 32.0,
        "RSS grew {grown:.1} MB over three refused bodies"
    );
    server.settle().await;
    assert_eq!(server.healthy_request().await, 200);
    eprintln!("{name}: RSS after the over-limit bodies: {grown:+.1} MB");
}

/// A client that never finishes its body gets 408 after the body timeout (500 ms here); one
/// that never finishes its headers is disconnected after the header timeout (2 s here).
async fn slow_clients(launch: Launch, name: &str, header_timeout: Duration) {
    let body_timeout = Duration::from_millis(500);
    let server = Server::start(launch, name, Duration::ZERO, 256, 16, body_timeout);

    let mut stream = connect(&server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"input\": ",
        )
        .await
        .unwrap();
    let start = Instant::now();
    let status = read_status(&mut stream, Duration::from_secs(10)).await;
    let took = start.elapsed();
    assert_eq!(status, Ok(408), "a body that never finishes");
    assert!(took >= body_timeout - Duration::from_millis(50), "{took:?}");
    eprintln!("{name}: unfinished body: 408 after {took:?} (timeout {body_timeout:?})");

    let mut stream = connect(&server.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/embeddings HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let outcome = read_status(&mut stream, header_timeout * 5).await;
    let took = start.elapsed();
    // hyper closes the connection; actix-web answers 408 and closes.
    assert!(
        matches!(
            outcome.as_ref().map_err(String::as_str),
            Err("closed") | Ok(408)
        ),
        "headers that never finish: {outcome:?}"
    );
    assert!(
        took >= header_timeout / 2 && took <= header_timeout * 4,
        "disconnected after {took:?}, header timeout {header_timeout:?}"
    );
    eprintln!(
        "{name}: unfinished headers: {outcome:?} after {took:?} (timeout {header_timeout:?})"
    );
    server.settle().await;
    assert_eq!(server.healthy_request().await, 200);
}

/// 2,000 connections at once, each with one request, against a queue of 256 and a model at
/// 100 ms per batch of 16: each answered 200 or 429, at least the queue's worth served, some
/// refused; memory bounded; afterwards the service serves normally and nothing is left.
async fn connection_flood(launch: Launch, name: &str) {
    const WANTED: usize = 2000;
    // Each connection is two descriptors in this process (client and server side).
    let limit = rlimit::increase_nofile_limit((2 * WANTED + 512) as u64).unwrap();
    let connections = WANTED.min((limit as usize).saturating_sub(512) / 2);
    if connections < WANTED {
        eprintln!("{name}: file descriptor limit {limit}: {connections} connections, not {WANTED}");
    }
    assert!(
        connections >= 600,
        "file descriptor limit {limit} is too low for a flood"
    );
    let server = Server::start(
        launch,
        name,
        Duration::from_millis(100),
        256,
        16,
        Duration::from_secs(10),
    );
    assert_eq!(server.healthy_request().await, 200);
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|i| {
            let addr = server.addr.clone();
            tokio::spawn(async move {
                let mut stream = connect(&addr).await?;
                stream
                    .write_all(&request_bytes(&format!("flood {i}")))
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                read_status(&mut stream, Duration::from_secs(60)).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for client in clients {
        match client.await.unwrap() {
            Ok(200) => ok += 1,
            Ok(429) => refused += 1,
            other => panic!("{name}: a flooding client got {other:?}"),
        }
    }
    let took = start.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak_growth = peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / MB;
    server.settle().await;
    let stats = server.stats();
    assert!(ok >= 256, "{ok} served, {refused} refused");
    assert!(
        refused >= 1,
        "{ok} served, {refused} refused: the queue never filled"
    );
    assert_eq!(stats.rejected as usize, refused, "{stats:?}");
    assert!(
        peak_growth < 256.0,
        "RSS grew {peak_growth:.1} MB under {connections} connections"
    );
    let after = rss().saturating_sub(before) as f64 / MB;
    assert_eq!(server.healthy_request().await, 200);
    let counts = server.service.requests.counts();
    assert_eq!(counts.in_flight(), 0, "{counts:?}");
    eprintln!(
        "{name}: {connections} connections at once: {ok} x 200, {refused} x 429 in {took:.1?}; \
         RSS peak {peak_growth:+.1} MB, after {after:+.1} MB; next request 200"
    );
}

/// A model that panics for one input: the requests carrying it fail with 500, the others
/// batched with them get their vectors, and the stream serves on.
async fn panicking_input(launch: Launch, name: &str) {
    let server = Server::start(
        launch,
        name,
        Duration::from_millis(50),
        256,
        16,
        Duration::from_secs(10),
    );
    let (reference_model, tokenizer) = support::load(Kind::TextNet, Backend::Tract);
    let client = reqwest::Client::new();
    let requests: Vec<Vec<String>> = (0..24)
        .map(|i| match i {
            5 => vec![POISON.to_owned()],
            11 => vec!["fine".to_owned(), POISON.to_owned()],
            _ => vec![format!("innocent request {i}")],
        })
        .collect();
    let handles: Vec<_> = requests
        .iter()
        .map(|texts| {
            let (client, url) = (client.clone(), format!("{}/v1/embeddings", server.base()));
            let body = json!({ "input": texts }).to_string();
            tokio::spawn(async move { support::post(&client, url, body).await })
        })
        .collect();
    let mut served = 0;
    for (texts, handle) in requests.iter().zip(handles) {
        let (status, body) = handle.await.unwrap();
        if texts.iter().any(|t| t == POISON) {
            assert_eq!(status, 500, "{body}");
            assert_eq!(body["error"]["code"], "model_error", "{body}");
            // The model's own message stays in the log: the client gets the code and an id.
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("internal error (model_error); request id "),
                "{body}"
            );
            assert!(!message.contains("cannot take this input"), "{body}");
        } else {
            assert_eq!(status, 200, "{texts:?}: {body}");
            let got = support::openai_vector(&body["data"][0]["embedding"]);
            let want = support::reference(&reference_model, &tokenizer, texts, true);
            let d = support::max_diff(&[got], &want);
            assert!(d <= 1e-4, "{texts:?}: max diff {d}");
            served += 1;
        }
    }
    assert_eq!(served, 22);
    for _ in 0..4 {
        assert_eq!(server.healthy_request().await, 200);
    }
    server.settle().await;
    let stats = server.stats();
    assert_eq!(stats.failed, 2, "{stats:?}");
    eprintln!(
        "{name}: panicking input: 2 requests 500, 22 batched with them 200 ({} batches), \
         4 after 200",
        stats.batches
    );
}

/// Requests near the body limit that need a real tokenizer's work (MiniLM's WordPiece, 32
/// inputs of ~9 KB each, truncated) do not stall the server: while they are tokenised,
/// `/health/live` keeps answering (tokenisation of large requests runs off the HTTP threads).
async fn large_bodies_do_not_stall(launch: Launch, name: &str) {
    let Some(dir) = support::minilm_dir() else {
        return;
    };
    let tokenizer = TextTokenizer::from_file(
        &dir.join("tokenizer.json"),
        &dir.join(corestream_serve::model::source::LEGACY_ONNX),
    )
    .unwrap();
    let server = Server::start_with(
        launch,
        name,
        tokenizer,
        Duration::ZERO,
        256,
        16,
        Duration::from_secs(10),
    );
    let text = "the quick brown fox jumps over the lazy dog ".repeat(200);
    let body = json!({ "input": vec![text; 32], "truncate": true }).to_string();
    let client = reqwest::Client::new();
    let big: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, body) = (
                client.clone(),
                format!("{}/v1/embeddings", server.base()),
                body.clone(),
            );
            tokio::spawn(async move {
                let start = Instant::now();
                let (status, value) = support::post(&client, url, body).await;
                assert_eq!(status, 200, "{value}");
                assert_eq!(value["data"].as_array().unwrap().len(), 32);
                assert_eq!(value["usage"]["total_tokens"], 32 * 128);
                start.elapsed()
            })
        })
        .collect();
    // Probes from a thread of their own: a probe loop on this test's runtime (which also runs
    // the axum server) would stall along with the server and miss the stall it should see.
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (done, url) = (Arc::clone(&done), format!("{}/health/live", server.base()));
        std::thread::spawn(move || {
            block_on(async move {
                let client = reqwest::Client::new();
                let mut probes = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let r = client.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    probes.push(start.elapsed());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                probes
            })
        })
    };
    let mut took = Vec::new();
    for b in big {
        took.push(b.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let probes = prober.join().unwrap();
    let worst = probes.iter().max().copied().unwrap_or_default();
    assert!(probes.len() >= 5, "{} probes while {took:?}", probes.len());
    assert!(
        worst < Duration::from_millis(500),
        "/health/live took up to {worst:?} while 2 large requests were tokenised ({took:?})"
    );
    eprintln!(
        "{name}: 2 requests of {} KB (32 inputs, truncated to 128 tokens) in {took:?}; {} \
         /health/live probes meanwhile, slowest {worst:?}",
        body.len() / 1000,
        probes.len()
    );
}

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

/// Connections that send nothing (20 of them), and one that sends HTTP/2's prior-knowledge
/// preface (h2c) and then nothing: each is closed within a few header timeouts, so idle
/// sockets cannot pile up until the server runs out of descriptors.
async fn idle_connections(launch: Launch, name: &str, header_timeout: Duration) {
    let server = Server::start(
        launch,
        name,
        Duration::ZERO,
        256,
        16,
        Duration::from_secs(10),
    );
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect(&server.addr).await.unwrap());
    }
    let mut h2c = connect(&server.addr).await.unwrap();
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    idle.push(h2c);
    let start = Instant::now();
    let deadline = header_timeout * 3;
    let mut closed = 0;
    for stream in &mut idle {
        let left = deadline.saturating_sub(start.elapsed());
        // A closed connection reads end of stream (after a 408, on actix-web); an open one
        // times out.
        let mut buf = [0u8; 1024];
        let outcome = loop {
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Err(_) => break "open",
                Ok(Ok(0) | Err(_)) => break "closed",
                Ok(Ok(_)) => continue,
            }
        };
        if outcome == "closed" {
            closed += 1;
        }
    }
    let took = start.elapsed();
    assert_eq!(
        closed,
        idle.len(),
        "{name}: {closed} of {} idle connections closed within {deadline:?} (header timeout \
         {header_timeout:?})",
        idle.len()
    );
    assert!(took >= header_timeout / 2, "{name}: closed after {took:?}");
    eprintln!(
        "{name}: {} idle connections (one after an h2c preface) closed after {took:?} (header \
         timeout {header_timeout:?})",
        idle.len()
    );
    server.settle().await;
    assert_eq!(server.healthy_request().await, 200);
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
        support::launcher(corestream_serve::Server::Axum),
        "axum",
        support::HEADER_TIMEOUT,
    ));
}

#[test]
fn actix_faults() {
    let _alone = support::exclusive();
    block_on(all_faults(
        support::launcher(corestream_serve::Server::Actix),
        "actix",
        support::HEADER_TIMEOUT,
    ));
}
