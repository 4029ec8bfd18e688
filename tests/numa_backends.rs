//! NUMA copies of the backends' models: an ONNX Runtime and a tract model on two streams that
//! the module sees on two nodes (the live machine's first two CPUs, see `common::two_nodes`)
//! make a copy for the second node, and both streams answer as a plain call does.
#![cfg(any(feature = "ort", feature = "tract"))]

mod common;

use corestream::backend::Tensor;
use corestream::numa::Weights;
use corestream::{Module, MultiStreamModule, Streams};

use common::{assert_first_close as assert_close, examplenet1_input, two_nodes};

/// Builds `model` on two streams seen on two nodes, checks the second runs a copy, and that
/// both streams answer as `model` alone does.
fn copies_answer_alike<M>(model: M)
where
    M: Module<Input = Vec<Tensor>, Output = Vec<Tensor>>,
{
    let Some((topology, pool)) = two_nodes() else {
        return;
    };
    let want = model.forward(examplenet1_input(6, 0)).unwrap();
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
            assert_close(&msm.forward_sync(examplenet1_input(6, 0)).unwrap(), &want);
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
