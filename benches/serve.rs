//! Load generator for the embedding service: C concurrent clients for T seconds against
//! 127.0.0.1 only, first against corestream (Batcher over pinned streams), then against the
//! naive baseline (the same model called per request through `tokio::task::spawn_blocking`: no
//! batching, no pinning), in the same run. Reports requests/s and p50/p99 latency.
//!
//! Run: `cargo bench --features tract --bench serve` (MiniLM-L3 when `models/` has been
//! fetched, else the bundled TextNet). `CORESTREAM_LOAD_CLIENTS` (default 64),
//! `CORESTREAM_LOAD_SECS` (default 10) and `CORESTREAM_LOAD_MAX_REQUESTS` (default 200000)
//! bound the load; `CORESTREAM_LOAD_MAX_BATCH` sets the batcher's max_batch
//! (default 16: the best of 4, 8, 16, 32, 64 for MiniLM-L3 on 2 CPUs);
//! `CORESTREAM_LOAD_STREAMS` the stream count (default: one per CPU). `CORESTREAM_BACKEND`
//! (`ort`, `tract` or `auto`, as the server's `--backend`) picks the inference backend for both
//! servers; the default is `ort` when the ONNX Runtime library is found, else `tract` with one
//! note on stderr. ONNX Runtime needs feature `ort`:
//! `cargo bench --features tract,ort --bench serve`.

#[path = "../examples/embed_server/app.rs"]
mod app;
#[path = "../examples/embed_server/embedder.rs"]
mod embedder;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{Batcher, CpuPool, Module, MultiStreamModule, Streams};
use embedder::Backend;

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

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    ok: u64,
    overloaded: u64,
    failed: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

async fn load(base: &str, clients: u64, secs: u64, max_requests: u64) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .expect("http client");
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..clients {
        let (client, url, sent) = (client.clone(), format!("{base}/embed"), Arc::clone(&sent));
        handles.push(tokio::spawn(async move {
            let (mut ok, mut overloaded, mut failed, mut latencies) = (0, 0, 0, Vec::new());
            let mut i = c as usize;
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max_requests {
                let body = serde_json::json!({ "texts": [SENTENCES[i % SENTENCES.len()]] });
                i += 1;
                let t = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok += 1;
                        latencies.push(t.elapsed());
                    }
                    Ok(r) if r.status() == 503 => overloaded += 1,
                    _ => failed += 1,
                }
            }
            (ok, overloaded, failed, latencies)
        }));
    }
    let mut out = Outcome {
        ok: 0,
        overloaded: 0,
        failed: 0,
        secs: 0.0,
        latencies: Vec::new(),
    };
    for h in handles {
        let (ok, overloaded, failed, latencies) = h.await.expect("client task");
        out.ok += ok;
        out.overloaded += overloaded;
        out.failed += failed;
        out.latencies.extend(latencies);
    }
    out.secs = start.elapsed().as_secs_f64();
    out.latencies.sort_unstable();
    out
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn serve(state: app::AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app::router(state)).await });
    format!("http://{addr}")
}

async fn run<M>(name: &str, backend: &str, corestream_model: M, naive_model: M)
where
    M: Module<Input = Rows<String>, Output = Rows<Vec<f32>>>,
{
    let clients = env_or("CORESTREAM_LOAD_CLIENTS", 64);
    let secs = env_or("CORESTREAM_LOAD_SECS", 10);
    let max_requests = env_or("CORESTREAM_LOAD_MAX_REQUESTS", 200_000);
    let max_batch = env_or("CORESTREAM_LOAD_MAX_BATCH", 16) as usize;
    let pool = CpuPool::all().expect("cpus");
    let streams = match env_or("CORESTREAM_LOAD_STREAMS", 0) {
        0 => Streams::Auto,
        n => Streams::Count(n as usize),
    };
    let msm = MultiStreamModule::builder(corestream_model)
        .pool(pool.clone())
        .num_streams(streams)
        .build()
        .expect("streams");
    let batcher = Arc::new(
        Batcher::builder(msm)
            .max_batch(max_batch)
            .queue_capacity(1024)
            .build()
            .expect("batcher"),
    );
    let stats = Arc::clone(&batcher);
    let fast = serve(app::AppState {
        embedder: batcher.clone(),
        metrics: Arc::new(move || stats.stats().prometheus("corestream")),
        model: name.into(),
        max_texts: max_batch,
    })
    .await;
    let naive = serve(app::AppState {
        embedder: Arc::new(embedder::Naive(Arc::new(naive_model))),
        metrics: Arc::new(String::new),
        model: name.into(),
        max_texts: 16,
    })
    .await;
    println!(
        "{name} on backend {backend}: {clients} clients x {secs} s on {} CPUs ({pool})\n",
        pool.len()
    );
    println!("| server | requests/s | p50 ms | p99 ms | ok | 503 | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rates = Vec::new();
    for (label, base) in [
        (
            format!("corestream Batcher (max_batch {max_batch}, {streams:?})"),
            &fast,
        ),
        ("naive spawn_blocking per request".to_string(), &naive),
    ] {
        let o = load(base, clients, secs, max_requests).await;
        let rate = o.ok as f64 / o.secs;
        rates.push((rate, pct(&o.latencies, 0.99)));
        println!(
            "| {label} | {rate:.1} | {:.1} | {:.1} | {} | {} | {} |",
            pct(&o.latencies, 0.5),
            pct(&o.latencies, 0.99),
            o.ok,
            o.overloaded,
            o.failed
        );
    }
    let s = batcher.stats();
    let mean_batch = s.completed as f64 / s.batches.max(1) as f64;
    println!(
        "\nratio corestream / naive: {:.2}x requests/s, p99 {:.2}x; mean batch {:.1} requests",
        rates[0].0 / rates[1].0,
        rates[0].1 / rates[1].1,
        mean_batch
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    let explicit = std::env::var("CORESTREAM_BACKEND")
        .ok()
        .filter(|v| !v.is_empty() && v != "auto")
        .map(|v| {
            v.parse::<Backend>()
                .unwrap_or_else(|e| panic!("CORESTREAM_BACKEND: {e}"))
        });
    let backend = embedder::backend_or_default(explicit);
    runtime.block_on(async {
        if dir.join("paraphrase-MiniLM-L3-v2.onnx").exists() {
            let load = || embedder::MiniLm::load(dir, 128, backend).expect("MiniLM");
            let (a, b) = (load(), load());
            run("paraphrase-MiniLM-L3-v2", &backend.describe(), a, b).await;
        } else {
            println!("models/ not fetched (scripts/fetch-models.sh): using the TextNet stand-in");
            let load = || embedder::TextNet::load(backend).expect("TextNet");
            let (a, b) = (load(), load());
            run("textnet", &backend.describe(), a, b).await;
        }
    });
}
