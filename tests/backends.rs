//! Both backends on the same models and inputs: ONNX Runtime (through `MultiStreamModule` with 1
//! and 2 streams and through `Batcher`) against its own plain call (relative 1e-5), and tract
//! against ONNX Runtime (relative 1e-4 of the output's largest magnitude, the README's
//! tolerance between backends). The user-facing promise checked here: switching backends
//! changes the constructor line only, inputs and outputs are the same `backend::Tensor`s.
//!
//! Skips with a notice when no ONNX Runtime library is found; fails instead with
//! `CORESTREAM_REQUIRE_ORT=1`. ResNet-18 and MiniLM-L3 run when `scripts/fetch-models.sh` has
//! put them in `models/`.
#![cfg(all(feature = "ort", feature = "tract"))]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::have_ort;
use corestream::backend::ort::OrtModel;
use corestream::backend::tract::OnnxModel;
use corestream::backend::Tensor;
use corestream::ndarray::{ArrayD, IxDyn};
use corestream::{Batcher, CpuPool, Module, MultiStreamModule, Streams};

type Model = Arc<dyn Module<Input = Vec<Tensor>, Output = Vec<Tensor>>>;

/// The model file, or `None` (with a notice) when it has not been fetched.
fn model_file(rel: &str) -> Option<String> {
    let path = format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"));
    if Path::new(&path).exists() {
        Some(path)
    } else {
        eprintln!("skipped: {path} missing (scripts/fetch-models.sh)");
        None
    }
}

/// Deterministic pseudo-random f32 data in [-1, 1).
fn floats(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Tensor::from(ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }))
}

/// MiniLM-style token ids (`[CLS]` first) and a full attention mask.
fn tokens(batch: usize, len: usize) -> Vec<Tensor> {
    let ids = ArrayD::from_shape_fn(IxDyn(&[batch, len]), |ix| {
        if ix[1] == 0 {
            101
        } else {
            1000 + ((ix[0] * 37 + ix[1] * 11) % 20000) as i64
        }
    });
    vec![
        Tensor::from(ids),
        Tensor::from(ArrayD::<i64>::ones(IxDyn(&[batch, len]))),
    ]
}

/// Largest |a - b| over the largest |b| (at least 1) for f32 outputs; other outputs (MiniLM
/// also returns shapes as i64) must be equal.
fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    if b.element_type() != corestream::backend::ElementType::F32 {
        assert_eq!(a, b);
        return 0.0;
    }
    let (a, b) = (a.view::<f32>().unwrap(), b.view::<f32>().unwrap());
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

fn assert_close(got: &[Tensor], want: &[Tensor], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: output count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = rel_diff(g, w);
        assert!(
            d <= tol,
            "{what}: output {i} differs by {d} (relative), allowed {tol}"
        );
    }
}

fn pool() -> CpuPool {
    CpuPool::all().unwrap()
}

/// The same input through every way of running `model`, against `reference`.
fn check_runs(model: Model, inputs: &[Tensor], reference: &[Tensor], tol: f32, what: &str) {
    let plain = model.forward(inputs.to_vec()).unwrap();
    assert_close(&plain, reference, tol, &format!("{what} plain"));
    for streams in 1..=pool().len().min(2) {
        let msm = MultiStreamModule::builder(Arc::clone(&model))
            .pool(pool())
            .num_streams(Streams::Count(streams))
            .build()
            .unwrap();
        let y = msm.forward_sync(inputs.to_vec()).unwrap();
        assert_close(&y, reference, tol, &format!("{what} {streams} streams"));
    }
    // Single rows from many callers, batched by the Batcher: each answer is its own row.
    let msm = MultiStreamModule::builder(Arc::clone(&model))
        .pool(pool())
        .build()
        .unwrap();
    let batcher = Batcher::builder(msm).max_batch(4).build().unwrap();
    let rows = reference[0].shape()[0];
    let split = |ts: &[Tensor]| -> Vec<Vec<Tensor>> {
        let parts: Vec<Vec<Tensor>> = ts
            .iter()
            .map(|t| {
                corestream::Batch::split(t.clone(), &corestream::Hint::Dim(0), &vec![1; rows])
                    .unwrap()
            })
            .collect();
        (0..rows)
            .map(|r| parts.iter().map(|p| p[r].clone()).collect())
            .collect()
    };
    let futures: Vec<_> = split(inputs)
        .into_iter()
        .map(|row| batcher.infer(row))
        .collect();
    for (r, (fut, want)) in futures.into_iter().zip(split(reference)).enumerate() {
        let got = fut.wait().unwrap();
        assert_close(&got, &want, tol, &format!("{what} batcher row {r}"));
    }
}

/// ORT's plain call is the reference; ORT's other runs match it at 1e-5, tract's at 1e-4.
fn compare(path: &str, inputs: Vec<Tensor>, what: &str) {
    let ort: Model = Arc::new(OrtModel::load(path).unwrap());
    let tract: Model = Arc::new(OnnxModel::load(path).unwrap());
    let reference = ort.forward(inputs.clone()).unwrap();
    check_runs(ort, &inputs, &reference, 1e-5, &format!("{what} ort"));
    check_runs(tract, &inputs, &reference, 1e-4, &format!("{what} tract"));
}

#[test]
fn examplenet1_same_on_both_backends() {
    if !have_ort() {
        return;
    }
    let path = model_file("assets/models/examplenet1.onnx").unwrap();
    compare(&path, vec![floats(&[5, 64, 3, 3], 1)], "examplenet1");
}

#[test]
fn examplenet2_same_on_both_backends() {
    if !have_ort() {
        return;
    }
    let path = model_file("assets/models/examplenet2.onnx").unwrap();
    let inputs = vec![floats(&[5, 64, 3, 3], 2), floats(&[5, 64, 3, 3], 3)];
    compare(&path, inputs, "examplenet2");
}

#[test]
fn resnet18_same_on_both_backends() {
    if !have_ort() {
        return;
    }
    let Some(path) = model_file("models/resnet18.onnx") else {
        return;
    };
    compare(&path, vec![floats(&[3, 3, 224, 224], 4)], "resnet18");
}

#[test]
fn minilm_same_on_both_backends() {
    if !have_ort() {
        return;
    }
    let Some(path) = model_file("models/paraphrase-MiniLM-L3-v2.onnx") else {
        return;
    };
    compare(&path, tokens(5, 16), "minilm");
}

#[test]
fn wrong_inputs_are_the_same_typed_errors_on_both_backends() {
    if !have_ort() {
        return;
    }
    let path = model_file("assets/models/examplenet1.onnx").unwrap();
    let ort: Model = Arc::new(OrtModel::load(&path).unwrap());
    let tract: Model = Arc::new(OnnxModel::load(&path).unwrap());
    let cases: Vec<(Vec<Tensor>, &str)> = vec![
        (vec![], "the model takes 1 inputs"),
        (vec![floats(&[2, 64, 3], 5)], "expected"),
        (
            vec![Tensor::zeros::<i64>(&[2, 64, 3, 3])],
            "got 2,64,3,3 i64",
        ),
    ];
    for (inputs, needle) in cases {
        let e_ort = corestream::Error::from(ort.forward(inputs.clone()).unwrap_err());
        let e_tract = corestream::Error::from(tract.forward(inputs).unwrap_err());
        for e in [&e_ort, &e_tract] {
            assert!(
                matches!(
                    e,
                    corestream::Error::InputCount { .. } | corestream::Error::InvalidInput { .. }
                ),
                "{e}"
            );
            assert!(e.to_string().contains(needle), "{e}");
        }
        assert_eq!(
            std::mem::discriminant(&e_ort),
            std::mem::discriminant(&e_tract),
            "{e_ort} vs {e_tract}"
        );
    }
}
