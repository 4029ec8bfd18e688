//! The anchor doc's asynchronous-task and pin examples in Rust: two pools, two tasks, two
//! futures, get both; then the same with `tokio::join!`, a sync `.wait()`, and `pin`.
//!
//! Run: `cargo run --release --example async_tasks`

mod nets;

use std::sync::Arc;

use corestream::{pin, CpuPool, Module, Task};
use nets::{input, max_diff, ExampleNet1};

#[tokio::main(flavor = "current_thread")]
async fn main() -> corestream::Result<()> {
    let x = input(16, 0);
    // The anchor uses CPUPool([0, 1, 2, 3]) and CPUPool([4, 5, 6, 7]); here the machine's
    // cores are cut in two (or shared, on a one-core machine).
    let all = CpuPool::all()?;
    let (cpu_pool1, cpu_pool2) = match all.split(2) {
        Ok(halves) => (halves[0].clone(), halves[1].clone()),
        Err(_) => (all.clone(), all),
    };
    // One model, shared by both tasks (weights are not copied).
    let traced_model1 = Arc::new(ExampleNet1::new());
    let task1 = Task::new(Arc::clone(&traced_model1), cpu_pool1.clone())?;
    let task2 = Task::new(Arc::clone(&traced_model1), cpu_pool2.clone())?;

    // y1_future = task1(x); y2_future = task2(x); y1 = y1_future.get(); y2 = y2_future.get()
    let y1_future = task1.submit(x.clone());
    let y2_future = task2.submit(x.clone());
    let y1 = y1_future.await?;
    let y2 = y2_future.await?;
    println!(
        "tasks on {cpu_pool1} and {cpu_pool2}: y1 {:?}, y2 {:?}, equal: {}",
        y1.shape(),
        y2.shape(),
        y1 == y2
    );

    // Both at once across pools.
    let (a, b) = tokio::join!(task1.submit(x.clone()), task2.submit(x.clone()));
    println!("tokio::join!: {:?} {:?}", a?.shape(), b?.shape());

    // Sync code: .wait() is the anchor's FutureTensor.get().
    let y = std::thread::spawn(move || task1.submit(input(16, 0)).wait())
        .join()
        .map_err(|_| corestream::Error::Shutdown)??;
    println!("wait() from a plain thread: {:?}", y.shape());

    // with ipex.cpu.runtime.pin(cpu_pool): y_runtime = traced_model1(x)
    let cpu_pool = CpuPool::from_node(0)?;
    let y_runtime = pin(&cpu_pool, || traced_model1.forward(x.clone()))??;
    println!(
        "pin({cpu_pool}): y {:?}, max |y - task| = {:e}",
        y_runtime.shape(),
        max_diff(&y_runtime, &y1)
    );
    Ok(())
}
