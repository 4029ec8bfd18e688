//! Load generator for the embedding service: C concurrent clients for T seconds against
//! 127.0.0.1 only, all parts in the same run.
//!
//! Part 1, short sentences (`POST /embed {"inputs": "..."}`, one text per request):
//! - (a) the service: axum + `Batcher` over pinned streams (the served batch size is measured);
//! - (b) the ceiling: the backend's own offline throughput at that batch size on all streams
//!   (pre-tokenised batches straight into the same `MultiStreamModule`, two calls in flight so
//!   no stream waits; no HTTP, no JSON, no tokenisation, no batching): the physical limit of
//!   batching;
//! - (c) the naive server: the same HTTP front, the model called once per request through
//!   `tokio::task::spawn_blocking` (no batching, no pinning).
//!
//! It prints requests/s and p50/p99 for (a) and (c), rows/s of (b), and the ratios
//! (a)/(b) and (a)/(c).
//!
//! Part 2, mixed lengths (`POST /v1/embeddings` with token-id inputs of 1 to 128 tokens, uniform):
//! token-budget batching (`max_batch_tokens` + the `tokens` cost function: length grouping)
//! against count-only batching, each over a small sweep of its limit; the comparison takes,
//! for each strategy, the best rows/s whose p99 is within 10% of count-only batching at
//! `max_batch` 16 (equal p99). On MiniLM the cost of a batch is rows x padded length; TextNet's
//! cost does not depend on length, so part 2 says little without `models/`.
//!
//! Part 3, reranking (MiniLM only: a cross-encoder made from it by corestream-testkit):
//! `POST /rerank` of one query with 64 documents of 3 to 62 words, C_r concurrent clients
//! (`CORESTREAM_RERANK_CLIENTS`, default 2), pairs/s of the service against the backend's
//! offline ceiling for the same 64 pairs on all streams (the better of: all 64 in one
//! multi-stream call, or sorted by length in calls of `max_batch` rows, two in flight).
//!
//! Run: `cargo bench --features tract,ort,metrics,tracing --bench serve` (MiniLM-L3 when
//! `models/` has been fetched, else the bundled TextNet). Environment:
//! `CORESTREAM_LOAD_CLIENTS` (default 64), `CORESTREAM_LOAD_SECS` (per measurement, default
//! 10), `CORESTREAM_LOAD_MAX_REQUESTS` (default 200000), `CORESTREAM_LOAD_MAX_BATCH` (part 1,
//! default 16), `CORESTREAM_LOAD_STREAMS` (default: one per CPU), `CORESTREAM_SERVE_BUDGETS`
//! (part 2's token budgets, comma-separated, default 256,512,1024,2048,4096),
//! `CORESTREAM_SERVE_PARTS` (`throughput`, `mixed`, `rerank`, comma-separated, default all),
//! `CORESTREAM_BACKEND` (`ort`, `tract` or `auto`: ONNX Runtime when found, else tract).

use corestream_serve::model::Encoded;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{CpuPool, Module, MultiStreamModule, Streams};
use corestream_serve::http::axum as app;
use corestream_serve::model::{embedder, Backend, ModelKind, TextTokenizer};
use corestream_serve::service::{serve_model, BatchOptions, Loaded, Monitor, Service};
use futures::stream::{FuturesUnordered, StreamExt};

const SENTENCES: [&str; 8] = [
    "A man is playing a guitar on the street.",
    "The new movie is awesome and everyone should see it.",
    "The stock market fell sharply today after the announcement.",
    "A woman is slicing an onion in the kitchen.",
    "Two dogs are running through a field of tall grass.",
    "The committee will publish its report next week.",
    "He forgot his umbrella and got soaked on the way home.",
    "Researchers found a faster way to train small language models.",
];

/// The token budgets of the mixed-length sweep: `CORESTREAM_SERVE_BUDGETS` (comma-separated
/// tokens per batch), default 256, 512, 1024, 2048 and 4096.
fn budgets() -> Vec<usize> {
    std::env::var("CORESTREAM_SERVE_BUDGETS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .filter(|b: &Vec<usize>| !b.is_empty())
        .unwrap_or_else(|| vec![256, 512, 1024, 2048, 4096])
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The load's settings.
#[derive(Clone, Copy)]
struct Load {
    clients: u64,
    secs: u64,
    max_requests: u64,
}

struct Outcome {
    ok: u64,
    rows: u64,
    overloaded: u64,
    failed: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn p(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// What client `c` sends as its `i`-th request: path, JSON body, rows.
type Workload = Arc<dyn Fn(u64, u64) -> (&'static str, String, u64) + Send + Sync>;

async fn drive(base: &str, load: Load, workload: Workload) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.clients as usize)
        .build()
        .expect("http client");
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(load.secs);
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..load.clients {
        let (client, base, sent, workload) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(&sent),
            Arc::clone(&workload),
        );
        handles.push(tokio::spawn(async move {
            let mut out = (0u64, 0u64, 0u64, 0u64, Vec::new());
            let mut i = 0;
            while Instant::now() < deadline
                && sent.fetch_add(1, Ordering::Relaxed) < load.max_requests
            {
                let (path, body, rows) = workload(c, i);
                i += 1;
                let t = Instant::now();
                let response = client
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        out.0 += 1;
                        out.1 += rows;
                        out.4.push(t.elapsed());
                    }
                    Ok(r) if r.status() == 503 => out.2 += 1,
                    _ => out.3 += 1,
                }
            }
            out
        }));
    }
    let mut o = Outcome {
        ok: 0,
        rows: 0,
        overloaded: 0,
        failed: 0,
        secs: 0.0,
        latencies: Vec::new(),
    };
    for h in handles {
        let (ok, rows, overloaded, failed, latencies) = h.await.expect("client task");
        o.ok += ok;
        o.rows += rows;
        o.overloaded += overloaded;
        o.failed += failed;
        o.latencies.extend(latencies);
    }
    o.secs = start.elapsed().as_secs_f64();
    o.latencies.sort_unstable();
    o
}

fn launch(service: Service) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        app::serve(
            listener,
            app::router(Arc::new(service)),
            Duration::from_secs(10),
            std::future::pending(),
        )
        .await
    });
    format!("http://{addr}")
}

/// A model of the served kind, as one type.
#[derive(Clone)]
struct Model(Arc<dyn Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>>);

impl Module for Model {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, corestream::BoxError> {
        self.0.forward(x)
    }
}

struct Setup {
    name: &'static str,
    kind: ModelKind,
    backend: String,
    load_model: Box<dyn Fn() -> (Model, TextTokenizer)>,
    pool: CpuPool,
    streams: Streams,
}

fn options(
    setup: &Setup,
    max_batch: usize,
    tokens: Option<usize>,
    count_only: bool,
) -> BatchOptions {
    BatchOptions {
        pool: setup.pool.clone(),
        streams: setup.streams,
        max_batch,
        max_batch_tokens: tokens,
        max_wait: Duration::ZERO,
        queue: 1024,
        max_client_batch: 64,
        auto_truncate: true,
        count_only,
    }
}

/// Serves the model behind a batcher as `options` say; also returns the naive baseline over
/// a second copy of the model when `naive`.
fn serve(
    setup: &Setup,
    label: &str,
    options: &BatchOptions,
    naive: bool,
) -> (String, Option<Loaded>) {
    let (model, tokenizer) = (setup.load_model)();
    let mut loaded =
        serve_model(model, tokenizer, label, setup.backend.clone(), options).expect("batcher");
    loaded.set_kind(setup.kind.clone());
    let stats = loaded.monitor.clone();
    if let Some(s) = &stats {
        STATS
            .lock()
            .expect("stats")
            .push((label.to_owned(), Arc::clone(s)));
    }
    let info = loaded.info.clone();
    let tokenizer = Arc::clone(&loaded.tokenizer);
    let base = launch(Service::ready(loaded, Arc::new(String::new)));
    let handle = naive.then(|| Loaded {
        embedder: Arc::new(embedder::Naive(Arc::new(setup.load_model.as_ref()().0))),
        tokenizer,
        info,
        monitor: None,
        prompts: Default::default(),
        kind: Default::default(),
    });
    (base, handle)
}

/// Rows/s of the backend alone on `setup`'s streams at `batch` rows per stream call.
async fn ceiling(setup: &Setup, ids: &[Vec<u32>], batch: usize, secs: u64) -> f64 {
    let (model, _) = (setup.load_model)();
    let msm = MultiStreamModule::builder(model)
        .pool(setup.pool.clone())
        .num_streams(setup.streams)
        .build()
        .expect("streams");
    let rows = batch * msm.num_streams();
    let input = Rows(
        (0..rows)
            .map(|i| Encoded::single(ids[i % ids.len()].clone()))
            .collect::<Vec<_>>(),
    );
    offline(&msm, &[input], secs).await
}

/// Rows/s of `msm` running `inputs` over and over, in turn, two calls in flight so that no
/// stream waits.
async fn offline(msm: &MultiStreamModule<Model>, inputs: &[Rows<Encoded>], secs: u64) -> f64 {
    for input in inputs {
        msm.forward(input.clone()).await.expect("warm-up");
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut done = 0u64;
    let mut next = (0..inputs.len()).cycle();
    let run = |i: usize| async move { (i, msm.forward(inputs[i].clone()).await) };
    for _ in 0..2 {
        in_flight.push(run(next.next().expect("an input")));
    }
    while let Some((i, r)) = in_flight.next().await {
        r.expect("offline run");
        done += inputs[i].0.len() as u64;
        if Instant::now() < deadline {
            in_flight.push(run(next.next().expect("an input")));
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

async fn throughput(setup: &Setup, load: Load) {
    let max_batch = env_or("CORESTREAM_LOAD_MAX_BATCH", 16) as usize;
    let sentence: Workload = Arc::new(|c, i| {
        let text = SENTENCES[((c + i) % SENTENCES.len() as u64) as usize];
        (
            "/embed",
            serde_json::json!({ "inputs": text }).to_string(),
            1,
        )
    });
    let (fast, naive_handle) = serve(
        setup,
        setup.name,
        &options(setup, max_batch, None, false),
        true,
    );
    let naive_handle = naive_handle.expect("naive baseline");
    let tokenizer = Arc::clone(&naive_handle.tokenizer);
    let naive = launch(Service::ready(naive_handle, Arc::new(String::new)));

    println!(
        "## short sentences: {} on backend {}, {} clients x {} s, {} CPUs ({}), {:?}\n",
        setup.name,
        setup.backend,
        load.clients,
        load.secs,
        setup.pool.len(),
        setup.pool,
        setup.streams
    );
    let a = drive(&fast, load, Arc::clone(&sentence)).await;
    let c = drive(&naive, load, sentence).await;
    let ids: Vec<Vec<u32>> = SENTENCES
        .iter()
        .map(|s| tokenizer.encode(s).expect("tokenise"))
        .collect();
    // The served batch size: mean rows per batch of the service's batcher during (a).
    let served = served_batch(&fast_stats(setup.name)).max(1.0);
    let batch = served.round().max(1.0) as usize;
    let b = ceiling(setup, &ids, batch, load.secs).await;

    let rate = |o: &Outcome| o.rows as f64 / o.secs;
    println!("| server | rows/s | p50 ms | p99 ms | ok | 503 | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| (a) corestream service (Batcher, max_batch {max_batch}, mean batch {served:.1} rows) | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
        rate(&a), a.p(0.5), a.p(0.99), a.ok, a.overloaded, a.failed
    );
    println!("| (b) backend offline, {batch} rows per stream call on all streams (ceiling) | {b:.1} | | | | | |");
    println!(
        "| (c) naive server (spawn_blocking per request) | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
        rate(&c),
        c.p(0.5),
        c.p(0.99),
        c.ok,
        c.overloaded,
        c.failed
    );
    println!(
        "\n(a)/(b) = {:.2}x of the ceiling; (a)/(c) = {:.2}x the naive server's rows/s, p99 {:.2}x\n",
        rate(&a) / b,
        rate(&a) / rate(&c),
        a.p(0.99) / c.p(0.99)
    );
}

/// The batchers' counters by name (the service keeps them in `Loaded::monitor`).
fn fast_stats(name: &str) -> corestream::BatcherStats {
    STATS
        .lock()
        .expect("stats")
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, m)| m.stats())
        .expect("a served batcher of that name")
}

static STATS: std::sync::Mutex<Vec<(String, Arc<dyn Monitor>)>> = std::sync::Mutex::new(Vec::new());

fn served_batch(s: &corestream::BatcherStats) -> f64 {
    s.batch_rows as f64 / s.batches.max(1) as f64
}

async fn mixed(setup: &Setup, load: Load) {
    println!(
        "## mixed lengths (1-128 tokens, uniform): {} on backend {}, {} clients x {} s\n",
        setup.name, setup.backend, load.clients, load.secs
    );
    let workload: Workload = Arc::new(|c, i| {
        // A small LCG per client: lengths uniform in 1..=128, ids inside every vocabulary.
        let x = (c * 7919 + i * 104_729 + 12_345).wrapping_mul(6_364_136_223_846_793_005);
        let len = 1 + (x >> 33) % 128;
        let ids: Vec<u64> = (0..len).map(|k| 100 + (k * 37 + c) % 100).collect();
        (
            "/v1/embeddings",
            serde_json::json!({ "input": [ids], "encoding_format": "base64" }).to_string(),
            1,
        )
    });
    let mut runs: Vec<(String, bool, Outcome, corestream::BatcherStats)> = Vec::new();
    let configs: Vec<(String, BatchOptions, bool)> = [8usize, 16, 32]
        .iter()
        .map(|&b| {
            (
                format!("count-only, max_batch {b}"),
                options(setup, b, None, true),
                false,
            )
        })
        .chain(budgets().into_iter().map(|t| {
            (
                format!("token budget {t}, max_batch 64"),
                options(setup, 64, Some(t), false),
                true,
            )
        }))
        .collect();
    for (label, options, budget) in configs {
        let (base, _) = serve(setup, &label, &options, false);
        let o = drive(&base, load, Arc::clone(&workload)).await;
        runs.push((label.clone(), budget, o, fast_stats(&label)));
    }
    println!("| batching | rows/s | p50 ms | p99 ms | mean batch rows | padding | 503 | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, _, o, s) in &runs {
        let padding = if s.batch_tokens > 0 {
            format!(
                "{:.0}%",
                100.0 * (1.0 - s.batch_tokens_unpadded as f64 / s.batch_tokens as f64)
            )
        } else {
            "n/a".into()
        };
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {padding} | {} | {} |",
            o.rows as f64 / o.secs,
            o.p(0.5),
            o.p(0.99),
            served_batch(s),
            o.overloaded,
            o.failed
        );
    }
    let reference = runs
        .iter()
        .find(|(l, ..)| l == "count-only, max_batch 16")
        .map(|(_, _, o, _)| o.p(0.99))
        .unwrap_or(f64::NAN);
    let best = |budget: bool| {
        runs.iter()
            .filter(|(_, b, o, _)| *b == budget && o.p(0.99) <= reference * 1.1)
            .map(|(l, _, o, _)| (o.rows as f64 / o.secs, l.clone(), o.p(0.99)))
            .max_by(|x, y| x.0.total_cmp(&y.0))
    };
    match (best(true), best(false)) {
        (Some(t), Some(c)) => println!(
            "\nat p99 <= {:.1} ms (count-only max_batch 16 + 10%): token budget {:.1} rows/s ({}, p99 {:.1}) vs count-only {:.1} rows/s ({}, p99 {:.1}): {:.2}x\n",
            reference * 1.1, t.0, t.1, t.2, c.0, c.1, c.2, t.0 / c.0
        ),
        _ => println!("\nno token-budget configuration stayed within p99 {:.1} ms\n", reference * 1.1),
    }
}

/// One query and 64 documents of 3 to 62 words.
fn rerank_documents() -> Vec<String> {
    let words = SENTENCES.join(" ");
    let words: Vec<&str> = words.split_whitespace().collect();
    (0..64)
        .map(|i| {
            let n = 3 + (i * 37) % 60;
            (0..n)
                .map(|k| words[(i * 5 + k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

const RERANK_QUERY: &str = "what does the guitar player do";

async fn rerank(setup: &Setup, minilm: &Path, load: Load) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cross = dir.path().join("reranker");
    corestream_testkit::Head::random(1, 7)
        .write(
            minilm,
            &cross,
            &corestream_testkit::heads::reranker_config(),
        )
        .expect("reranker");
    let backend = setup.backend.clone();
    let which = if backend.starts_with("ort") {
        Backend::Ort
    } else {
        Backend::Tract
    };
    let files = corestream_serve::model::ModelFiles::from_dir(&cross).expect("reranker files");
    let reranker = Setup {
        name: "reranker",
        kind: ModelKind::Reranker,
        backend,
        load_model: Box::new(move || {
            let (m, t) = corestream_serve::model::TextEmbedder::load_with_tokenizer(&files, which)
                .expect("reranker");
            (Model(Arc::new(m)), t)
        }),
        pool: setup.pool.clone(),
        streams: setup.streams,
    };
    let load = Load {
        clients: env_or("CORESTREAM_RERANK_CLIENTS", 2),
        ..load
    };
    let max_batch = env_or("CORESTREAM_LOAD_MAX_BATCH", 16) as usize;
    let docs = rerank_documents();
    let body = serde_json::json!({ "query": RERANK_QUERY, "texts": docs }).to_string();
    let workload: Workload = Arc::new(move |_, _| ("/rerank", body.clone(), 64));
    let (base, _) = serve(
        &reranker,
        "reranker",
        &options(&reranker, max_batch, None, false),
        false,
    );
    println!(
        "## reranking: one query x 64 documents (3-62 words) per request, {} on backend {}, {} clients x {} s\n",
        reranker.name, reranker.backend, load.clients, load.secs
    );
    let a = drive(&base, load, workload).await;

    let (model, tokenizer) = (reranker.load_model)();
    let max = tokenizer.max_input_length();
    let mut pairs: Vec<Encoded> = docs
        .iter()
        .map(|d| {
            tokenizer
                .encode_pair(RERANK_QUERY, d, max, true)
                .expect("tokenise")
                .expect("within the limit")
        })
        .collect();
    let msm = MultiStreamModule::builder(model)
        .pool(reranker.pool.clone())
        .num_streams(reranker.streams)
        .build()
        .expect("streams");
    let whole = offline(&msm, &[Rows(pairs.clone())], load.secs).await;
    pairs.sort_by_key(Encoded::len);
    let sorted: Vec<Rows<Encoded>> = pairs.chunks(max_batch).map(|c| Rows(c.to_vec())).collect();
    let chunked = offline(&msm, &sorted, load.secs).await;
    let ceiling = whole.max(chunked);
    let rate = a.rows as f64 / a.secs;
    let s = fast_stats("reranker");
    println!("| | pairs/s | p50 ms | p99 ms | ok | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| (a) corestream service, POST /rerank (mean batch {:.1} rows) | {rate:.1} | {:.1} | {:.1} | {} | {} |",
        served_batch(&s), a.p(0.5), a.p(0.99), a.ok, a.failed + a.overloaded
    );
    println!(
        "| (b1) backend offline, all 64 pairs in one multi-stream call | {whole:.1} | | | | |"
    );
    println!("| (b2) backend offline, sorted by length, {max_batch} rows per call | {chunked:.1} | | | | |");
    println!(
        "\n(a)/max(b1, b2) = {:.2}x of the ceiling\n",
        rate / ceiling
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let load = Load {
        clients: env_or("CORESTREAM_LOAD_CLIENTS", 64),
        secs: env_or("CORESTREAM_LOAD_SECS", 10),
        max_requests: env_or("CORESTREAM_LOAD_MAX_REQUESTS", 200_000),
    };
    let explicit = std::env::var("CORESTREAM_BACKEND")
        .ok()
        .filter(|v| !v.is_empty() && v != "auto")
        .map(|v| {
            v.parse::<Backend>()
                .unwrap_or_else(|e| panic!("CORESTREAM_BACKEND: {e}"))
        });
    let backend = embedder::backend_or_default(explicit);
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let minilm = dir
        .join(corestream_serve::model::source::LEGACY_ONNX)
        .exists();
    if !minilm {
        println!("models/ not fetched (scripts/fetch-models.sh): using the TextNet stand-in");
    }
    let setup = Setup {
        name: if minilm {
            "paraphrase-MiniLM-L3-v2"
        } else {
            "textnet"
        },
        kind: ModelKind::Embedding,
        backend: backend.describe(),
        load_model: Box::new(move || {
            if minilm {
                let (m, t) = corestream_serve::model::TextEmbedder::load_with_tokenizer(
                    &corestream_serve::model::ModelFiles::from_dir(dir).unwrap(),
                    backend,
                )
                .expect("MiniLM");
                (Model(Arc::new(m)), t)
            } else {
                let (m, t) = embedder::TextNet::load_with_tokenizer(backend).expect("TextNet");
                (Model(Arc::new(m)), t)
            }
        }),
        pool: CpuPool::all().expect("cpus"),
        streams: match env_or("CORESTREAM_LOAD_STREAMS", 0) {
            0 => Streams::Auto,
            n => Streams::Count(n as usize),
        },
    };
    let parts = std::env::var("CORESTREAM_SERVE_PARTS")
        .unwrap_or_else(|_| "throughput,mixed,rerank".into());
    runtime.block_on(async {
        if parts.contains("throughput") {
            throughput(&setup, load).await;
        }
        if parts.contains("mixed") {
            mixed(&setup, load).await;
        }
        if parts.contains("rerank") {
            if minilm {
                rerank(&setup, dir, load).await;
            } else {
                println!("## reranking: needs models/ (scripts/fetch-models.sh); skipped");
            }
        }
    });
}
