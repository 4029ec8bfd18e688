//! The anchor doc's MultiStreamModule Examples 1-3 in Rust, on ndarray stand-ins for
//! ExampleNet1/ExampleNet2 (real 3x3 convolutions), in the doc's order.
//!
//! Run: `cargo run --release --example multi_stream`

mod nets;

use corestream::{CpuPool, Hint, Module, MultiStreamModule, Streams};
use nets::{input, max_diff, ExampleNet1, ExampleNet2};

fn main() -> corestream::Result<()> {
    let x = input(16, 0);
    let x2 = input(16, 1);

    // Example 1: basic usage. A pool with the physical cores of NUMA node 0, two streams
    // (fewer when the pool has only one core: more streams than cores is an error).
    let cpu_pool = CpuPool::from_node(0)?;
    let streams = cpu_pool.len().min(2);
    let multi_stream_model = MultiStreamModule::builder(ExampleNet1::new())
        .num_streams(Streams::Count(streams))
        .pool(cpu_pool.clone())
        .build()?;
    let y = multi_stream_model.forward_sync(x.clone())?;
    let reference = ExampleNet1::new().forward(x.clone())?;
    println!(
        "example 1: {} streams on {:?}: y {:?}, max |y - direct| = {:e}",
        multi_stream_model.num_streams(),
        multi_stream_model.pools(),
        y.shape(),
        max_diff(&y, &reference)
    );

    // Example 2: the defaults: Streams::Auto (one stream per core) on node 0.
    let multi_stream_model = MultiStreamModule::builder(ExampleNet1::new()).build()?;
    let y = multi_stream_model.forward_sync(x.clone())?;
    println!(
        "example 2: AUTO chose {} streams: y {:?}, max |y - direct| = {:e}",
        multi_stream_model.num_streams(),
        y.shape(),
        max_diff(&y, &reference)
    );

    // Example 3: structured inputs and outputs with hints. The anchor's
    // MultiStreamModuleHint(0, 0) and MultiStreamModuleHint((0, 0)).
    let input_hint = Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]);
    let output_hint = Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]);
    let multi_stream_model = MultiStreamModule::builder(ExampleNet2::new())
        .num_streams(Streams::Count(streams))
        .pool(cpu_pool)
        .input_hint(input_hint)
        .output_hint(output_hint)
        .build()?;
    let (y1, y) = multi_stream_model.forward_sync((x.clone(), x2.clone()))?;
    let (r1, r) = ExampleNet2::new().forward((x, x2))?;
    println!(
        "example 3: y1 {:?}, y {:?}, max |diff| = {:e}, {:e}",
        y1.shape(),
        y.shape(),
        max_diff(&y1, &r1),
        max_diff(&y, &r)
    );
    Ok(())
}
