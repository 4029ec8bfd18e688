//! The anchor doc's Examples 1-3, its asynchronous-task example and its pin example, on the
//! real ExampleNet1/ExampleNet2 ONNX models (tract backend), each checked against the direct
//! single-threaded run.
//!
//! Run: `cargo run --release --features tract --example anchor_doc`

use corestream::backend::tract::OnnxModel;
use corestream::backend::Tensor;
use corestream::{pin, CpuPool, Hint, Module, MultiStreamModule, Streams, Task};

const NET1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/examplenet1.onnx"
);
const NET2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/examplenet2.onnx"
);

/// torch.rand(16, 64, 3, 3), deterministically.
fn rand(batch: usize, seed: u64) -> corestream::Result<Tensor> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let data: Vec<f32> = (0..batch * 64 * 9)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor::from_shape_vec(&[batch, 64, 3, 3], data)
}

/// Largest absolute difference between two lists of f32 tensors.
fn max_diff(a: &[Tensor], b: &[Tensor]) -> corestream::Result<f32> {
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.view::<f32>()?, y.view::<f32>()?);
        worst = x
            .iter()
            .zip(y.iter())
            .fold(worst, |m, (p, q)| m.max((p - q).abs()));
    }
    Ok(worst)
}

fn shapes(ts: &[Tensor]) -> Vec<Vec<usize>> {
    ts.iter().map(|t| t.shape().to_vec()).collect()
}

fn main() -> corestream::Result<()> {
    let traced_model1 = OnnxModel::load(NET1)?;
    let x = rand(16, 1)?;
    let x2 = rand(16, 2)?;
    let reference1 = traced_model1.forward(vec![x.clone()])?;

    // Example 1: basic usage: node 0's cores, 2 streams (1 on a one-core machine).
    let cpu_pool = CpuPool::from_node(0)?;
    let streams = cpu_pool.len().min(2);
    let multi_stream_model = MultiStreamModule::builder(OnnxModel::load(NET1)?)
        .num_streams(Streams::Count(streams))
        .pool(cpu_pool.clone())
        .build()?;
    let y = multi_stream_model.forward_sync(vec![x.clone()])?;
    println!(
        "example 1: {streams} streams on {:?}: y {:?}, max |y - direct| = {:e}",
        multi_stream_model.pools(),
        shapes(&y),
        max_diff(&y, &reference1)?
    );

    // Example 2: the defaults: Streams::Auto on node 0.
    let multi_stream_model = MultiStreamModule::builder(OnnxModel::load(NET1)?).build()?;
    let y = multi_stream_model.forward_sync(vec![x.clone()])?;
    println!(
        "example 2: AUTO chose {} streams: y {:?}, max |y - direct| = {:e}",
        multi_stream_model.num_streams(),
        shapes(&y),
        max_diff(&y, &reference1)?
    );

    // Example 3: structured inputs/outputs: MultiStreamModuleHint(0, 0) in, ((0, 0)) out.
    let traced_model2 = OnnxModel::load(NET2)?;
    let reference2 = traced_model2.forward(vec![x.clone(), x2.clone()])?;
    let multi_stream_model = MultiStreamModule::builder(traced_model2)
        .num_streams(Streams::Count(streams))
        .pool(cpu_pool.clone())
        .input_hint(Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]))
        .output_hint(Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]))
        .build()?;
    let y = multi_stream_model.forward_sync(vec![x.clone(), x2])?;
    println!(
        "example 3: (y1, y) {:?}, max |diff| = {:e}",
        shapes(&y),
        max_diff(&y, &reference2)?
    );

    // Asynchronous tasks: two pools, two tasks, two futures, get both.
    let all = CpuPool::all()?;
    let (cpu_pool1, cpu_pool2) = match all.split(2) {
        Ok(halves) => (halves[0].clone(), halves[1].clone()),
        Err(_) => (all.clone(), all),
    };
    let shared = std::sync::Arc::new(traced_model1);
    let task1 = Task::new(std::sync::Arc::clone(&shared), cpu_pool1.clone())?;
    let task2 = Task::new(std::sync::Arc::clone(&shared), cpu_pool2.clone())?;
    let y1_future = task1.submit(vec![x.clone()]);
    let y2_future = task2.submit(vec![x.clone()]);
    let y1 = y1_future.wait()?;
    let y2 = y2_future.wait()?;
    println!(
        "tasks on {cpu_pool1} and {cpu_pool2}: max |diff| = {:e}, {:e}",
        max_diff(&y1, &reference1)?,
        max_diff(&y2, &reference1)?
    );

    // pin: with ipex.cpu.runtime.pin(cpu_pool): y_runtime = traced_model1(x)
    let y_runtime = pin(&cpu_pool, || shared.forward(vec![x.clone()]))??;
    println!(
        "pin({cpu_pool}): y {:?}, max |diff| = {:e}",
        shapes(&y_runtime),
        max_diff(&y_runtime, &reference1)?
    );
    Ok(())
}
