//! NUMA copies of the backends' models: an ONNX Runtime and a tract model on two streams that
//! the module sees on two nodes (the live machine's first two CPUs, see `common::two_nodes`)
//! make a copy for the second node, and both streams answer as a plain call does.
#![cfg(any(feature = "ort", feature = "tract"))]

mod common;

use corestream::backend::Tensor;
use corestream::ndarray::{ArrayD, IxDyn};
use corestream::numa::Weights;
use corestream::{Module, MultiStreamModule, Streams};

use common::two_nodes;

fn input(rows: usize) -> Vec<Tensor> {
    let x = ArrayD::from_shape_fn(IxDyn(&[rows, 64, 3, 3]), |i| {
        ((i[0] * 577 + i[1] * 31 + i[2] * 7 + i[3]) as f32 * 0.37).sin()
    });
    vec![Tensor::from(x)]
}

fn assert_close(got: &[Tensor], want: &[Tensor]) {
    let (got, want) = (
        got[0].view::<f32>().unwrap(),
        want[0].view::<f32>().unwrap(),
    );
    assert_eq!(got.shape(), want.shape());
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
}

/// Builds `model` on two streams seen on two nodes, checks the second runs a copy, and that
/// both streams answer as `model` alone does.
fn copies_answer_alike<M>(model: M)
where
    M: Module<Input = Vec<Tensor>, Output = Vec<Tensor>>,
{
    let Some((topology, pool)) = two_nodes() else {
        return;
    };
    let want = model.forward(input(6)).unwrap();
    for replicas in [true, false] {
        let msm = MultiStreamModule::builder(model.replicate().unwrap().unwrap())
            .pool(pool.clone())
            .num_streams(Streams::Count(2))
            .topology(topology.clone())
            .numa_replicas(replicas)
            .build()
            .unwrap();
        let plan = msm.replicas();
        assert_eq!(plan.copies(), if replicas { 2 } else { 1 }, "{plan}");
        assert_eq!(
            matches!(plan.replicas()[1].weights, Weights::Copy(_)),
            replicas,
            "{plan}"
        );
        for _ in 0..3 {
            assert_close(&msm.forward_sync(input(6)).unwrap(), &want);
        }
    }
}

#[cfg(feature = "ort")]
#[test]
fn onnx_runtime_models_copy_themselves() {
    if !common::have_ort() {
        return;
    }
    let path = format!(
        "{}/assets/models/examplenet1.onnx",
        env!("CARGO_MANIFEST_DIR")
    );
    copies_answer_alike(corestream::backend::ort::OrtModel::load(&path).unwrap());
    let bytes =
        corestream::backend::ort::OrtModel::builder_from_bytes(corestream::bundled::EXAMPLENET1);
    copies_answer_alike(bytes.build().unwrap());
}

#[cfg(feature = "tract")]
#[test]
fn tract_models_copy_themselves() {
    let path = format!(
        "{}/assets/models/examplenet1.onnx",
        env!("CARGO_MANIFEST_DIR")
    );
    copies_answer_alike(corestream::backend::tract::OnnxModel::load(&path).unwrap());
    let bytes =
        corestream::backend::tract::OnnxModel::builder_from_bytes(corestream::bundled::EXAMPLENET1);
    copies_answer_alike(bytes.build().unwrap());
}
