//! corestream inside actix-web handlers: a `MultiStreamModule` and a `Batcher` built ONCE,
//! outside `HttpServer::new`'s factory (which runs once per worker: building them inside would
//! start one set of pinned streams per worker), shared through `web::Data`, and awaited in
//! handlers; `join!` across two `Task`s on two pools. The library only; the full service is
//! `corestream serve --server actix` (crate corestream-serve).
//!
//! ```text
//! cargo run --release -p corestream-serve --example actix_handler
//! curl -s localhost:3001/batch -d '[[1, 2], [3, 4], [5, 6]]'
//! curl -s localhost:3001/batcher -d '[1, 2, 3]'
//! curl -s localhost:3001/both -d '[1, 2, 3]'
//! ```

use actix_web::{error, web, App, HttpServer};
use corestream::batch::Rows;
use corestream::ndarray::Array2;
use corestream::{module_fn, Batcher, CpuPool, FnModule, MultiStreamModule, Task};

/// A stand-in model: each value doubled. Any `corestream::Module` goes here.
type Double<I> = FnModule<fn(I) -> Result<I, corestream::BoxError>, I, I>;

fn double_rows(x: Rows<Vec<f32>>) -> Result<Rows<Vec<f32>>, corestream::BoxError> {
    Ok(Rows(
        x.0.into_iter()
            .map(|r| r.iter().map(|v| 2.0 * v).collect())
            .collect(),
    ))
}

fn double_array(x: Array2<f32>) -> Result<Array2<f32>, corestream::BoxError> {
    Ok(x.mapv(|v| 2.0 * v))
}

struct Shared {
    msm: MultiStreamModule<Double<Array2<f32>>>,
    batcher: Batcher<Double<Rows<Vec<f32>>>>,
    left: Task<Double<Rows<Vec<f32>>>>,
    right: Task<Double<Rows<Vec<f32>>>>,
}

fn failed(e: corestream::Error) -> actix_web::Error {
    match e {
        corestream::Error::Overloaded { .. } => error::ErrorServiceUnavailable(e.to_string()),
        _ => error::ErrorInternalServerError(e.to_string()),
    }
}

async fn batch(
    s: web::Data<Shared>,
    x: web::Json<Vec<Vec<f32>>>,
) -> actix_web::Result<web::Json<Vec<Vec<f32>>>> {
    let cols = x.first().map_or(0, Vec::len);
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let x = Array2::from_shape_vec((x.len(), cols), flat).map_err(error::ErrorBadRequest)?;
    // Rows split across the streams; this worker's event loop keeps serving meanwhile.
    let y = s.msm.forward(x).await.map_err(failed)?;
    Ok(web::Json(y.outer_iter().map(|r| r.to_vec()).collect()))
}

async fn batcher(
    s: web::Data<Shared>,
    x: web::Json<Vec<f32>>,
) -> actix_web::Result<web::Json<Vec<f32>>> {
    let y = s
        .batcher
        .infer(Rows(vec![x.into_inner()]))
        .await
        .map_err(failed)?;
    Ok(web::Json(y.0.into_iter().next().unwrap_or_default()))
}

async fn both(
    s: web::Data<Shared>,
    x: web::Json<Vec<f32>>,
) -> actix_web::Result<web::Json<[Vec<f32>; 2]>> {
    let x = x.into_inner();
    let (a, b) = futures_join(
        s.left.submit(Rows(vec![x.clone()])),
        s.right.submit(Rows(vec![x])),
    )
    .await;
    let (a, b) = (a.map_err(failed)?, b.map_err(failed)?);
    Ok(web::Json([a.0[0].clone(), b.0[0].clone()]))
}

/// `join!` on actix-web's runtime (it is tokio underneath).
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let all = CpuPool::all()?;
    let halves = all
        .split(2)
        .unwrap_or_else(|_| vec![all.clone(), all.clone()]);
    // Built once, here, and shared by every worker's App.
    let shared = web::Data::new(Shared {
        msm: MultiStreamModule::builder(module_fn(double_array as _))
            .pool(all.clone())
            .build()?,
        batcher: Batcher::builder(
            MultiStreamModule::builder(module_fn(double_rows as _))
                .pool(all)
                .build()?,
        )
        .max_batch(16)
        .build()?,
        left: Task::new(module_fn(double_rows as _), halves[0].clone())?,
        right: Task::new(module_fn(double_rows as _), halves[1].clone())?,
    });
    println!("listening on http://127.0.0.1:3001");
    HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .route("/batch", web::post().to(batch))
            .route("/batcher", web::post().to(batcher))
            .route("/both", web::post().to(both))
    })
    // Few workers: each is an event loop that would otherwise compete with the pinned streams.
    .workers(1)
    .bind("127.0.0.1:3001")?
    .run()
    .await?;
    Ok(())
}
