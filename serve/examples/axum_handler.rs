//! corestream inside axum handlers: a `Task` (one pinned stream), a `MultiStreamModule` (a
//! batch split across streams) and a `Batcher` (concurrent requests stacked into batches), each
//! awaited in a handler without blocking the reactor, and `join!` across two pools.
//! The library only; the full service is `corestream serve` (crate corestream-serve).
//!
//! ```text
//! cargo run --release -p corestream-serve --example axum_handler
//! curl -s localhost:3000/task -d '[1, 2, 3]'
//! curl -s localhost:3000/batch -d '[[1, 2], [3, 4], [5, 6]]'
//! curl -s localhost:3000/batcher -d '[1, 2, 3]'
//! curl -s localhost:3000/both -d '[1, 2, 3]'
//! ```

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use corestream::batch::Rows;
use corestream::ndarray::Array2;
use corestream::{module_fn, Batcher, CpuPool, FnModule, MultiStreamModule, Streams, Task};

/// A stand-in model: each value squared. Any `corestream::Module` goes here (an ONNX model on
/// `corestream::backend`, a tract or ort model, a closure).
type Square<I> = FnModule<fn(I) -> Result<I, corestream::BoxError>, I, I>;

fn square_rows(x: Rows<Vec<f32>>) -> Result<Rows<Vec<f32>>, corestream::BoxError> {
    Ok(Rows(
        x.0.into_iter()
            .map(|r| r.iter().map(|v| v * v).collect())
            .collect(),
    ))
}

fn square_array(x: Array2<f32>) -> Result<Array2<f32>, corestream::BoxError> {
    Ok(x.mapv(|v| v * v))
}

struct AppState {
    /// One stream on the first half of the CPUs.
    task: Task<Square<Rows<Vec<f32>>>>,
    /// One stream on the other half, for `join!` across pools.
    other: Task<Square<Rows<Vec<f32>>>>,
    /// A batch split across one stream per CPU.
    msm: MultiStreamModule<Square<Array2<f32>>>,
    /// Requests stacked into batches of up to 16 rows, run on the streams.
    batcher: Batcher<Square<Rows<Vec<f32>>>>,
}

type Reply<T> = Result<Json<T>, (StatusCode, String)>;

/// corestream's errors are typed; a handler turns them into a status.
fn failed(e: corestream::Error) -> (StatusCode, String) {
    let status = match e {
        corestream::Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string())
}

async fn task(State(s): State<Arc<AppState>>, Json(x): Json<Vec<f32>>) -> Reply<Vec<f32>> {
    // `submit` returns a future: awaiting it parks this handler, not the worker thread.
    let y = s.task.submit(Rows(vec![x])).await.map_err(failed)?;
    Ok(Json(y.0.into_iter().next().unwrap_or_default()))
}

async fn batch(
    State(s): State<Arc<AppState>>,
    Json(x): Json<Vec<Vec<f32>>>,
) -> Reply<Vec<Vec<f32>>> {
    let cols = x.first().map_or(0, Vec::len);
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let x = Array2::from_shape_vec((x.len(), cols), flat).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("rows of unequal length: {e}"),
        )
    })?;
    // Rows split across the streams, outputs concatenated in order.
    let y = s.msm.forward(x).await.map_err(failed)?;
    Ok(Json(y.outer_iter().map(|r| r.to_vec()).collect()))
}

async fn batcher(State(s): State<Arc<AppState>>, Json(x): Json<Vec<f32>>) -> Reply<Vec<f32>> {
    // Concurrent calls are stacked into one model call; each gets its own row back.
    let y = s.batcher.infer(Rows(vec![x])).await.map_err(failed)?;
    Ok(Json(y.0.into_iter().next().unwrap_or_default()))
}

async fn both(State(s): State<Arc<AppState>>, Json(x): Json<Vec<f32>>) -> Reply<[Vec<f32>; 2]> {
    // Two pools at once: both futures run concurrently on their own cores.
    let (a, b) = tokio::join!(
        s.task.submit(Rows(vec![x.clone()])),
        s.other.submit(Rows(vec![x]))
    );
    let (a, b) = (a.map_err(failed)?, b.map_err(failed)?);
    Ok(Json([a.0[0].clone(), b.0[0].clone()]))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let all = CpuPool::all()?;
    let halves = all
        .split(2)
        .unwrap_or_else(|_| vec![all.clone(), all.clone()]);
    let state = Arc::new(AppState {
        task: Task::new(module_fn(square_rows as _), halves[0].clone())?,
        other: Task::new(module_fn(square_rows as _), halves[1].clone())?,
        msm: MultiStreamModule::builder(module_fn(square_array as _))
            .pool(all.clone())
            .num_streams(Streams::Auto)
            .build()?,
        batcher: Batcher::builder(
            MultiStreamModule::builder(module_fn(square_rows as _))
                .pool(all)
                .build()?,
        )
        .max_batch(16)
        .build()?,
    });
    let app = Router::new()
        .route("/task", post(task))
        .route("/batch", post(batch))
        .route("/batcher", post(batcher))
        .route("/both", post(both))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
