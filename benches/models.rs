//! Throughput of real ONNX models on the tract backend: items/s at B = 1, 2, 4, 8, 16 for
//! (1 stream x all CPUs, intra-op), (N streams x 1 CPU: whole parts, in chunks, spinning 50 us
//! when idle), and plain tract single-threaded on the calling thread (with batch-specialised
//! plans, and with the symbolic plan only). A bench binary rather than criterion: it prints one
//! markdown table per model.
//!
//! Run: `cargo bench --features tract --bench models` (models/ from `scripts/fetch-models.sh`
//! adds ResNet-18 and paraphrase-MiniLM-L3-v2). `CORESTREAM_BENCH_SECS` sets the measuring
//! time per cell (default 2), `CORESTREAM_BENCH_MODELS` a comma-separated subset,
//! `CORESTREAM_BENCH_MAX_ROWS` the `max_rows_per_run` of the chunked row (default per model:
//! 1 for the convolution nets, 2 for MiniLM at 128 tokens).

use std::path::Path;
use std::time::{Duration, Instant};

use corestream::backend::tract::{OnnxModel, Tensor};
use corestream::{CpuPool, Module, MultiStreamModule, Streams};

const BATCHES: [usize; 5] = [1, 2, 4, 8, 16];

struct Bench {
    name: &'static str,
    path: String,
    make_input: fn(usize) -> Vec<Tensor>,
    /// `max_rows_per_run` of the chunked row, unless `CORESTREAM_BENCH_MAX_ROWS` is set.
    max_rows: usize,
}

fn floats(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    Tensor::from_shape(shape, &data).expect("shape matches data")
}

fn tokens(batch: usize) -> Vec<Tensor> {
    const SEQ: usize = 128;
    let ids: Vec<i64> = (0..batch * SEQ)
        .map(|i| {
            if i % SEQ == 0 {
                101
            } else {
                1000 + (i * 37 % 20000) as i64
            }
        })
        .collect();
    let mask = vec![1i64; batch * SEQ];
    vec![
        Tensor::from_shape(&[batch, SEQ], &ids).expect("ids"),
        Tensor::from_shape(&[batch, SEQ], &mask).expect("mask"),
    ]
}

/// Items per second of `run(batch)` over `secs` after a short warm-up.
fn measure(batch: usize, secs: f64, mut run: impl FnMut() -> corestream::Result<()>) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        run().expect("warm-up run");
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < secs || calls < 3 {
        run().expect("measured run");
        calls += 1;
    }
    (calls * batch as u64) as f64 / start.elapsed().as_secs_f64()
}

fn main() -> corestream::Result<()> {
    // `cargo bench` passes --bench; nothing else is accepted.
    let secs: f64 = std::env::var("CORESTREAM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let only: Option<Vec<String>> = std::env::var("CORESTREAM_BENCH_MODELS")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let max_rows_env: Option<usize> = std::env::var("CORESTREAM_BENCH_MAX_ROWS")
        .ok()
        .and_then(|s| s.parse().ok());
    let root = env!("CARGO_MANIFEST_DIR");
    let benches = [
        Bench {
            name: "examplenet1",
            path: format!("{root}/assets/models/examplenet1.onnx"),
            make_input: |b| vec![floats(&[b, 64, 3, 3])],
            max_rows: 1,
        },
        Bench {
            name: "resnet18",
            path: format!("{root}/models/resnet18.onnx"),
            make_input: |b| vec![floats(&[b, 3, 224, 224])],
            max_rows: 1,
        },
        Bench {
            name: "minilm-l3",
            path: format!("{root}/models/paraphrase-MiniLM-L3-v2.onnx"),
            make_input: tokens,
            max_rows: 2,
        },
    ];
    let pool = CpuPool::all()?;
    let n = pool.len();
    println!("{n} CPUs ({pool}); {secs} s per cell; items/s\n");
    for bench in benches {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|m| m == bench.name))
        {
            continue;
        }
        if !Path::new(&bench.path).exists() {
            println!(
                "{}: {} missing (run scripts/fetch-models.sh)\n",
                bench.name, bench.path
            );
            continue;
        }
        let max_rows = max_rows_env.unwrap_or(bench.max_rows);
        let plain = OnnxModel::load(&bench.path)?;
        let plain_symbolic = OnnxModel::builder(&bench.path)
            .specialize_up_to(0)
            .build()?;
        let one_stream = MultiStreamModule::builder(OnnxModel::load(&bench.path)?)
            .pool(pool.clone())
            .num_streams(Streams::Count(1))
            .build()?;
        let n_streams = MultiStreamModule::builder(OnnxModel::load(&bench.path)?)
            .pool(pool.clone())
            .num_streams(Streams::Auto)
            .build()?;
        let spinning = MultiStreamModule::builder(OnnxModel::load(&bench.path)?)
            .pool(pool.clone())
            .num_streams(Streams::Auto)
            .spin(Duration::from_micros(50))
            .build()?;
        let chunked = MultiStreamModule::builder(
            OnnxModel::builder(&bench.path)
                .max_rows_per_run(max_rows)
                .build()?,
        )
        .pool(pool.clone())
        .num_streams(Streams::Auto)
        .build()?;
        println!("**{}**\n", bench.name);
        println!("| mode | B=1 | B=2 | B=4 | B=8 | B=16 |");
        println!("|---|---:|---:|---:|---:|---:|");
        let mut rows: Vec<(String, Vec<f64>)> = vec![
            (format!("corestream 1 stream x {n} CPUs"), vec![]),
            (format!("corestream {n} streams x 1 CPU"), vec![]),
            (
                format!("corestream {n} streams x 1 CPU, runs of <= {max_rows} rows"),
                vec![],
            ),
            (
                format!("corestream {n} streams x 1 CPU, spin 50 us"),
                vec![],
            ),
            ("tract single-threaded (caller)".into(), vec![]),
            ("tract single-threaded, symbolic plan only".into(), vec![]),
        ];
        for b in BATCHES {
            let x = (bench.make_input)(b);
            rows[0].1.push(measure(b, secs, || {
                one_stream.forward_sync(x.clone()).map(drop)
            }));
            rows[1].1.push(measure(b, secs, || {
                n_streams.forward_sync(x.clone()).map(drop)
            }));
            rows[2].1.push(measure(b, secs, || {
                chunked.forward_sync(x.clone()).map(drop)
            }));
            rows[3].1.push(measure(b, secs, || {
                spinning.forward_sync(x.clone()).map(drop)
            }));
            rows[4].1.push(measure(b, secs, || {
                plain.forward(x.clone()).map(drop).map_err(Into::into)
            }));
            rows[5].1.push(measure(b, secs, || {
                plain_symbolic
                    .forward(x.clone())
                    .map(drop)
                    .map_err(Into::into)
            }));
            eprintln!("{} B={b} done", bench.name);
        }
        for (mode, cells) in rows {
            let cells: Vec<String> = cells.iter().map(|v| format_rate(*v)).collect();
            println!("| {mode} | {} |", cells.join(" | "));
        }
        println!();
    }
    Ok(())
}

fn format_rate(v: f64) -> String {
    if v >= 1000.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else {
        format!("{v:.1}")
    }
}
