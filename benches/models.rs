//! Throughput of real ONNX models on both backends: items/s at B = 1, 2, 4, 8, 16.
//!
//! - tract: (1 stream x all CPUs, intra-op), (N streams x 1 CPU: whole parts, in chunks,
//!   parking at once when idle), and plain tract single-threaded on the calling thread (with
//!   batch-specialised plans, and with the symbolic plan only);
//! - ONNX Runtime (feature `ort`, library from `scripts/fetch-onnxruntime.sh` or
//!   `ORT_DYLIB_PATH`; its rows are skipped with a notice when the library is not found):
//!   (1 stream x all CPUs: ORT's intra-op workers spinning, its default, and not spinning),
//!   (N streams x 1 CPU: whole parts, parking at once when idle), and one ONNX Runtime session
//!   with one thread on the calling thread.
//!
//! Streams poll corestream's `DEFAULT_SPIN` when idle, except in the rows that say they park
//! at once (`spin(Duration::ZERO)`).
//!
//! A bench binary rather than criterion: it prints one markdown table per model.
//!
//! Run: `cargo bench --features tract,ort --bench models` (models/ from
//! `scripts/fetch-models.sh` adds ResNet-18 and paraphrase-MiniLM-L3-v2).
//! `CORESTREAM_BENCH_SECS` sets the measuring time per cell (default 2),
//! `CORESTREAM_BENCH_MODELS` a comma-separated subset of models, `CORESTREAM_BENCH_BACKENDS` of
//! backends (`tract,ort`), `CORESTREAM_BENCH_MAX_ROWS` the `max_rows_per_run` of tract's chunked
//! row (default per model: 1 for the convolution nets, 2 for MiniLM at 128 tokens).

use std::path::Path;
use std::time::{Duration, Instant};

use corestream::backend::tract::OnnxModel;
use corestream::backend::Tensor;
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
    Tensor::from_shape_vec(shape, data).expect("shape matches data")
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
        Tensor::from_shape_vec(&[batch, SEQ], ids).expect("ids"),
        Tensor::from_shape_vec(&[batch, SEQ], mask).expect("mask"),
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

/// One row of a table: a name and how to run one batch.
struct Mode {
    name: String,
    run: Box<dyn Fn(Vec<Tensor>) -> corestream::Result<()>>,
}

impl Mode {
    fn new<M>(name: String, model: M) -> Mode
    where
        M: Module<Input = Vec<Tensor>, Output = Vec<Tensor>>,
    {
        Mode {
            name,
            run: Box::new(move |x| model.forward(x).map(drop).map_err(Into::into)),
        }
    }
}

/// A MultiStreamModule of `streams` on `pool`, polling `spin` when idle, as a [`Mode`].
fn streams_mode<M>(
    name: String,
    model: M,
    pool: &CpuPool,
    streams: Streams,
    spin: Duration,
) -> corestream::Result<Mode>
where
    M: Module<Input = Vec<Tensor>, Output = Vec<Tensor>>,
{
    let msm = MultiStreamModule::builder(model)
        .pool(pool.clone())
        .num_streams(streams)
        .spin(spin)
        .build()?;
    Ok(Mode {
        name,
        run: Box::new(move |x| msm.forward_sync(x).map(drop)),
    })
}

/// tract's rows.
fn tract_modes(path: &str, pool: &CpuPool, max_rows: usize) -> corestream::Result<Vec<Mode>> {
    let n = pool.len();
    let default = corestream::DEFAULT_SPIN;
    Ok(vec![
        streams_mode(
            format!("corestream 1 stream x {n} CPUs"),
            OnnxModel::load(path)?,
            pool,
            Streams::Count(1),
            default,
        )?,
        streams_mode(
            format!("corestream {n} streams x 1 CPU"),
            OnnxModel::load(path)?,
            pool,
            Streams::Auto,
            default,
        )?,
        streams_mode(
            format!("corestream {n} streams x 1 CPU, runs of <= {max_rows} rows"),
            OnnxModel::builder(path)
                .max_rows_per_run(max_rows)
                .build()?,
            pool,
            Streams::Auto,
            default,
        )?,
        streams_mode(
            format!("corestream {n} streams x 1 CPU, parks at once"),
            OnnxModel::load(path)?,
            pool,
            Streams::Auto,
            Duration::ZERO,
        )?,
        Mode::new(
            "tract single-threaded (caller)".into(),
            OnnxModel::load(path)?,
        ),
        Mode::new(
            "tract single-threaded, symbolic plan only".into(),
            OnnxModel::builder(path).specialize_up_to(0).build()?,
        ),
    ])
}

/// ONNX Runtime's rows; none, with a notice, when its library is not found.
#[cfg(feature = "ort")]
fn ort_modes(path: &str, pool: &CpuPool) -> corestream::Result<Vec<Mode>> {
    use corestream::backend::ort::{load_library, OrtModel};
    let lib = match load_library(None) {
        Ok(lib) => lib,
        Err(e) => {
            println!("ONNX Runtime rows skipped: {e}\n");
            return Ok(Vec::new());
        }
    };
    let v = lib.version();
    let n = pool.len();
    let default = corestream::DEFAULT_SPIN;
    Ok(vec![
        streams_mode(
            format!("corestream+ORT {v} 1 stream x {n} CPUs"),
            OrtModel::load(path)?,
            pool,
            Streams::Count(1),
            default,
        )?,
        streams_mode(
            format!("corestream+ORT {v} 1 stream x {n} CPUs, ORT spin off"),
            OrtModel::builder(path).spin(false).build()?,
            pool,
            Streams::Count(1),
            default,
        )?,
        streams_mode(
            format!("corestream+ORT {v} {n} streams x 1 CPU"),
            OrtModel::load(path)?,
            pool,
            Streams::Auto,
            default,
        )?,
        streams_mode(
            format!("corestream+ORT {v} {n} streams x 1 CPU, parks at once"),
            OrtModel::load(path)?,
            pool,
            Streams::Auto,
            Duration::ZERO,
        )?,
        Mode::new(
            format!("ORT {v} one 1-thread session (caller)"),
            OrtModel::load(path)?,
        ),
    ])
}

/// Without feature `ort`: no rows, and a notice.
#[cfg(not(feature = "ort"))]
fn ort_modes(_path: &str, _pool: &CpuPool) -> corestream::Result<Vec<Mode>> {
    println!("ONNX Runtime rows skipped: built without feature `ort` (--features tract,ort)\n");
    Ok(Vec::new())
}

fn main() -> corestream::Result<()> {
    // `cargo bench` passes --bench; nothing else is accepted.
    let secs: f64 = std::env::var("CORESTREAM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let list = |name: &str| -> Option<Vec<String>> {
        std::env::var(name)
            .ok()
            .map(|s| s.split(',').map(str::to_owned).collect())
    };
    let only = list("CORESTREAM_BENCH_MODELS");
    let backends = list("CORESTREAM_BENCH_BACKENDS");
    let wants = |backend: &str| {
        backends
            .as_ref()
            .is_none_or(|b| b.iter().any(|x| x == backend))
    };
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
        let mut modes = Vec::new();
        if wants("tract") {
            modes.extend(tract_modes(&bench.path, &pool, max_rows)?);
        }
        if wants("ort") {
            modes.extend(ort_modes(&bench.path, &pool)?);
        }
        let mut cells: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for b in BATCHES {
            let x = (bench.make_input)(b);
            for (mode, cells) in modes.iter().zip(&mut cells) {
                cells.push(measure(b, secs, || (mode.run)(x.clone())));
            }
            eprintln!("{} B={b} done", bench.name);
        }
        println!("**{}**\n", bench.name);
        println!("| mode | B=1 | B=2 | B=4 | B=8 | B=16 |");
        println!("|---|---:|---:|---:|---:|---:|");
        for (mode, cells) in modes.iter().zip(cells) {
            let cells: Vec<String> = cells.iter().map(|v| format_rate(*v)).collect();
            println!("| {} | {} |", mode.name, cells.join(" | "));
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
