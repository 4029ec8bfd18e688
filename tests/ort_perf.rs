//! Quick measurements of the ONNX Runtime backend on ResNet-18 (`models/resnet18.onnx`, from
//! `scripts/fetch-models.sh`), to choose defaults. Ignored by default; run in release mode:
//!
//! ```text
//! cargo test --release --features ort --test ort_perf -- --ignored --nocapture --test-threads 1
//! CORESTREAM_RSS=shared|k2|k2-noprepack|k2-noshare|separate cargo test --release --features ort \
//!     --test ort_perf rss -- --ignored --nocapture
//! ```
#![cfg(feature = "ort")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::backend::ort::{self as cs_ort, OrtModel};
use corestream::backend::Tensor;
use corestream::{CpuPool, MultiStreamModule, Streams, Task};

/// `models/resnet18.onnx`, or the model named by `CORESTREAM_PERF_MODEL` (one f32 input
/// whose first axis is the batch).
fn resnet() -> Option<String> {
    let path = std::env::var("CORESTREAM_PERF_MODEL")
        .unwrap_or_else(|_| format!("{}/models/resnet18.onnx", env!("CARGO_MANIFEST_DIR")));
    if cs_ort::load_library(None).is_err() || !std::path::Path::new(&path).exists() {
        eprintln!("skipped: needs ONNX Runtime and models/resnet18.onnx");
        return None;
    }
    Some(path)
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024.0
}

fn image_batch(b: usize) -> Tensor {
    let mut shape = INPUT_SHAPE
        .get()
        .cloned()
        .unwrap_or_else(|| vec![0, 3, 224, 224]);
    shape[0] = b;
    Tensor::zeros::<f32>(&shape)
}

/// The model's input shape (axis 0: the batch), set from the first model loaded.
static INPUT_SHAPE: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

fn note_shape(model: &OrtModel) {
    let shape = model.inputs()[0]
        .shape
        .iter()
        .map(|d| d.unwrap_or(1))
        .collect();
    let _ = INPUT_SHAPE.set(shape);
}

/// Images per second of one ~`secs` run of `f` over `b` images per call.
fn run_for(b: usize, secs: f64, f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed() < Duration::from_secs_f64(secs) {
        f();
        n += b;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Every configuration at B=1 and B=16, interleaved in rounds of ~1 s runs (the machine is
/// noisy: each configuration sees the same mix of quiet and busy moments); prints the best
/// and the median round of each.
#[test]
#[ignore = "measurement; run in release mode with --ignored"]
fn throughput() {
    let Some(path) = resnet() else { return };
    let all = CpuPool::all().unwrap();
    if all.len() < 2 {
        eprintln!("skipped: needs 2 cpus");
        return;
    }
    let rounds: usize = std::env::var("CORESTREAM_PERF_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let name = Path::new(&path)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let cpus = all.cpus()[..2].to_vec();
    let pair = || CpuPool::new(cpus.clone()).unwrap();
    let spin = Task::new(OrtModel::builder(&path).spin(true).build().unwrap(), pair()).unwrap();
    let nospin = Task::new(
        OrtModel::builder(&path).spin(false).build().unwrap(),
        pair(),
    )
    .unwrap();
    let model = Arc::new(OrtModel::load(&path).unwrap());
    note_shape(&model);
    let msm = MultiStreamModule::builder(Arc::clone(&model))
        .pool(pair())
        .num_streams(Streams::Count(2))
        .build()
        .unwrap();
    let t0 = Task::new(Arc::clone(&model), CpuPool::new([cpus[0]]).unwrap()).unwrap();
    let t1 = Task::new(Arc::clone(&model), CpuPool::new([cpus[1]]).unwrap()).unwrap();
    let x1 = image_batch(1);
    let x16 = image_batch(16);
    type Config<'a> = (String, usize, Box<dyn FnMut() + 'a>);
    let mut configs: Vec<Config<'_>> = Vec::new();
    for (b, x) in [(1, &x1), (16, &x16)] {
        configs.push((
            format!("1 stream x 2 cpus, spin on   B={b}"),
            b,
            Box::new(|| drop(spin.run_sync(vec![x.clone()]).unwrap())),
        ));
        configs.push((
            format!("1 stream x 2 cpus, spin off  B={b}"),
            b,
            Box::new(|| drop(nospin.run_sync(vec![x.clone()]).unwrap())),
        ));
        configs.push((
            format!("2 streams x 1 cpu (MSM split) B={b}"),
            b,
            Box::new(|| drop(msm.forward_sync(vec![x.clone()]).unwrap())),
        ));
    }
    // B=1 requests, one in flight per stream (a MultiStreamModule sends a batch of 1 to its
    // first stream only; a Batcher or per-stream Tasks spread single requests).
    configs.push((
        "2 streams x 1 cpu, 2 requests in flight B=1".into(),
        2,
        Box::new(|| {
            let a = t0.submit(vec![x1.clone()]);
            let b = t1.submit(vec![x1.clone()]);
            a.wait().unwrap();
            b.wait().unwrap();
        }),
    ));
    for (_, b, f) in &mut configs {
        run_for(*b, 0.3, f.as_mut()); // warm-up: sessions, arenas
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for _ in 0..rounds {
        for ((_, b, f), r) in configs.iter_mut().zip(&mut results) {
            r.push(run_for(*b, 1.0, f.as_mut()));
        }
    }
    for ((label, _, _), mut r) in configs.iter().zip(results) {
        r.sort_by(f64::total_cmp);
        println!(
            "{name} {label}: best {:.1}  median {:.1} images/s",
            r[r.len() - 1],
            r[r.len() / 2]
        );
    }
    println!("{name} shared model sessions: {}", model.session_count());
}

#[test]
#[ignore = "measurement; run in release mode with --ignored"]
fn rss() {
    let Some(path) = resnet() else { return };
    let scenario = std::env::var("CORESTREAM_RSS").unwrap_or_else(|_| "shared".into());
    let all = CpuPool::all().unwrap();
    let c0 = all.cpus()[0];
    let c1 = *all.cpus().get(1).unwrap_or(&c0);
    let x = || vec![image_batch(1)];
    let base = rss_mb();
    println!("[{scenario}] library loaded: {base:.0} MB");
    let report = |what: &str| println!("[{scenario}] {what}: {:.0} MB", rss_mb());
    match scenario.as_str() {
        "shared" => {
            let model = Arc::new(OrtModel::load(&path).unwrap());
            report("model built");
            let one = Task::new(Arc::clone(&model), CpuPool::new([c0]).unwrap()).unwrap();
            one.run_sync(x()).unwrap();
            report("1 stream x 1 cpu ran");
            let two = Task::new(Arc::clone(&model), CpuPool::new([c1]).unwrap()).unwrap();
            let (a, b) = (one.submit(x()), two.submit(x()));
            a.wait().unwrap();
            b.wait().unwrap();
            report("2 streams x 1 cpu ran (concurrently)");
            println!("[{scenario}] sessions: {}", model.session_count());
        }
        "k2" | "k2-noprepack" | "k2-noshare" => {
            let model = Arc::new(
                OrtModel::builder(&path)
                    .share_prepacked_weights(scenario != "k2-noprepack")
                    .share_weights(scenario != "k2-noshare")
                    .build()
                    .unwrap(),
            );
            report("model built");
            let one = Task::new(Arc::clone(&model), CpuPool::new([c0, c1]).unwrap()).unwrap();
            one.run_sync(x()).unwrap();
            report("1 stream x 2 cpus ran");
            let two = Task::new(Arc::clone(&model), CpuPool::new([c1, c0]).unwrap()).unwrap();
            two.run_sync(x()).unwrap();
            report("a 2nd 2-cpu stream ran (its own session)");
            println!("[{scenario}] sessions: {}", model.session_count());
            println!("[{scenario}] weight sharing: {:?}", model.weight_sharing());
        }
        "separate" => {
            let a = OrtModel::load(&path).unwrap();
            let ta = Task::new(a, CpuPool::new([c0]).unwrap()).unwrap();
            ta.run_sync(x()).unwrap();
            report("model A (1 cpu) ran");
            let b = OrtModel::load(&path).unwrap();
            let tb = Task::new(b, CpuPool::new([c1]).unwrap()).unwrap();
            tb.run_sync(x()).unwrap();
            report("separate model B (1 cpu) ran: weights twice");
        }
        other => panic!("unknown CORESTREAM_RSS={other}"),
    }
}
