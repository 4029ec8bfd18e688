//! Part 2, mixed lengths: token-budget batching against count-only batching at equal p99.

use std::sync::Arc;

use corestream_serve::service::BatchOptions;

use crate::load::{drive, Load, Outcome, Workload};
use crate::setup::{fast_stats, options, serve, served_batch, Setup};

/// The token budgets of the mixed-length sweep: `CORESTREAM_SERVE_BUDGETS` (comma-separated
/// tokens per batch), default 256, 512, 1024, 2048 and 4096.
fn budgets() -> Vec<usize> {
    std::env::var("CORESTREAM_SERVE_BUDGETS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .filter(|b: &Vec<usize>| !b.is_empty())
        .unwrap_or_else(|| vec![256, 512, 1024, 2048, 4096])
}

pub async fn mixed(setup: &Setup, load: Load) {
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
