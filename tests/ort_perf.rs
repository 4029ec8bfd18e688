//! Quick measurements of the ONNX Runtime backend on ResNet-18 (`models/resnet18.onnx`, from
//! `scripts/fetch-models.sh`), to choose defaults. Ignored by default; run in release mode:
//!
//! ```text
//! cargo test --release --features ort --test ort_perf -- --ignored --nocapture --test-threads 1
//! CORESTREAM_RSS=shared|k2|k2-noprepack|k2-noshare|separate cargo test --release --features ort \
//!     --test ort_perf rss -- --ignored --nocapture
//! ```
#![cfg(feature = "ort")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::backend::ort::{self as cs_ort, OrtModel};
use corestream::backend::Tensor;
use corestream::{CpuPool, MultiStreamModule, Streams, Task};

fn resnet() -> Option<String> {
    let path = format!("{}/models/resnet18.onnx", env!("CARGO_MANIFEST_DIR"));
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
    Tensor::zeros::<f32>(&[b, 3, 224, 224])
}

/// Images per second of `f` over `b` images per call: warm-up, then the best of 3 runs of
/// ~`secs` each (noisy machine).
fn measure(b: usize, secs: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..2 {
        f();
    }
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0usize;
        while t.elapsed() < Duration::from_secs_f64(secs) {
            f();
            n += b;
        }
        best = best.max(n as f64 / t.elapsed().as_secs_f64());
    }
    best
}

#[test]
#[ignore = "measurement; run in release mode with --ignored"]
fn throughput() {
    let Some(path) = resnet() else { return };
    let all = CpuPool::all().unwrap();
    if all.len() < 2 {
        eprintln!("skipped: needs 2 cpus");
        return;
    }
    let cpus = all.cpus()[..2].to_vec();
    let secs = 2.0;
    for spin in [true, false] {
        let model = OrtModel::builder(&path).spin(spin).build().unwrap();
        let task = Task::new(model, CpuPool::new(cpus.clone()).unwrap()).unwrap();
        for b in [1, 16] {
            let x = image_batch(b);
            let ips = measure(b, secs, || {
                task.run_sync(vec![x.clone()]).unwrap();
            });
            println!("resnet18 1 stream x 2 cpus spin={spin} B={b}: {ips:.1} images/s");
        }
    }
    let model = Arc::new(OrtModel::load(&path).unwrap());
    let msm = Arc::new(
        MultiStreamModule::builder(Arc::clone(&model))
            .pool(CpuPool::new(cpus.clone()).unwrap())
            .num_streams(Streams::Count(2))
            .build()
            .unwrap(),
    );
    for b in [1, 16] {
        let x = image_batch(b);
        let ips = measure(b, secs, || {
            msm.forward_sync(vec![x.clone()]).unwrap();
        });
        println!("resnet18 2 streams x 1 cpu B={b} (one caller): {ips:.1} images/s");
    }
    // B=1 from two concurrent callers, one per stream (a MultiStreamModule sends a batch of 1
    // to its first stream only; a Batcher or per-stream Tasks spread single requests).
    let t0 = Task::new(Arc::clone(&model), CpuPool::new([cpus[0]]).unwrap()).unwrap();
    let t1 = Task::new(Arc::clone(&model), CpuPool::new([cpus[1]]).unwrap()).unwrap();
    let x = image_batch(1);
    let ips = measure(2, secs, || {
        let a = t0.submit(vec![x.clone()]);
        let b = t1.submit(vec![x.clone()]);
        a.wait().unwrap();
        b.wait().unwrap();
    });
    println!(
        "resnet18 2 streams x 1 cpu B=1 (one request per stream in flight): {ips:.1} images/s"
    );
    println!("sessions: {}", model.session_count());
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
