//! Batcher token budget: no batch over `max_batch` rows or `max_batch_tokens` (but a lone
//! over-budget request), every request answered once with its own rows (proptest), grouping
//! by length lowers padding, typed configuration errors, a panicking token function.

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corestream::ndarray::{Array2, Axis};
use corestream::{
    Batcher, BatcherBuilder, BoxError, CpuPool, Error, Module, MultiStreamModule, Streams,
    TaskFuture,
};
use proptest::prelude::*;

/// One batch as the model saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Request ids in the batch.
    requests: BTreeSet<u32>,
    rows: usize,
    /// The longest row length in the batch.
    longest: usize,
    /// Sum of the rows' own lengths.
    unpadded: usize,
}

/// Rows are `[request id, row length]`; the output is the input x 10. Records every batch and
/// waits on the gate (when there is one) before each call.
struct Lengths {
    seen: Mutex<Vec<Seen>>,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Module for Lengths {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            gate.recv()?;
        }
        let lens: Vec<usize> = x.column(1).iter().map(|&l| l as usize).collect();
        self.seen.lock().unwrap().push(Seen {
            requests: x.column(0).iter().map(|&id| id as u32).collect(),
            rows: x.nrows(),
            longest: lens.iter().copied().max().unwrap_or(0),
            unpadded: lens.iter().sum(),
        });
        Ok(x * 10.0)
    }
}

/// The padded length of a request: its longest row.
fn longest_row(x: &Array2<f32>) -> usize {
    x.column(1).iter().fold(0, |m, &l| m.max(l as usize))
}

/// `rows` rows of request `id`, each `len` tokens long.
fn request(id: u32, rows: usize, len: usize) -> Array2<f32> {
    Array2::from_shape_fn(
        (rows, 2),
        |(_, c)| if c == 0 { id as f32 } else { len as f32 },
    )
}

fn gated_model() -> (Arc<Lengths>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel();
    let model = Arc::new(Lengths {
        seen: Mutex::default(),
        gate: Mutex::new(Some(rx)),
    });
    (model, tx)
}

fn builder(model: Arc<Lengths>, streams: usize) -> BatcherBuilder<Arc<Lengths>> {
    let pool = CpuPool::all().unwrap();
    let msm = MultiStreamModule::builder(model)
        .pool(pool.clone())
        .num_streams(Streams::Count(streams.min(pool.len())))
        .build()
        .unwrap();
    Batcher::builder(msm).queue_capacity(10_000)
}

/// Submits every request while the gate holds the streams (so they queue), then opens it.
/// The first `streams` requests are each taken (alone) by a stream before the next is sent.
fn run_gated(
    batcher: &Batcher<Arc<Lengths>>,
    gate: &mpsc::Sender<()>,
    streams: usize,
    requests: &[(usize, usize)],
) -> Vec<TaskFuture<Array2<f32>>> {
    let futures: Vec<_> = requests
        .iter()
        .enumerate()
        .map(|(id, &(rows, len))| {
            let f = batcher.infer(request(id as u32, rows, len));
            if id < streams {
                let deadline = Instant::now() + Duration::from_secs(5);
                while batcher.stats().queue_depth > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            f
        })
        .collect();
    for _ in 0..requests.len() {
        let _ = gate.send(());
    }
    futures
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn no_batch_exceeds_rows_or_tokens_and_every_request_gets_its_rows(
        requests in prop::collection::vec((1usize..5, 1usize..129), 1..48),
        max_batch in 1usize..17,
        max_tokens in 8usize..600,
        streams in 1usize..3,
    ) {
        let (model, gate) = gated_model();
        let b = builder(Arc::clone(&model), streams)
            .max_batch(max_batch)
            .max_batch_tokens(max_tokens)
            .tokens(longest_row)
            .build()
            .unwrap();
        let futures = run_gated(&b, &gate, b.module().num_streams(), &requests);
        for (id, (f, &(rows, len))) in futures.into_iter().zip(&requests).enumerate() {
            let y = f.wait().unwrap();
            prop_assert_eq!(y.len_of(Axis(0)), rows);
            prop_assert_eq!(y, request(id as u32, rows, len) * 10.0, "request {}", id);
        }
        let seen = model.seen.lock().unwrap().clone();
        let mut answered = BTreeSet::new();
        for batch in &seen {
            for &id in &batch.requests {
                prop_assert!(answered.insert(id), "request {} ran twice: {:?}", id, seen);
            }
            let cost = batch.rows * batch.longest;
            if batch.requests.len() > 1 {
                prop_assert!(batch.rows <= max_batch, "{:?} over {} rows", batch, max_batch);
                prop_assert!(cost <= max_tokens, "{:?} costs {} > {}", batch, cost, max_tokens);
            } else {
                // A lone request may exceed the limits only if it alone does.
                let (rows, len) = requests[*batch.requests.iter().next().unwrap() as usize];
                prop_assert!(batch.rows <= max_batch.max(rows), "{:?}", batch);
                prop_assert!(cost <= max_tokens.max(rows * len), "{:?}", batch);
            }
        }
        prop_assert_eq!(answered.len(), requests.len());
        let stats = b.stats();
        prop_assert_eq!(stats.completed, requests.len() as u64);
        prop_assert_eq!(stats.batches, seen.len() as u64);
        prop_assert_eq!(stats.batch_rows, requests.iter().map(|r| r.0 as u64).sum::<u64>());
        let padded: usize = seen.iter().map(|s| s.rows * s.longest).sum();
        let unpadded: usize = seen.iter().map(|s| s.unpadded).sum();
        prop_assert_eq!(stats.batch_tokens, padded as u64);
        prop_assert_eq!(stats.batch_tokens_unpadded, unpadded as u64);
    }
}

/// Mixed short and long one-row requests, queued together: with a token function the
/// batches group them by length; without one they take the queue in order and pad every
/// batch to the long length.
#[test]
fn grouping_by_length_lowers_padding() {
    // Alternating 4 and 120 tokens, 48 requests, batches of up to 8 rows.
    let requests: Vec<(usize, usize)> = (0..48)
        .map(|i| (1, if i % 2 == 0 { 4 } else { 120 }))
        .collect();
    let padding = |grouped: bool| {
        let (model, gate) = gated_model();
        let mut b = builder(Arc::clone(&model), 1).max_batch(8);
        if grouped {
            b = b.tokens(longest_row);
        }
        let b = b.build().unwrap();
        for f in run_gated(&b, &gate, 1, &requests) {
            f.wait().unwrap();
        }
        let seen = model.seen.lock().unwrap().clone();
        let padded: usize = seen.iter().map(|s| s.rows * s.longest).sum();
        let unpadded: usize = seen.iter().map(|s| s.unpadded).sum();
        (padded - unpadded, seen)
    };
    let (grouped, grouped_batches) = padding(true);
    let (in_order, _) = padding(false);
    // In order: every batch of 8 after the first (alone) holds 4 short rows padded by 116.
    assert!(in_order >= 5 * 4 * 116, "count-only padding {in_order}");
    assert!(
        grouped * 10 <= in_order,
        "grouped padding {grouped} vs in order {in_order}: {grouped_batches:?}"
    );
    // And the batches stay full: grouping costs no extra batches beyond one per length.
    assert!(grouped_batches.len() <= 48 / 8 + 2, "{grouped_batches:?}");
}

/// A token budget alone (no row limit in reach) caps each batch's padded cost.
#[test]
fn the_budget_caps_padded_tokens_and_a_lone_long_request_runs_alone() {
    let (model, gate) = gated_model();
    let b = builder(Arc::clone(&model), 1)
        .max_batch(1000)
        .max_batch_tokens(256)
        .tokens(longest_row)
        .build()
        .unwrap();
    // 64 rows of 16 tokens (16 per batch fit), then one request of 4 x 100 = 400 tokens.
    let mut requests = vec![(1, 16); 64];
    requests.push((4, 100));
    for f in run_gated(&b, &gate, 1, &requests) {
        f.wait().unwrap();
    }
    let seen = model.seen.lock().unwrap().clone();
    let long = seen
        .iter()
        .find(|s| s.longest == 100)
        .expect("the long request ran");
    assert_eq!((long.requests.len(), long.rows), (1, 4), "{seen:?}");
    for s in seen.iter().filter(|s| s.longest != 100) {
        assert!(s.rows * s.longest <= 256, "{s:?}");
    }
    assert!(seen.iter().any(|s| s.rows == 16), "no full batch: {seen:?}");
    let stats = b.stats();
    assert_eq!(stats.largest_batch_tokens, 400);
    assert_eq!(stats.padding_ratio(), 0.0);
}

#[test]
fn a_budget_without_a_token_function_or_of_zero_is_a_config_error() {
    let (model, _gate) = gated_model();
    let err = builder(Arc::clone(&model), 1)
        .max_batch_tokens(512)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig(m) if m.contains("tokens")),
        "{err}"
    );
    let err = builder(model, 1)
        .max_batch_tokens(0)
        .tokens(longest_row)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[test]
fn a_panicking_token_function_fails_only_that_request() {
    let model = Arc::new(Lengths {
        seen: Mutex::default(),
        gate: Mutex::new(None),
    });
    let b = builder(model, 1)
        .max_batch_tokens(1000)
        .tokens(|x: &Array2<f32>| {
            assert!(x[[0, 1]] >= 0.0, "negative length");
            longest_row(x)
        })
        .build()
        .unwrap();
    let err = b.infer(request(0, 1, 5) * -1.0).wait().unwrap_err();
    assert!(
        matches!(&err, Error::Panicked(m) if m.contains("negative length")),
        "{err}"
    );
    assert_eq!(
        b.infer(request(1, 2, 3)).wait().unwrap(),
        request(1, 2, 3) * 10.0
    );
    // The refused request never took a place.
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(b.stats().accepted, 1);
}
