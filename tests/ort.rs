//! The ONNX Runtime backend (feature `ort`): outputs against ONNX Runtime's own session, where
//! its threads run, typed input errors.
//!
//! Every test skips with a notice when no ONNX Runtime library is found (run
//! `scripts/fetch-onnxruntime.sh`), and fails instead when `CORESTREAM_REQUIRE_ORT=1`.
#![cfg(feature = "ort")]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corestream::backend::ort::{self as cs_ort, ort, OrtModel};
use corestream::backend::{ElementType, Tensor};
use corestream::ndarray::{ArrayD, IxDyn};
use corestream::{CpuPool, Error, MultiStreamModule, Streams, Task};

use common::have_ort;

/// The tests read the process's thread list: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn asset(name: &str) -> String {
    format!("{}/assets/models/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Deterministic pseudo-random f32 data in [-1, 1).
fn input(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

/// ONNX Runtime's own answer: one plain `ort` session (one thread), its safe `run`.
fn reference(path: &str, inputs: &[ArrayD<f32>]) -> Vec<ArrayD<f32>> {
    let env = cs_ort::environment().expect("library loaded");
    let mut session = ort::session::Session::builder(env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_file(path)
        .unwrap();
    let values: Vec<ort::session::SessionInputValue<'_>> = inputs
        .iter()
        .map(|x| {
            ort::value::TensorRef::from_array_view(x.view())
                .unwrap()
                .into()
        })
        .collect();
    let outputs = session.run(values.as_slice()).unwrap();
    outputs
        .iter()
        .map(|(_, v)| v.try_extract_array::<f32>().unwrap().to_owned())
        .collect()
}

fn assert_close(got: &Tensor, want: &ArrayD<f32>, what: &str) {
    let got = got.view::<f32>().unwrap();
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    for (i, (a, b)) in got.iter().zip(want.iter()).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * scale.max(b.abs()),
            "{what}: element {i}: {a} vs {b} (rel 1e-5)"
        );
    }
}

fn two_cpus() -> Option<Vec<usize>> {
    let all = CpuPool::all().unwrap();
    if all.len() < 2 {
        eprintln!("skipped: needs 2 cpus, this process may use {all}");
        return None;
    }
    Some(all.cpus()[..2].to_vec())
}

#[test]
fn examplenet1_matches_ort_through_1_and_2_streams() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let path = asset("examplenet1.onnx");
    let x = input(&[7, 64, 3, 3], 1);
    let want = reference(&path, std::slice::from_ref(&x));
    let model = OrtModel::load(&path).unwrap();
    assert_eq!(model.input_names(), ["x"]);
    assert_eq!(model.output_names(), ["y"]);
    assert_eq!(model.inputs()[0].to_string(), "N,64,3,3 f32");
    assert_eq!(model.inputs()[0].element_type, Some(ElementType::F32));
    // A plain call (no stream).
    let y = corestream::Module::forward(&model, vec![Tensor::from(x.clone())]).unwrap();
    assert_close(&y[0], &want[0], "plain call");
    let model = std::sync::Arc::new(model);
    let cpus = CpuPool::all().unwrap();
    for streams in 1..=cpus.len().min(2) {
        let msm = MultiStreamModule::builder(std::sync::Arc::clone(&model))
            .pool(cpus.clone())
            .num_streams(Streams::Count(streams))
            .build()
            .unwrap();
        let y = msm.forward_sync(vec![Tensor::from(x.clone())]).unwrap();
        assert_close(&y[0], &want[0], &format!("{streams} streams"));
    }
    if cpus.len() >= 2 {
        // The 2-cpu stream above ran on a session made from the shared weights.
        let shared = model.weight_sharing().expect("a multi-cpu stream ran");
        assert!(
            shared.is_ok_and(|bytes| bytes > 100_000),
            "{:?}",
            model.weight_sharing()
        );
    }
}

#[test]
fn examplenet2_two_inputs_two_outputs_match_ort() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let path = asset("examplenet2.onnx");
    let x1 = input(&[5, 64, 3, 3], 2);
    let x2 = input(&[5, 64, 3, 3], 3);
    let want = reference(&path, &[x1.clone(), x2.clone()]);
    let model = std::sync::Arc::new(OrtModel::load(&path).unwrap());
    assert_eq!(model.output_names(), ["y1", "y"]);
    let cpus = CpuPool::all().unwrap();
    for streams in 1..=cpus.len().min(2) {
        let msm = MultiStreamModule::builder(std::sync::Arc::clone(&model))
            .pool(cpus.clone())
            .num_streams(Streams::Count(streams))
            .build()
            .unwrap();
        let y = msm
            .forward_sync(vec![Tensor::from(x1.clone()), Tensor::from(x2.clone())])
            .unwrap();
        assert_eq!(y.len(), 2);
        assert_close(&y[0], &want[0], &format!("y1, {streams} streams"));
        assert_close(&y[1], &want[1], &format!("y, {streams} streams"));
    }
}

/// Thread id -> (name, allowed cpus) of every thread of this process.
fn threads() -> HashMap<u32, (String, BTreeSet<usize>)> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        let Ok(tid) = dir.file_name().unwrap().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue; // exited meanwhile
        };
        let name = std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mask = common::cpus_allowed(&status).into_iter().collect();
        out.insert(tid, (name, mask));
    }
    out
}

/// Threads that appeared between two snapshots, started by a stream thread (`corestream-s*`,
/// a name the threads it starts inherit, ONNX Runtime's workers included) or by this test's
/// thread (whose name they would inherit). Threads the test harness starts meanwhile for the
/// next tests are not counted.
fn new_threads(
    before: &HashMap<u32, (String, BTreeSet<usize>)>,
) -> Vec<(u32, String, BTreeSet<usize>)> {
    let me = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
    let me = me.trim();
    threads()
        .into_iter()
        .filter(|(tid, (name, _))| {
            !before.contains_key(tid) && (name.starts_with("corestream-s") || name == me)
        })
        .map(|(tid, (name, cpus))| (tid, name, cpus))
        .collect()
}

#[test]
fn a_two_cpu_stream_pins_ort_workers_to_its_other_cpu() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let Some(cpus) = two_cpus() else { return };
    let model = std::sync::Arc::new(OrtModel::load(asset("examplenet1.onnx")).unwrap());
    // Both orders: worker 1 goes to the pool's second cpu, whichever id it has. This is what
    // pins down ONNX Runtime's 1-based processor numbering in the affinity string.
    for order in [vec![cpus[0], cpus[1]], vec![cpus[1], cpus[0]]] {
        let pool = CpuPool::new(order.clone()).unwrap();
        let task = Task::new(std::sync::Arc::clone(&model), pool).unwrap();
        let before = threads();
        let x = Tensor::from(input(&[4, 64, 3, 3], 4));
        task.run_sync(vec![x]).unwrap();
        // ONNX Runtime binds a worker from the worker itself once it starts, which a small
        // model's first run need not wait for: give it up to 2 s.
        let deadline = Instant::now() + Duration::from_secs(2);
        let created = loop {
            let created = new_threads(&before);
            let bound = created.len() == 1 && created[0].2 == BTreeSet::from([order[1]]);
            if bound || Instant::now() > deadline {
                break created;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // k = 2 intra-op threads: the stream thread and one ONNX Runtime worker.
        assert_eq!(created.len(), 1, "ONNX Runtime threads: {created:?}");
        let (_, _, mask) = &created[0];
        assert_eq!(
            *mask,
            BTreeSet::from([order[1]]),
            "the worker must run on the stream's second cpu {} only; threads: {created:?}",
            order[1]
        );
        let allowed: BTreeSet<usize> = order.iter().copied().collect();
        for (tid, (name, mask)) in threads() {
            if name.starts_with("corestream-s") {
                assert!(mask.is_subset(&allowed), "{tid} {name}: {mask:?}");
            }
        }
        drop(task);
    }
}

#[test]
fn one_cpu_streams_own_sessions_share_weights_and_start_no_ort_thread() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let Some(cpus) = two_cpus() else { return };
    let model = std::sync::Arc::new(OrtModel::load(asset("examplenet1.onnx")).unwrap());
    let msm = MultiStreamModule::builder(std::sync::Arc::clone(&model))
        .pool(CpuPool::new(cpus).unwrap())
        .num_streams(Streams::Count(2))
        .build()
        .unwrap();
    let before = threads();
    for _ in 0..3 {
        msm.forward_sync(vec![Tensor::from(input(&[6, 64, 3, 3], 5))])
            .unwrap();
    }
    let created = new_threads(&before);
    assert!(
        created.is_empty(),
        "ONNX Runtime started threads: {created:?}"
    );
    // Each stream its own session (the build-time one is gone), over one copy of the weights.
    assert_eq!(model.session_count(), 2, "one session per stream");
    assert!(
        matches!(model.weight_sharing(), Some(Ok(bytes)) if bytes > 0),
        "{:?}",
        model.weight_sharing()
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let model = OrtModel::load(asset("examplenet2.onnx")).unwrap();
    let task = Task::new(
        model,
        CpuPool::new([CpuPool::all().unwrap().cpus()[0]]).unwrap(),
    )
    .unwrap();
    let good = || Tensor::from(input(&[2, 64, 3, 3], 6));
    let t = Instant::now();

    let err = task.run_sync(vec![good()]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InputCount {
                expected: 2,
                found: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("x1, x2"), "{err}");

    let err = task
        .run_sync(vec![good(), Tensor::from(input(&[2, 64, 3, 4], 7))])
        .unwrap_err();
    match &err {
        Error::InvalidInput {
            input,
            expected,
            found,
        } => {
            assert_eq!(input, "x2");
            assert_eq!(expected, "N,64,3,3 f32");
            assert_eq!(found, "2,64,3,4 f32");
        }
        other => panic!("{other:?}"),
    }

    let wrong_type = Tensor::zeros::<i64>(&[2, 64, 3, 3]);
    let err = task.run_sync(vec![wrong_type, good()]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { input, found, .. } if input == "x1" && found == "2,64,3,3 i64"),
        "{err:?}"
    );

    let err = task
        .run_sync(vec![good(), Tensor::from(input(&[3, 64, 3, 3], 8))])
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { input, expected, .. } if input == "x2" && expected.starts_with("N=2")),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // The stream still serves.
    assert_eq!(task.run_sync(vec![good(), good()]).unwrap().len(), 2);
}

#[test]
fn corrupt_or_missing_models_are_model_load_errors() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let t = Instant::now();
    let err = OrtModel::builder_from_bytes(b"this is not an onnx model".to_vec())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }), "{err:?}");
    let mut truncated = std::fs::read(asset("examplenet1.onnx")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = OrtModel::builder_from_bytes(truncated).build().unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }), "{err:?}");
    let err = OrtModel::load("/nonexistent/model.onnx").unwrap_err();
    assert!(
        matches!(&err, Error::ModelLoad { model, .. } if model.contains("nonexistent")),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Bytes work as well as paths.
    let bytes = std::fs::read(asset("examplenet1.onnx")).unwrap();
    let model = OrtModel::builder_from_bytes(bytes).build().unwrap();
    assert_eq!(model.input_names(), ["x"]);
}

#[test]
fn another_library_after_loading_is_a_typed_error() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let lib = cs_ort::loaded_library().unwrap();
    assert!(lib.version().starts_with("1."));
    // The same file (also through a symlink) is fine.
    OrtModel::builder(asset("examplenet1.onnx"))
        .library(lib.path())
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("libonnxruntime.so");
    std::fs::write(&other, "not a library").unwrap();
    let err = OrtModel::builder(asset("examplenet1.onnx"))
        .library(&other)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::OrtLibrary { .. }), "{err:?}");
    assert!(err.to_string().contains("already loaded"), "{err}");
    assert!(Path::new(lib.path()).is_file());
}

#[test]
fn resnet18_on_a_two_cpu_stream_with_shared_weights_matches_ort() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let path = format!("{}/models/resnet18.onnx", env!("CARGO_MANIFEST_DIR"));
    if !Path::new(&path).exists() {
        eprintln!("skipped: {path} missing (scripts/fetch-models.sh)");
        return;
    }
    let Some(cpus) = two_cpus() else { return };
    let x = input(&[3, 3, 224, 224], 9);
    let want = reference(&path, std::slice::from_ref(&x));
    let model = std::sync::Arc::new(OrtModel::load(&path).unwrap());
    let msm = MultiStreamModule::builder(std::sync::Arc::clone(&model))
        .pool(CpuPool::new(cpus).unwrap())
        .num_streams(Streams::Count(1))
        .build()
        .unwrap();
    let y = msm.forward_sync(vec![Tensor::from(x)]).unwrap();
    assert_close(&y[0], &want[0], "resnet18, 1 stream x 2 cpus");
    assert!(
        matches!(model.weight_sharing(), Some(Ok(_))),
        "{:?}",
        model.weight_sharing()
    );
}

#[test]
fn minilm_i64_inputs_same_through_every_session_kind() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let path = format!(
        "{}/models/paraphrase-MiniLM-L3-v2.onnx",
        env!("CARGO_MANIFEST_DIR")
    );
    if !Path::new(&path).exists() {
        eprintln!("skipped: {path} missing (scripts/fetch-models.sh)");
        return;
    }
    let Some(cpus) = two_cpus() else { return };
    let (b, n) = (3, 12);
    let ids = ArrayD::from_shape_fn(IxDyn(&[b, n]), |ix| {
        if ix[1] == 0 {
            101
        } else {
            1000 + (ix[0] * 37 + ix[1] * 11) as i64 % 20000
        }
    });
    let mask = ArrayD::<i64>::ones(IxDyn(&[b, n]));
    let inputs = vec![Tensor::from(ids), Tensor::from(mask)];
    let model = std::sync::Arc::new(OrtModel::load(&path).unwrap());
    assert_eq!(model.inputs()[0].element_type, Some(ElementType::I64));
    let plain = corestream::Module::forward(&*model, inputs.clone()).unwrap();
    for streams in [1, 2] {
        let msm = MultiStreamModule::builder(std::sync::Arc::clone(&model))
            .pool(CpuPool::new(cpus.clone()).unwrap())
            .num_streams(Streams::Count(streams))
            .build()
            .unwrap();
        let y = msm.forward_sync(inputs.clone()).unwrap();
        assert_eq!(y.len(), plain.len());
        for (i, (got, want)) in y.iter().zip(&plain).enumerate() {
            assert_eq!(got.element_type(), want.element_type(), "output {i}");
            match want.element_type() {
                ElementType::F32 => assert_close(
                    got,
                    &want.to_owned_array::<f32>().unwrap(),
                    &format!("output {i}, {streams} streams"),
                ),
                _ => assert_eq!(got, want, "output {i}, {streams} streams"),
            }
        }
    }
    assert!(
        matches!(model.weight_sharing(), Some(Ok(_))),
        "{:?}",
        model.weight_sharing()
    );
}

/// The folder where the optimised graph of shared weights is written is fresh, private and
/// unguessable: another local user's folders at the names earlier releases used
/// (`corestream-ort-{pid}-{n}`), with symbolic links planted for `model.onnx` and
/// `weights.bin`, are neither used nor followed, and the folder used is mode 0700.
#[test]
fn shared_weights_folder_is_private_and_ignores_planted_links() {
    use std::os::unix::fs::{symlink, PermissionsExt};

    let _s = serial();
    if !have_ort() {
        return;
    }
    let Some(cpus) = two_cpus() else { return };
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    let tmp = std::env::temp_dir();
    let planted: Vec<_> = (0..8)
        .map(|n| tmp.join(format!("corestream-ort-{}-{n}", std::process::id())))
        .collect();
    for dir in &planted {
        std::fs::create_dir_all(dir).unwrap();
        for name in ["model.onnx", "weights.bin"] {
            let _ = std::fs::remove_file(dir.join(name));
            symlink(&victim, dir.join(name)).unwrap();
        }
    }
    let before: BTreeSet<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();

    let model = std::sync::Arc::new(OrtModel::load(asset("examplenet1.onnx")).unwrap());
    let msm = MultiStreamModule::builder(std::sync::Arc::clone(&model))
        .pool(CpuPool::new(cpus).unwrap())
        .num_streams(Streams::Count(1))
        .build()
        .unwrap();
    let x = input(&[4, 64, 3, 3], 3);
    let want = reference(&asset("examplenet1.onnx"), std::slice::from_ref(&x));
    let y = msm.forward_sync(vec![Tensor::from(x)]).unwrap();
    assert_close(&y[0], &want[0], "examplenet1 with shared weights");
    assert!(
        matches!(model.weight_sharing(), Some(Ok(_))),
        "{:?}",
        model.weight_sharing()
    );

    // The folder the model made: new, named corestream-ort-*, private.
    let made: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !before.contains(p))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("corestream-ort-"))
        })
        .collect();
    assert!(
        !made.is_empty(),
        "no shared-weights folder in {}",
        tmp.display()
    );
    for dir in &made {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
    // The planted links were neither followed nor replaced.
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    for dir in &planted {
        for name in ["model.onnx", "weights.bin"] {
            let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
            assert!(
                meta.file_type().is_symlink(),
                "{}",
                dir.join(name).display()
            );
        }
    }
    drop(msm);
    drop(model);
    for dir in made {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    for dir in planted {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A multi-CPU stream's session lives as long as the stream: streams come and go over one
/// loaded model (a service rebuilding its `MultiStreamModule`, one `Task` per job) without the
/// model's sessions, or ONNX Runtime's worker threads, piling up. Every stream id is new, so a
/// model that kept a session per id ever seen grew by one session and one thread per stream.
#[test]
fn sessions_of_stopped_streams_are_released() {
    let _s = serial();
    if !have_ort() {
        return;
    }
    let Some(cpus) = two_cpus() else { return };
    let model = std::sync::Arc::new(OrtModel::load(asset("examplenet1.onnx")).unwrap());
    let x = || vec![Tensor::from(input(&[2, 64, 3, 3], 10))];
    // The shared one-thread session, for plain calls.
    corestream::Module::forward(&*model, x()).unwrap();
    assert_eq!(model.session_count(), 1);
    let before = threads();
    for round in 0..12 {
        let pool = CpuPool::new(cpus.clone()).unwrap();
        if round % 2 == 0 {
            let task = Task::new(std::sync::Arc::clone(&model), pool).unwrap();
            task.run_sync(x()).unwrap();
            assert_eq!(
                model.session_count(),
                2,
                "round {round}: shared + the task's"
            );
        } else {
            let msm = MultiStreamModule::builder(std::sync::Arc::clone(&model))
                .pool(pool)
                .num_streams(Streams::Count(1))
                .build()
                .unwrap();
            msm.forward_sync(x()).unwrap();
            assert_eq!(
                model.session_count(),
                2,
                "round {round}: shared + the stream's"
            );
        }
        // The task or module is gone: so is its stream's session.
        assert_eq!(model.session_count(), 1, "after round {round}");
    }
    // ONNX Runtime's workers of those sessions are gone too (each had one), as are the
    // streams' own threads.
    let deadline = Instant::now() + Duration::from_secs(2);
    let left = loop {
        let left = new_threads(&before);
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(left.is_empty(), "threads left behind: {left:?}");
    // The model still serves plain calls and new streams.
    corestream::Module::forward(&*model, x()).unwrap();
    let task = Task::new(std::sync::Arc::clone(&model), CpuPool::new(cpus).unwrap()).unwrap();
    task.run_sync(x()).unwrap();
    assert_eq!(model.session_count(), 2);
}
