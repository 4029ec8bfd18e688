//! Part 4, two models in one process: two embedders (two copies of the model, served as `a`
//! and `b`), each loaded by half the clients with short sentences on `POST /v1/embeddings`
//! (the `model` field picks), against each alone on its share of the CPUs with the same
//! clients. Rounds alternate: `a` alone, `b` alone, both together on their own CPUs
//! (`--model-cpus split`), both together on all the CPUs (`shared`).

use std::sync::Arc;

use corestream::CpuPool;
use corestream_serve::service::{serve_model, Loaded, Models, Service};

use crate::load::{drive, env_or, launch, Load, Outcome, Workload};
use crate::setup::{options, Setup};
use crate::SENTENCES;

/// Short sentences for the model named `model`.
fn sentences(model: &'static str) -> Workload {
    Arc::new(move |c, i| {
        let text = SENTENCES[((c + i) % SENTENCES.len() as u64) as usize];
        (
            "/v1/embeddings",
            serde_json::json!({ "input": text, "model": model }).to_string(),
            1,
        )
    })
}

/// The setup's model served as `name` on `pool`.
fn model(setup: &Setup, name: &str, pool: &CpuPool) -> Loaded {
    let max_batch = env_or("CORESTREAM_LOAD_MAX_BATCH", 16) as usize;
    let options = corestream_serve::service::BatchOptions {
        pool: pool.clone(),
        streams: corestream::Streams::Auto,
        ..options(setup, max_batch, None, false)
    };
    let (model, tokenizer) = (setup.load_model)();
    let mut loaded =
        serve_model(model, tokenizer, name, setup.backend.clone(), &options).expect("batcher");
    loaded.set_kind(setup.kind.clone());
    loaded
}

fn rate(o: &Outcome) -> f64 {
    o.rows as f64 / o.secs
}

pub async fn two_models(setup: &Setup, load: Load) {
    let all = setup.pool.clone();
    if all.len() < 2 {
        println!("## two models: needs 2 CPUs or more; skipped\n");
        return;
    }
    let shares = all.split(2).expect("two shares");
    let half = Load {
        clients: (load.clients / 2).max(1),
        ..load
    };
    let rounds = env_or("CORESTREAM_MODELS_ROUNDS", 3);
    println!(
        "## two models in one process: {} twice (a, b) on backend {}, {} clients each x {} s, \
         {rounds} alternating rounds; alone: each on its share ({} / {}); split: both, each on \
         its share; shared: both, each with streams on all {} CPUs\n",
        setup.name,
        setup.backend,
        half.clients,
        half.secs,
        shares[0],
        shares[1],
        all.len()
    );
    println!("| round | a alone | b alone | a split | b split | a/alone | b/alone | a shared | b shared | a/alone | b/alone |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let alone_a = launch(Service::ready(
            model(setup, "a", &shares[0]),
            Arc::new(String::new),
        ));
        let a = rate(&drive(&alone_a, half, sentences("a")).await);
        let alone_b = launch(Service::ready(
            model(setup, "b", &shares[1]),
            Arc::new(String::new),
        ));
        let b = rate(&drive(&alone_b, half, sentences("b")).await);
        let mut together = Vec::new();
        for pools in [[&shares[0], &shares[1]], [&all, &all]] {
            let models = Models::new(vec![
                model(setup, "a", pools[0]),
                model(setup, "b", pools[1]),
            ])
            .expect("two models");
            let both = launch(Service::ready(models, Arc::new(String::new)));
            let (two_a, two_b) = futures::join!(
                drive(&both, half, sentences("a")),
                drive(&both, half, sentences("b"))
            );
            together.push((rate(&two_a), rate(&two_b)));
        }
        let [(sa, sb), (ha, hb)] = [together[0], together[1]];
        println!(
            "| {round} | {a:.1} | {b:.1} | {sa:.1} | {sb:.1} | {:.2} | {:.2} | {ha:.1} | {hb:.1} | {:.2} | {:.2} |",
            sa / a,
            sb / b,
            ha / a,
            hb / b
        );
        ratios.push((sa / a, sb / b, ha / a, hb / b));
    }
    let n = ratios.len() as f64;
    let mean = |f: fn(&(f64, f64, f64, f64)) -> f64| ratios.iter().map(f).sum::<f64>() / n;
    println!(
        "\nmean of each model together / alone: split a {:.2}x, b {:.2}x; shared a {:.2}x, b {:.2}x \
         (the lowest split round: {:.2}x)\n",
        mean(|r| r.0),
        mean(|r| r.1),
        mean(|r| r.2),
        mean(|r| r.3),
        ratios
            .iter()
            .map(|r| r.0.min(r.1))
            .fold(f64::INFINITY, f64::min)
    );
}
