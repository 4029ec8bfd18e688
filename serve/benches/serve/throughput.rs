//! Part 1, short sentences: the service against the backend's offline ceiling and the naive
//! server. `CORESTREAM_LOAD_TEXT` replaces the eight sentences by one text (e.g. the one
//! `scripts/tei-compare.sh` sends, for the ceiling of that workload).

use std::sync::Arc;

use corestream_serve::service::Service;

use crate::load::{drive, env_or, launch, Load, Outcome, Workload};
use crate::setup::{ceiling, fast_stats, options, serve, served_batch, Setup};
use crate::SENTENCES;

pub async fn throughput(setup: &Setup, load: Load) {
    let max_batch = env_or("CORESTREAM_LOAD_MAX_BATCH", 16) as usize;
    let texts: Arc<Vec<String>> = Arc::new(match std::env::var("CORESTREAM_LOAD_TEXT") {
        Ok(text) if !text.is_empty() => vec![text],
        _ => SENTENCES.iter().map(|s| (*s).to_owned()).collect(),
    });
    let sentences = Arc::clone(&texts);
    let sentence: Workload = Arc::new(move |c, i| {
        let text = &sentences[((c + i) % sentences.len() as u64) as usize];
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
    let ids: Vec<Vec<u32>> = texts
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
