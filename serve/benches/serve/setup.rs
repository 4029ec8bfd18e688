//! What every part serves: the model as one type, the setup (model, backend, CPUs, streams),
//! the batching options, the service over it, and the backend's offline ceiling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{CpuPool, Module, MultiStreamModule, Streams, Width};
use corestream_serve::model::{embedder, Encoded, ModelKind, TextTokenizer};
use corestream_serve::service::{serve_model, BatchOptions, Loaded, Monitor, Service};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::load::launch;

/// A model of the served kind, as one type.
#[derive(Clone)]
pub struct Model(pub Arc<dyn Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>>);

impl Module for Model {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, corestream::BoxError> {
        self.0.forward(x)
    }
}

pub struct Setup {
    pub name: &'static str,
    pub kind: ModelKind,
    pub backend: String,
    pub load_model: Box<dyn Fn() -> (Model, TextTokenizer)>,
    pub pool: CpuPool,
    pub streams: Streams,
}

pub fn options(
    setup: &Setup,
    max_batch: usize,
    tokens: Option<usize>,
    count_only: bool,
) -> BatchOptions {
    BatchOptions {
        pool: setup.pool.clone(),
        streams: setup.streams,
        max_batch,
        max_batch_tokens: tokens,
        max_wait: Duration::ZERO,
        queue: 1024,
        max_client_batch: 64,
        auto_truncate: true,
        count_only,
        width: width(),
        tune: None,
    }
}

/// The width of the service's batches: `CORESTREAM_LOAD_WIDTH` (`adaptive`, the default, as
/// `corestream serve` runs; `narrow`; `wide`), wide batches of at most
/// `CORESTREAM_LOAD_WIDE_ROWS` rows (default `corestream serve`'s).
pub fn width() -> Width {
    let rows = crate::load::env_or(
        "CORESTREAM_LOAD_WIDE_ROWS",
        corestream_serve::DEFAULT_WIDE_MAX_ROWS as u64,
    ) as usize;
    match std::env::var("CORESTREAM_LOAD_WIDTH").as_deref() {
        Ok("narrow") => Width::Narrow,
        Ok("wide") => Width::Wide,
        _ => Width::adaptive(rows),
    }
}

/// Serves the model behind a batcher as `options` say; also returns the naive baseline over
/// a second copy of the model when `naive`.
pub fn serve(
    setup: &Setup,
    label: &str,
    options: &BatchOptions,
    naive: bool,
) -> (String, Option<Loaded>) {
    let (model, tokenizer) = (setup.load_model)();
    let mut loaded =
        serve_model(model, tokenizer, label, setup.backend.clone(), options).expect("batcher");
    loaded.set_kind(setup.kind.clone());
    let stats = loaded.monitor.clone();
    if let Some(s) = &stats {
        STATS
            .lock()
            .expect("stats")
            .push((label.to_owned(), Arc::clone(s)));
    }
    let info = loaded.info.clone();
    let tokenizer = Arc::clone(&loaded.tokenizer);
    let base = launch(Service::ready(loaded, Arc::new(String::new)));
    let handle = naive.then(|| Loaded {
        embedder: Arc::new(embedder::Naive(Arc::new(setup.load_model.as_ref()().0))),
        tokenizer,
        info,
        monitor: None,
        prompts: Default::default(),
        kind: Default::default(),
    });
    (base, handle)
}

/// Rows/s of the backend alone on `setup`'s streams at `batch` rows per stream call.
pub async fn ceiling(setup: &Setup, ids: &[Vec<u32>], batch: usize, secs: u64) -> f64 {
    let (model, _) = (setup.load_model)();
    let msm = MultiStreamModule::builder(model)
        .pool(setup.pool.clone())
        .num_streams(setup.streams)
        .build()
        .expect("streams");
    let rows = batch * msm.num_streams();
    let input = Rows(
        (0..rows)
            .map(|i| Encoded::single(ids[i % ids.len()].clone()))
            .collect::<Vec<_>>(),
    );
    offline(&msm, &[input], secs).await
}

/// Rows/s of `msm` running `inputs` over and over, in turn, two calls in flight so that no
/// stream waits.
pub async fn offline(msm: &MultiStreamModule<Model>, inputs: &[Rows<Encoded>], secs: u64) -> f64 {
    for input in inputs {
        msm.forward(input.clone()).await.expect("warm-up");
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut done = 0u64;
    let mut next = (0..inputs.len()).cycle();
    let run = |i: usize| async move { (i, msm.forward(inputs[i].clone()).await) };
    for _ in 0..2 {
        in_flight.push(run(next.next().expect("an input")));
    }
    while let Some((i, r)) = in_flight.next().await {
        r.expect("offline run");
        done += inputs[i].0.len() as u64;
        if Instant::now() < deadline {
            in_flight.push(run(next.next().expect("an input")));
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The batchers' counters by name (the service keeps them in `Loaded::monitor`).
pub fn fast_stats(name: &str) -> corestream::BatcherStats {
    STATS
        .lock()
        .expect("stats")
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, m)| m.stats())
        .expect("a served batcher of that name")
}

pub static STATS: std::sync::Mutex<Vec<(String, Arc<dyn Monitor>)>> =
    std::sync::Mutex::new(Vec::new());

pub fn served_batch(s: &corestream::BatcherStats) -> f64 {
    s.batch_rows as f64 / s.batches.max(1) as f64
}
