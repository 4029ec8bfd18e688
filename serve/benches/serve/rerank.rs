//! Part 3, reranking: one query with 64 documents against the backend's offline ceiling for
//! those pairs.

use std::path::Path;
use std::sync::Arc;

use corestream::batch::Rows;
use corestream::MultiStreamModule;
use corestream_serve::model::{Backend, Encoded, ModelKind};

use crate::load::{drive, env_or, Load, Workload};
use crate::setup::{fast_stats, offline, options, serve, served_batch, Model, Setup};
use crate::SENTENCES;

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

pub async fn rerank(setup: &Setup, minilm: &Path, load: Load) {
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
