//! ONNX Runtime under a batcher's wide batches (`Width`): one session across the module's
//! CPUs, the same answers as the narrow streams give, released with the batcher.
//!
//! Skips with a notice when no ONNX Runtime library is found (run
//! `scripts/fetch-onnxruntime.sh`), and fails instead when `CORESTREAM_REQUIRE_ORT=1`.
#![cfg(feature = "ort")]

mod common;

use std::sync::Arc;
use std::thread;

use corestream::backend::ort::OrtModel;
use corestream::{Batcher, CpuPool, MultiStreamModule, Streams, Width};

use common::{assert_first_close as assert_close, examplenet1_input as input, have_ort};

fn examplenet1() -> Arc<OrtModel> {
    let path = format!(
        "{}/assets/models/examplenet1.onnx",
        env!("CARGO_MANIFEST_DIR")
    );
    Arc::new(OrtModel::load(path).unwrap())
}

fn one_cpu_streams(model: &Arc<OrtModel>, cpus: &[usize]) -> MultiStreamModule<Arc<OrtModel>> {
    MultiStreamModule::builder(Arc::clone(model))
        .pool(CpuPool::new(cpus.iter().copied()).unwrap())
        .num_streams(Streams::Count(cpus.len()))
        .build()
        .unwrap()
}

#[test]
fn wide_batches_run_one_session_released_with_the_batcher() {
    if !have_ort() {
        return;
    }
    let all = CpuPool::all().unwrap();
    if all.len() < 2 {
        eprintln!("skipped: needs 2 CPUs, this process may use {all}");
        return;
    }
    let cpus = &all.cpus()[..2];
    let model = examplenet1();
    // The narrow answer: a plain call, on the model's one-thread session.
    let want = corestream::Module::forward(&*model, input(3, 1)).unwrap();
    let sessions = model.session_count();
    let batcher = Batcher::builder(one_cpu_streams(&model, cpus))
        .width(Width::Wide)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_close(&batcher.infer(input(3, 1)).wait().unwrap(), &want);
    }
    assert_eq!(batcher.stats().wide_batches, 3);
    // One more session, of two threads, for every wide batch.
    assert_eq!(model.session_count(), sessions + 1);
    drop(batcher);
    assert_eq!(
        model.session_count(),
        sessions,
        "the wide session goes with the batcher"
    );
}

/// Under concurrent callers an adaptive batcher mixes wide and narrow batches; every caller
/// gets the answer a plain call gives.
#[test]
fn adaptive_batches_answer_as_plain_calls_do() {
    if !have_ort() {
        return;
    }
    let all = CpuPool::all().unwrap();
    let model = examplenet1();
    let batcher = Arc::new(
        Batcher::builder(one_cpu_streams(&model, all.cpus()))
            .max_batch(8)
            .width(Width::adaptive(4))
            .build()
            .unwrap(),
    );
    let callers: Vec<_> = (0..6)
        .map(|c| {
            let (batcher, model) = (Arc::clone(&batcher), Arc::clone(&model));
            thread::spawn(move || {
                for i in 0..15 {
                    let rows = 1 + (c + i) % 3;
                    let want = corestream::Module::forward(&*model, input(rows, c * 100 + i));
                    let got = batcher.infer(input(rows, c * 100 + i)).wait();
                    assert_close(&got.unwrap(), &want.unwrap());
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    assert_eq!(batcher.stats().completed, 6 * 15);
    // A lone request on the quiet pool runs wide (on more than one CPU), once no stream sees
    // a neighbour on its CPU (the callers above can be one, for a quiet period of <= 0.5 s).
    if all.len() > 1 {
        let before = batcher.stats().wide_batches;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while batcher.stats().wide_batches == before && std::time::Instant::now() < deadline {
            batcher.infer(input(1, 7)).wait().unwrap();
            thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(batcher.stats().wide_batches > before);
    }
}
