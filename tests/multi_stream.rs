//! MultiStreamModule: stream counts, batch split rules, hints on structured values, errors,
//! concurrency, and placement (checked against the anchor's acceptance checklist).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corestream::ndarray::{s, Array, Array1, Array2, ArrayD, Axis, IxDyn};
use corestream::{
    module_fn, BoxError, CpuPool, Error, Hint, Infer, Module, MultiStreamModule, Streams,
};

fn all() -> CpuPool {
    CpuPool::all().unwrap()
}

fn rows(b: usize, w: usize) -> Array2<f32> {
    Array::from_shape_fn((b, w), |(i, j)| (i * w + j) as f32)
}

/// A row-wise model: y = 2x + row sum.
fn rowwise(x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
    let sums = x.sum_axis(Axis(1)).insert_axis(Axis(1));
    Ok(&x * 2.0 + &sums)
}

/// A model that records the size of every part it sees.
struct Recorder(std::sync::Mutex<Vec<usize>>);

impl Module for Recorder {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        self.0.lock().unwrap().push(x.nrows());
        Ok(x)
    }
}

#[test]
fn auto_is_one_stream_per_cpu_and_every_count_runs_on_streams() {
    let pool = all();
    let msm = MultiStreamModule::builder(module_fn(rowwise))
        .pool(pool.clone())
        .build()
        .unwrap();
    // One per CPU, unless the process's CPU quota pays for fewer (then one-CPU streams on the
    // first CPUs).
    let quota = corestream::quota::CpuQuota::detect();
    let n = Streams::auto_count(pool.len(), quota.as_ref());
    assert_eq!(msm.num_streams(), n);
    let first = CpuPool::new(pool.cpus()[..n].iter().copied()).unwrap();
    assert_eq!(msm.pools(), first.split(n).unwrap());
    let caller = std::thread::current().id();
    let one = MultiStreamModule::builder(module_fn(move |x: Array2<f32>| {
        assert_ne!(std::thread::current().id(), caller, "ran on the caller");
        Ok(x)
    }))
    .pool(pool)
    .num_streams(Streams::Count(1))
    .build()
    .unwrap();
    assert_eq!(one.num_streams(), 1);
    // The async path: never on the caller, whatever CPU it is on.
    let y = futures::executor::block_on(one.forward(rows(3, 2))).unwrap();
    assert_eq!(y, rows(3, 2));
    // The blocking path too when the caller is on no stream's one CPU (a one-stream module
    // over several CPUs); on a one-CPU machine the caller may run the part itself
    // (`caller_runs`, tests/caller_runs.rs), unless that is turned off.
    let off = MultiStreamModule::builder(module_fn(move |x: Array2<f32>| {
        assert_ne!(std::thread::current().id(), caller, "ran on the caller");
        Ok(x)
    }))
    .pool(all())
    .num_streams(Streams::Count(1))
    .caller_runs(false)
    .build()
    .unwrap();
    assert_eq!(off.forward_sync(rows(3, 2)).unwrap(), rows(3, 2));
    if all().len() > 1 {
        assert_eq!(one.forward_sync(rows(3, 2)).unwrap(), rows(3, 2));
    }
}

#[test]
fn default_pool_is_node_zero() {
    let msm = MultiStreamModule::builder(module_fn(rowwise))
        .build()
        .unwrap();
    assert_eq!(msm.num_streams(), CpuPool::from_node(0).unwrap().len());
}

#[test]
fn output_equals_the_direct_call_for_every_batch_and_stream_count() {
    let pool = all();
    for n in 1..=pool.len() {
        let msm = MultiStreamModule::builder(module_fn(rowwise))
            .pool(pool.clone())
            .num_streams(Streams::Count(n))
            .build()
            .unwrap();
        for b in [1, 2, 3, 7, 16] {
            let x = rows(b, 5);
            let y = msm.forward_sync(x.clone()).unwrap();
            assert_eq!(y, rowwise(x).unwrap(), "n={n} b={b}");
        }
    }
}

#[test]
fn parts_follow_the_remainder_rule_and_concatenate_to_the_output() {
    let pool = all();
    let n = pool.len();
    let recorder = Arc::new(Recorder(Default::default()));
    let msm = MultiStreamModule::builder(Arc::clone(&recorder))
        .pool(pool)
        .build()
        .unwrap();
    for b in [1, n, n + 1, 2 * n + 1] {
        let parts = futures::executor::block_on(msm.forward_parts(rows(b, 3))).unwrap();
        let sizes: Vec<usize> = parts.iter().map(Array2::nrows).collect();
        assert_eq!(sizes, corestream::batch::split_sizes(b, n), "b={b}");
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        assert_eq!(
            corestream::ndarray::concatenate(Axis(0), &views).unwrap(),
            rows(b, 3)
        );
    }
    let mut seen = recorder.0.lock().unwrap().clone();
    seen.sort_unstable();
    let mut expected: Vec<usize> = [1, n, n + 1, 2 * n + 1]
        .iter()
        .flat_map(|&b| corestream::batch::split_sizes(b, n))
        .collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
}

#[test]
fn stream_count_errors() {
    let pool = all();
    let err = MultiStreamModule::builder(module_fn(rowwise))
        .pool(pool.clone())
        .num_streams(Streams::Count(0))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidStreams { streams: 0, .. }),
        "{err}"
    );
    let too_many = pool.len() + 1;
    let err = MultiStreamModule::builder(module_fn(rowwise))
        .pool(pool.clone())
        .num_streams(Streams::Count(too_many))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidStreams { streams, cpus } if streams == too_many && cpus == pool.len())
    );
    let err = MultiStreamModule::builder(module_fn(rowwise))
        .pool(pool)
        .input_hint(Hint::Replicate)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::NoSplitDim { .. }), "{err}");
}

#[test]
fn bad_inputs_are_typed_errors_not_panics() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let msm = MultiStreamModule::builder(module_fn(move |(a, b): (Array2<f32>, Array2<f32>)| {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(&a + &b)
    }))
    .pool(all())
    .build()
    .unwrap();
    let err = msm.forward_sync((rows(4, 2), rows(3, 2))).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BatchMismatch {
                first: 4,
                second: 3
            }
        ),
        "{err}"
    );
    let err = msm.forward_sync((rows(0, 2), rows(0, 2))).unwrap_err();
    assert!(matches!(err, Error::EmptyBatch), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let dim3 = MultiStreamModule::builder(module_fn(|x: Array2<f32>| Ok(x)))
        .pool(all())
        .input_hint(Hint::Dim(3))
        .build()
        .unwrap();
    let err = dim3.forward_sync(rows(2, 2)).unwrap_err();
    assert!(
        matches!(err, Error::DimOutOfRange { dim: 3, rank: 2 }),
        "{err}"
    );

    let tuple_for_array = MultiStreamModule::builder(module_fn(|x: Array2<f32>| Ok(x)))
        .pool(all())
        .input_hint(Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]))
        .build()
        .unwrap();
    assert!(matches!(
        tuple_for_array.forward_sync(rows(2, 2)),
        Err(Error::HintMismatch(_))
    ));
}

#[test]
fn a_failing_part_fails_the_call_and_the_streams_live_on() {
    let pool = all();
    let msm = MultiStreamModule::builder(module_fn(|x: Array1<i64>| {
        if x.iter().any(|&v| v < 0) {
            return Err("negative row".into());
        }
        if x.iter().any(|&v| v == 13) {
            panic!("thirteen");
        }
        Ok(x)
    }))
    .pool(pool.clone())
    .build()
    .unwrap();
    let n = pool.len() as i64;
    let mut bad: Vec<i64> = (0..2 * n).collect();
    bad[(2 * n - 1) as usize] = -1;
    let err = msm.forward_sync(Array1::from(bad)).unwrap_err();
    assert!(
        matches!(&err, Error::Module(e) if e.to_string() == "negative row"),
        "{err}"
    );
    let err = msm.forward_sync(Array1::from(vec![13; 4])).unwrap_err();
    assert!(
        matches!(&err, Error::Panicked(m) if m == "thirteen"),
        "{err}"
    );
    let good = Array1::from((0..10).collect::<Vec<i64>>());
    assert_eq!(msm.forward_sync(good.clone()).unwrap(), good);
}

#[test]
fn many_concurrent_callers_each_get_their_own_rows() {
    let msm = Arc::new(
        MultiStreamModule::builder(module_fn(rowwise))
            .pool(all())
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        for caller in 0..64usize {
            let msm = Arc::clone(&msm);
            handles.push(tokio::spawn(async move {
                let b = 1 + caller % 9;
                let x = rows(b, 4) + caller as f32 * 1000.0;
                let y = msm.forward(x.clone()).await.unwrap();
                assert_eq!(y, rowwise(x).unwrap(), "caller {caller}");
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
}

#[test]
fn infer_and_send_sync() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let msm = MultiStreamModule::builder(module_fn(rowwise))
        .pool(all())
        .build()
        .unwrap();
    assert_send_sync(&msm);
    let service: Arc<dyn Infer<Array2<f32>, Array2<f32>>> = Arc::new(msm);
    let y = futures::executor::block_on(service.infer(rows(3, 3))).unwrap();
    assert_eq!(y, rowwise(rows(3, 3)).unwrap());
}

#[test]
fn each_stream_runs_on_its_own_cpus() {
    let pool = all();
    let msm = MultiStreamModule::builder(module_fn(|x: Array1<u32>| {
        let mask = corestream::affinity::current_cpus()?;
        Ok(x.mapv(|_| mask[0] as u32 * 1000 + mask.len() as u32))
    }))
    .pool(pool.clone())
    .build()
    .unwrap();
    let n = pool.len();
    let parts =
        futures::executor::block_on(msm.forward_parts(Array1::from(vec![0u32; n]))).unwrap();
    for (part, stream_pool) in parts.iter().zip(msm.pools()) {
        let expected = stream_pool.cpus()[0] as u32 * 1000 + stream_pool.len() as u32;
        assert!(
            part.iter().all(|&v| v == expected),
            "{part} on {stream_pool}"
        );
    }
}

// --- hints ---------------------------------------------------------------------------------

#[test]
fn tuple_inputs_and_outputs_like_example_net2() {
    // Two inputs, two outputs, split and joined along dim 0.
    let model = module_fn(|(a, b): (Array2<f32>, Array2<f32>)| Ok((&a + &b, &a * &b)));
    let msm = MultiStreamModule::builder(model)
        .pool(all())
        .input_hint(Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]))
        .output_hint(Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]))
        .build()
        .unwrap();
    let (a, b) = (rows(5, 3), rows(5, 3) + 1.0);
    let (sum, prod) = msm.forward_sync((a.clone(), b.clone())).unwrap();
    assert_eq!(sum, &a + &b);
    assert_eq!(prod, &a * &b);
}

#[test]
fn nested_tuple_in_tuple() {
    type In = ((Array2<f32>, Array2<f32>), Array2<f32>);
    let model = module_fn(|((a, b), c): In| Ok(((a.clone(), b + 1.0), c * 2.0)));
    let hint = Hint::Tuple(vec![
        Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]),
        Hint::Dim(0),
    ]);
    let msm = MultiStreamModule::builder(model)
        .pool(all())
        .input_hint(hint.clone())
        .output_hint(hint)
        .build()
        .unwrap();
    let ((a, b), c) = msm
        .forward_sync(((rows(4, 1), rows(4, 2)), rows(4, 3)))
        .unwrap();
    assert_eq!(a, rows(4, 1));
    assert_eq!(b, rows(4, 2) + 1.0);
    assert_eq!(c, rows(4, 3) * 2.0);
}

#[test]
fn map_inputs_and_outputs() {
    let model = module_fn(|m: BTreeMap<String, Array2<f32>>| {
        let y1 = &m["x1"] + &m["x2"];
        let y2 = y1.clone() * 10.0;
        Ok(HashMap::from([
            ("y1".to_string(), y1),
            ("y2".to_string(), y2),
        ]))
    });
    let keys = |a: &str, b: &str| {
        Hint::Map(BTreeMap::from([
            (a.to_string(), Hint::Dim(0)),
            (b.to_string(), Hint::Dim(0)),
        ]))
    };
    let msm = MultiStreamModule::builder(model)
        .pool(all())
        .input_hint(keys("x1", "x2"))
        .output_hint(keys("y1", "y2"))
        .build()
        .unwrap();
    let input = BTreeMap::from([
        ("x1".to_string(), rows(6, 2)),
        ("x2".to_string(), rows(6, 2)),
    ]);
    let out = msm.forward_sync(input).unwrap();
    assert_eq!(out["y1"], rows(6, 2) * 2.0);
    assert_eq!(out["y2"], rows(6, 2) * 20.0);

    let unknown = BTreeMap::from([("x3".to_string(), rows(2, 2))]);
    assert!(matches!(
        msm.forward_sync(unknown),
        Err(Error::HintMismatch(_))
    ));
}

#[test]
fn replicate_in_and_out_like_the_mixed_tensor_bool_test() {
    // (rows, flag, rows) with hint (0, Replicate, 0): the flag reaches every stream whole, and
    // the output's flag is stream 0's.
    let model = module_fn(|(a, flag, c): (Array2<f32>, bool, Array2<f32>)| {
        Ok((if flag { -a } else { a }, flag, c))
    });
    let hint = Hint::Tuple(vec![Hint::Dim(0), Hint::Replicate, Hint::Dim(0)]);
    let msm = MultiStreamModule::builder(model)
        .pool(all())
        .input_hint(hint.clone())
        .output_hint(hint)
        .build()
        .unwrap();
    let n = msm.num_streams();
    let (a, flag, c) = msm.forward_sync((rows(n, 1), false, rows(n, 3))).unwrap();
    assert_eq!((a, flag, c), (rows(n, 1), false, rows(n, 3)));
    let (a, flag, _) = msm.forward_sync((rows(n, 1), true, rows(n, 3))).unwrap();
    assert_eq!((a, flag), (-rows(n, 1), true));
}

#[test]
fn replicated_weights_and_split_along_dim_one() {
    // x is (features, batch): split along dim 1; w is shared whole by every stream.
    let model = module_fn(|(w, x): (Array2<f32>, Array2<f32>)| Ok(w.dot(&x)));
    let msm = MultiStreamModule::builder(model)
        .pool(all())
        .input_hint(Hint::Tuple(vec![Hint::Replicate, Hint::Dim(1)]))
        .output_hint(Hint::Dim(1))
        .build()
        .unwrap();
    let w = rows(3, 4);
    let x = rows(4, 9);
    assert_eq!(msm.forward_sync((w.clone(), x.clone())).unwrap(), w.dot(&x));
}

#[test]
fn non_zero_dims_per_input_like_the_anchor_test() {
    // Inputs (1, B), (B, 2), (3, B) with hint (1, 0, 1); the model returns them unchanged.
    type T = (Array2<f32>, Array2<f32>, Array2<f32>);
    let hint = Hint::Tuple(vec![Hint::Dim(1), Hint::Dim(0), Hint::Dim(1)]);
    let msm = MultiStreamModule::builder(module_fn(|x: T| Ok(x)))
        .pool(all())
        .input_hint(hint.clone())
        .output_hint(hint)
        .build()
        .unwrap();
    let b = 5;
    let input = (rows(1, b), rows(b, 2), rows(3, b));
    assert_eq!(msm.forward_sync(input.clone()).unwrap(), input);
}

#[test]
fn vec_inputs_with_per_position_hints() {
    let model =
        module_fn(|xs: Vec<ArrayD<f32>>| Ok(xs.into_iter().map(|x| x + 1.0).collect::<Vec<_>>()));
    let msm = MultiStreamModule::builder(model)
        .pool(all())
        .input_hint(Hint::Tuple(vec![
            Hint::Dim(0),
            Hint::Dim(1),
            Hint::Replicate,
        ]))
        .output_hint(Hint::Tuple(vec![
            Hint::Dim(0),
            Hint::Dim(1),
            Hint::Replicate,
        ]))
        .build()
        .unwrap();
    let xs = vec![
        rows(4, 2).into_dyn(),
        rows(2, 4).into_dyn(),
        ArrayD::zeros(IxDyn(&[2, 2, 2])),
    ];
    let ys = msm.forward_sync(xs.clone()).unwrap();
    let expected: Vec<ArrayD<f32>> = xs.into_iter().map(|x| x + 1.0).collect();
    assert_eq!(ys, expected);
}

#[test]
fn arc_arrays_split_without_copying() {
    use corestream::ndarray::ArcArray2;
    let x: ArcArray2<f32> = rows(8, 4).into_shared();
    let base = x.as_ptr() as usize;
    let msm = MultiStreamModule::builder(module_fn(move |p: ArcArray2<f32>| {
        // The part points into the caller's buffer.
        let offset = p.as_ptr() as usize - base;
        Ok(p.mapv(|_| offset as f32).into_shared())
    }))
    .pool(all())
    .build()
    .unwrap();
    let parts = futures::executor::block_on(msm.forward_parts(x.clone())).unwrap();
    let mut row = 0;
    for part in parts {
        let expected = (row * 4 * std::mem::size_of::<f32>()) as f32;
        assert!(part.iter().all(|&v| v == expected));
        row += part.nrows();
    }
    assert_eq!(row, 8);
    let _ = x.slice(s![.., ..]);
}
