//! The tract ONNX backend: multi-stream equals single-stream on the anchor doc's ExampleNet1/2,
//! specialised plans, per-stream intra-op threads confined to the stream, and bad inputs.
#![cfg(feature = "tract")]

use std::time::{Duration, Instant};

use corestream::backend::tract::OnnxModel;
use corestream::backend::{ElementType, Tensor};
use corestream::{CpuPool, Error, Hint, Module, MultiStreamModule, Streams, Task};

const NET1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/examplenet1.onnx"
);
const NET2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/examplenet2.onnx"
);
const MLP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/mlp256.onnx");
const SEQ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/seqpool.onnx");

fn input(batch: usize, seed: usize) -> Tensor {
    let data: Vec<f32> = (0..batch * 64 * 9)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32) / 500.0 - 1.0)
        .collect();
    Tensor::from_shape_vec(&[batch, 64, 3, 3], data).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.view::<f32>().unwrap(), b.view::<f32>().unwrap());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_close(a: &[Tensor], b: &[Tensor], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        let d = max_diff(x, y);
        assert!(d <= 1e-5, "{what}: max diff {d}");
    }
}

#[test]
fn examplenet1_multi_stream_equals_single_stream() {
    let pool = CpuPool::all().unwrap();
    let reference = Task::new(
        OnnxModel::builder(NET1)
            .specialize_up_to(0)
            .build()
            .unwrap(),
        CpuPool::new([pool.cpus()[0]]).unwrap(),
    )
    .unwrap();
    for streams in 1..=pool.len().min(2) {
        let msm = MultiStreamModule::builder(OnnxModel::load(NET1).unwrap())
            .pool(pool.clone())
            .num_streams(Streams::Count(streams))
            .build()
            .unwrap();
        for b in [1, 3, 16] {
            let x = vec![input(b, b)];
            let expected = reference.run_sync(x.clone()).unwrap();
            let got = msm.forward_sync(x).unwrap();
            assert_eq!(got[0].shape(), [b, 512]);
            assert_close(&got, &expected, &format!("streams={streams} b={b}"));
        }
    }
}

#[test]
fn examplenet2_structured_outputs_multi_stream_equal_single_stream() {
    let pool = CpuPool::all().unwrap();
    let model = OnnxModel::load(NET2).unwrap();
    assert_eq!(model.input_names(), ["x1", "x2"]);
    assert_eq!(model.output_names(), ["y1", "y"]);
    let direct = OnnxModel::load(NET2).unwrap();
    let msm = MultiStreamModule::builder(model)
        .pool(pool.clone())
        .num_streams(Streams::Count(pool.len().min(2)))
        .input_hint(Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]))
        .output_hint(Hint::Tuple(vec![Hint::Dim(0), Hint::Dim(0)]))
        .build()
        .unwrap();
    for b in [1, 3, 16] {
        let x = vec![input(b, 1), input(b, 2)];
        let expected = direct.forward(x.clone()).unwrap();
        let got = msm.forward_sync(x).unwrap();
        assert_eq!(got[0].shape(), [b, 128, 2, 2]);
        assert_eq!(got[1].shape(), [b, 512]);
        assert_close(&got, &expected, &format!("b={b}"));
    }
}

#[test]
fn intra_op_stream_with_all_cpus_gives_the_same_result() {
    let pool = CpuPool::all().unwrap();
    let single = OnnxModel::load(NET1).unwrap();
    let task = Task::new(OnnxModel::load(NET1).unwrap(), pool).unwrap();
    for b in [1, 3, 16, 64] {
        let x = vec![input(b, 3)];
        assert_close(
            &task.run_sync(x.clone()).unwrap(),
            &single.forward(x).unwrap(),
            &format!("b={b}"),
        );
    }
}

#[test]
fn specialised_plans_match_the_symbolic_plan_and_are_cached() {
    let symbolic = OnnxModel::builder(NET1)
        .specialize_up_to(0)
        .build()
        .unwrap();
    let special = OnnxModel::builder(NET1)
        .specialize_up_to(4)
        .build()
        .unwrap();
    for b in [1, 2, 3, 4, 5, 9] {
        let x = vec![input(b, 4)];
        assert_close(
            &special.forward(x.clone()).unwrap(),
            &symbolic.forward(x).unwrap(),
            &format!("b={b}"),
        );
    }
    assert_eq!(special.specialized_batches(), [1, 2, 3, 4]);
    assert!(symbolic.specialized_batches().is_empty());
}

#[test]
fn concurrent_first_calls_of_a_batch_size_all_get_correct_results() {
    let symbolic = OnnxModel::builder(NET1)
        .specialize_up_to(0)
        .build()
        .unwrap();
    let special = OnnxModel::load(NET1).unwrap();
    let x = vec![input(3, 8)];
    let expected = symbolic.forward(x.clone()).unwrap();
    let start = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                start.wait();
                // One caller compiles the 3-row plan; the others run the symbolic plan.
                for _ in 0..5 {
                    assert_close(&special.forward(x.clone()).unwrap(), &expected, "racing");
                }
            });
        }
    });
    assert_eq!(special.specialized_batches(), [3]);
}

#[test]
fn runs_in_chunks_equal_whole_batch_runs_and_use_chunk_sized_plans() {
    let whole = OnnxModel::builder(NET2)
        .specialize_up_to(0)
        .build()
        .unwrap();
    for max in [1, 4] {
        let chunked = OnnxModel::builder(NET2)
            .max_rows_per_run(max)
            .specialize_up_to(8)
            .build()
            .unwrap();
        for b in [1, 3, 10] {
            let x = vec![input(b, 5), input(b, 6)];
            let got = chunked.forward(x.clone()).unwrap();
            assert_eq!(got[0].shape(), [b, 128, 2, 2]);
            assert_eq!(got[1].shape(), [b, 512]);
            assert_close(
                &got,
                &whole.forward(x).unwrap(),
                &format!("max={max} b={b}"),
            );
        }
        // 10 rows under max 4 run as 4 + 3 + 3: plans exist only for chunk sizes.
        let expected: &[usize] = if max == 1 { &[1] } else { &[1, 3, 4] };
        assert_eq!(chunked.specialized_batches(), expected, "max={max}");
    }
}

#[test]
fn models_with_a_second_symbolic_axis_specialise_and_chunk_along_the_batch() {
    // seqpool: x (N,S,32) -> h (N,S,32), pooled (N,32); S is symbolic like BERT's sequence.
    let whole = OnnxModel::builder(SEQ).specialize_up_to(0).build().unwrap();
    assert_eq!(whole.inputs()[0].to_string(), "N,S,32 f32");
    let chunked = OnnxModel::builder(SEQ).max_rows_per_run(2).build().unwrap();
    for (b, len) in [(1, 3), (5, 7), (5, 2)] {
        let data: Vec<f32> = (0..b * len * 32)
            .map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0)
            .collect();
        let x = vec![Tensor::from_shape_vec(&[b, len, 32], data).unwrap()];
        let got = chunked.forward(x.clone()).unwrap();
        assert_eq!(got[0].shape(), [b, len, 32]);
        assert_eq!(got[1].shape(), [b, 32]);
        assert_close(
            &got,
            &whole.forward(x).unwrap(),
            &format!("b={b} len={len}"),
        );
    }
    // Plans specialised on the batch only (5 rows run as 2 + 2 + 1), whatever the length.
    assert_eq!(chunked.specialized_batches(), [1, 2]);
    assert!(whole.specialized_batches().is_empty());
}

#[test]
fn bad_chunk_settings_are_typed_errors() {
    let zero = OnnxModel::builder(NET1).max_rows_per_run(0).build();
    assert!(
        matches!(&zero, Err(Error::InvalidConfig(m)) if m.contains("at least 1")),
        "{zero:?}"
    );
    // A fixed batch axis leaves nothing to cut along.
    let fixed = OnnxModel::builder(NET1)
        .input(0, ElementType::F32, "4,64,3,3")
        .max_rows_per_run(2)
        .build();
    assert!(
        matches!(&fixed, Err(Error::InvalidConfig(m)) if m.contains("symbolic batch axis")),
        "{fixed:?}"
    );
}

#[test]
fn tensors_split_and_concat_along_any_axis_and_type() {
    use corestream::Batch;
    let t = Tensor::from_shape_vec(&[2, 5], (0..10i64).collect()).unwrap();
    let parts = t.clone().split(&Hint::Dim(1), &[3, 2]).unwrap();
    assert_eq!(parts[0].shape(), [2, 3]);
    let second: Vec<i64> = parts[1].view::<i64>().unwrap().iter().copied().collect();
    assert_eq!(second, [3, 4, 8, 9]);
    assert_eq!(Tensor::concat(parts, &Hint::Dim(1)).unwrap(), t);
    assert!(matches!(
        t.batch_size(&Hint::Dim(2)),
        Err(Error::DimOutOfRange { dim: 2, rank: 2 })
    ));
    let reps = t.clone().split(&Hint::Replicate, &[1, 1, 1]).unwrap();
    assert!(reps.iter().all(|r| *r == t));
}

#[test]
fn bad_models_are_typed_errors() {
    let err = OnnxModel::load("/nonexistent/model.onnx").unwrap_err();
    assert!(
        matches!(&err, Error::ModelLoad { message, .. } if message == "no such file"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not a protobuf").unwrap();
    let err = OnnxModel::load(&corrupt).unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }), "{err}");
    let err = OnnxModel::builder(NET1)
        .input(3, ElementType::F32, "N,64,3,3")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("input 3 does not exist"), "{err}");
    let err = OnnxModel::builder(NET1)
        .input(0, ElementType::F32, "N,6?,3,3")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("cannot parse shape"), "{err}");
}

#[test]
fn bad_inputs_are_typed_errors_through_a_task() {
    let task = Task::new(OnnxModel::load(NET2).unwrap(), CpuPool::all().unwrap()).unwrap();
    let err = task.run_sync(vec![input(2, 0)]).unwrap_err();
    assert!(
        matches!(&err, Error::InputCount { expected: 2, found: 1, names } if names == "x1, x2"),
        "{err}"
    );
    let wrong_shape = Tensor::zeros::<f32>(&[2, 64, 3]);
    let err = task.run_sync(vec![input(2, 0), wrong_shape]).unwrap_err();
    match &err {
        Error::InvalidInput {
            input,
            expected,
            found,
        } => {
            assert_eq!(input, "x2");
            assert_eq!(expected, "N,64,3,3 f32");
            assert_eq!(found, "2,64,3 f32");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    let wrong_type = Tensor::zeros::<i32>(&[2, 64, 3, 3]);
    let err = task.run_sync(vec![wrong_type, input(2, 0)]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { input, .. } if input == "x1"),
        "{err}"
    );
    let err = task.run_sync(vec![input(2, 0), input(3, 0)]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { input, .. } if input == "x2"),
        "{err}"
    );
    // The stream lives on.
    assert_eq!(
        task.run_sync(vec![input(2, 0), input(2, 0)]).unwrap().len(),
        2
    );
}

/// CPU time (user + system, in clock ticks) and mask of this process's threads by name.
fn threads() -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        // Fields after the ")" that closes the name: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_owned();
        out.push((comm.trim().to_owned(), ticks, mask));
    }
    out
}

#[test]
fn a_stream_with_k_cpus_runs_tract_kernels_on_its_k_pinned_threads() {
    let pool = CpuPool::all().unwrap();
    if pool.len() < 2 {
        eprintln!("one CPU: a stream cannot have k = 2 intra-op threads here");
        return;
    }
    let pool = CpuPool::new(pool.cpus()[..2].to_vec()).unwrap();
    let task = Task::builder(OnnxModel::load(MLP).unwrap())
        .pool(pool.clone())
        .name("cs-tract-k2")
        .build()
        .unwrap();
    // Big batches make tract's matrix products large enough to be split across threads.
    let x = vec![Tensor::zeros::<f32>(&[512, 256])];
    // Runs until worker 1 exists (rayon starts its workers asynchronously) and has been
    // charged CPU time (ticks are 10 ms, so a few runs on a quiet machine; many more under
    // valgrind, which runs one thread at a time), or a deadline.
    let worker_1 = || {
        threads()
            .into_iter()
            .find(|(name, _, _)| name == "cs-tract-k2w1")
    };
    let start = Instant::now();
    while worker_1().is_none_or(|w| w.1 == 0) && start.elapsed() < Duration::from_secs(30) {
        task.run_sync(x.clone()).unwrap();
    }
    let all = threads();
    let worker = worker_1().expect("the stream's second intra-op worker exists");
    assert!(
        worker.1 > 0,
        "worker 1 never ran a kernel (cpu ticks {})",
        worker.1
    );
    assert_eq!(worker.2, pool.cpus()[1].to_string(), "worker 1's mask");
    assert!(
        !all.iter()
            .any(|(name, _, _)| name.starts_with("tract-default")),
        "tract started its own pool: {all:?}"
    );
}

/// An axis beyond i64 in a shape given to the builder is a model-load error naming it, not a
/// wrapped (negative) dimension handed to tract.
#[test]
fn input_shapes_with_axes_beyond_i64_are_model_load_errors() {
    for (shape, axis) in [
        ("18446744073709551615,64,3,3", "18446744073709551615"),
        ("Nx9223372036854775808x3x3", "9223372036854775808"),
    ] {
        let err = OnnxModel::builder(NET1)
            .input(0, ElementType::F32, shape)
            .build()
            .unwrap_err();
        match &err {
            Error::ModelLoad { message, .. } => {
                assert!(
                    message.contains(axis) && message.contains("too large"),
                    "{message}"
                );
            }
            other => panic!("expected Error::ModelLoad, got {other:?}"),
        }
    }
}
