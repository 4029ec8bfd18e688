//! Quantized ONNX files (all-MiniLM-L6-v2's, made by `scripts/fetch-models.sh`): the accuracy
//! gate passes the int8 files with the numbers measured for them, refuses a deliberately broken
//! one (made here by corestream-testkit: one weight scale x8) with its numbers, tells quantized
//! files from FP32 ones by their graphs, and compares rerankers and classifiers by rank and
//! label. Skipped with a notice when `models/all-MiniLM-L6-v2` is not fetched (a failure under
//! CI, which fetches it). Each test holds [`shared_blocking`](crate::support::shared_blocking):
//! they load models of 23 to 90 MB, which the fault scenarios' memory checks must not see.

use std::path::{Path, PathBuf};

use corestream_serve::model::accuracy::{self, Accuracy, Thresholds};
use corestream_serve::model::embedder::{self, Backend};
use corestream_serve::model::quantized::{CpuFeatures, OnnxVariant, QuantizedMode};
use corestream_serve::model::{ModelFiles, TextEmbedder};

/// The fetched all-MiniLM-L6-v2 directory, or `None` (a failure under CI, which fetches it).
fn minilm_l6() -> Option<PathBuf> {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/all-MiniLM-L6-v2"
    ));
    if dir.join("onnx/model_qint8_avx512_vnni.onnx").exists() {
        return Some(dir.to_owned());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch the models (scripts/fetch-models.sh)"
    );
    eprintln!("models/all-MiniLM-L6-v2 not fetched: skipping (bash scripts/fetch-models.sh)");
    None
}

/// ONNX Runtime when its library loads (with `CORESTREAM_REQUIRE_ORT=1` its absence fails),
/// else tract, with a notice.
fn backend(test: &str) -> Backend {
    match embedder::ort_library() {
        Ok(_) => Backend::Ort,
        Err(e) => {
            assert!(
                std::env::var("CORESTREAM_REQUIRE_ORT").as_deref() != Ok("1"),
                "CORESTREAM_REQUIRE_ORT=1 but ONNX Runtime is unavailable: {e}"
            );
            eprintln!("{test}: ONNX Runtime not found, on tract ({e})");
            Backend::Tract
        }
    }
}

/// The gate of `file` in `dir` on `backend`, as the service runs it.
fn gate(dir: &Path, file: &str, backend: Backend) -> corestream::Result<Option<Accuracy>> {
    let files = ModelFiles::from_dir(dir)?.with_onnx_file(dir, Path::new(file))?;
    let (model, tokenizer) = TextEmbedder::load_with_tokenizer(&files, backend)?;
    accuracy::gate(&files, &model, &tokenizer, backend)
}

/// Both int8-compute files pass with the cosines measured in Python (each probe alone: mean
/// 0.991, worst 0.956 for qint8 and 0.964 for quint8, over the 50 probes the first 50 of ours
/// are), on ONNX Runtime (tract when it is missing).
#[test]
fn the_int8_files_pass_the_gate_with_their_measured_numbers() {
    let _shared = crate::support::shared_blocking();
    let Some(dir) = minilm_l6() else { return };
    let backend = backend("the_int8_files_pass_the_gate");
    for file in [
        "onnx/model_qint8_avx512_vnni.onnx",
        "onnx/model_quint8_avx2.onnx",
    ] {
        let report = gate(&dir, file, backend)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .expect("a quantized file is gated");
        eprintln!(
            "{file} on {backend}: {} in {:.2} s",
            report.summary(),
            report.seconds
        );
        assert!(report.passed, "{report:?}");
        assert_eq!(report.file, file);
        assert_eq!(report.reference, "model.onnx");
        assert_eq!(report.model_type, "embedding");
        assert_eq!(report.probes, 52);
        assert_eq!(report.thresholds, Thresholds::default());
        assert!(
            report.quantization.starts_with("int8 compute (")
                && report.quantization.contains("MatMulInteger"),
            "{}",
            report.quantization
        );
        let (mean, worst) = (report.mean_cosine.unwrap(), report.worst_cosine.unwrap());
        assert!((0.985..0.998).contains(&mean), "{file}: mean cosine {mean}");
        assert!(
            (0.93..0.99).contains(&worst),
            "{file}: worst cosine {worst}"
        );
        assert!(!report.worst_probe.as_deref().unwrap_or("").is_empty());
    }
    // The int8-storage file (FP32 compute) is gated too, and is closer still.
    let storage = gate(&dir, "onnx/model_int8_weights.onnx", backend)
        .unwrap()
        .expect("int8 weights are quantized");
    assert!(
        storage
            .quantization
            .starts_with("int8 storage, FP32 compute"),
        "{}",
        storage.quantization
    );
    assert!(storage.mean_cosine.unwrap() > 0.998, "{storage:?}");
}

/// A file with one weight scale x8 (as `scripts/quantize.sh --broken` makes it) is refused;
/// the error names it, its reference, and gives the numbers and thresholds. With the gate off
/// (`--min-cosine 0`) it would load.
#[test]
fn a_broken_int8_file_is_refused_with_its_numbers() {
    let _shared = crate::support::shared_blocking();
    let Some(dir) = minilm_l6() else { return };
    let backend = backend("a_broken_int8_file_is_refused");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("onnx")).unwrap();
    for f in [
        "model.onnx",
        "tokenizer.json",
        "config.json",
        "sentence_bert_config.json",
    ] {
        std::os::unix::fs::symlink(dir.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::create_dir(tmp.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        dir.join("1_Pooling/config.json"),
        tmp.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    // Under the good file's name: the automatic choice on an AVX-512 VNNI machine.
    let broken = "onnx/model_qint8_avx512_vnni.onnx";
    let scale = corestream_testkit::broken::scale_one_weight(
        &dir.join("onnx/model_qint8_avx512_vnni.onnx"),
        &tmp.path().join(broken),
        8.0,
    )
    .unwrap();
    assert_eq!(scale, "val_105_scale");

    let error = gate(tmp.path(), broken, backend)
        .expect_err("the broken file is refused")
        .to_string();
    eprintln!("{error}");
    for part in [
        "model_qint8_avx512_vnni.onnx",
        "accuracy gate: onnx/model_qint8_avx512_vnni.onnx (int8 compute (",
        "answers unlike model.onnx",
        "over 52 probes",
        "< 0.98",
        "< 0.9",
        "--onnx-file model.onnx",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    // The numbers measured in Python: mean 0.526, worst 0.220.
    let number = |after: &str| -> f64 {
        let rest = &error[error.find(after).unwrap() + after.len()..];
        rest[..rest.find([',', ' ']).unwrap()].parse().unwrap()
    };
    assert!((0.4..0.65).contains(&number("mean cosine ")), "{error}");
    assert!((0.1..0.35).contains(&number(", worst ")), "{error}");

    // With the gate off, it loads (and nothing is compared).
    let mut files = ModelFiles::from_dir(tmp.path())
        .unwrap()
        .with_onnx_file(tmp.path(), Path::new(broken))
        .unwrap();
    files.gate = Thresholds {
        mean_cosine: 0.0,
        worst_cosine: 0.0,
        agreement: 0.9,
    };
    let (model, tokenizer) = TextEmbedder::load_with_tokenizer(&files, backend).unwrap();
    assert!(accuracy::gate(&files, &model, &tokenizer, backend)
        .unwrap()
        .is_none());
}

/// The automatic choice on this machine's CPU, and which files the gate applies to: none for
/// the FP32 file or an FP32 copy under another name.
#[test]
fn the_cpu_chooses_and_only_quantized_files_are_gated() {
    let _shared = crate::support::shared_blocking();
    let Some(dir) = minilm_l6() else { return };
    let cpu = CpuFeatures::detect();
    let files = ModelFiles::from_dir(&dir).unwrap();
    assert_eq!(files.onnx_reason, "the directory's FP32 file: model.onnx");
    assert!(accuracy::reference_for(&files).unwrap().is_none());
    let chosen = files
        .clone()
        .with_quantized(QuantizedMode::Auto, &cpu, Backend::Ort);
    let name = chosen
        .onnx
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    eprintln!("this CPU ({cpu}): {}", chosen.onnx_reason);
    let expected = if cpu.avx512_vnni || cpu.amx_int8 {
        OnnxVariant::Qint8Avx512Vnni
    } else if cpu.avx2 {
        // The directory has no model_qint8_avx512.onnx: AVX-512 BW falls to the AVX2 file.
        OnnxVariant::Quint8Avx2
    } else {
        OnnxVariant::Fp32
    };
    assert_eq!(OnnxVariant::of(&name), expected, "{}", chosen.onnx_reason);
    assert!(
        chosen.onnx_reason.ends_with(&name),
        "{}",
        chosen.onnx_reason
    );
    let off = files
        .clone()
        .with_quantized(QuantizedMode::Off, &cpu, Backend::Ort);
    assert!(off.onnx.ends_with("model.onnx"));
    assert_eq!(off.onnx_reason, "--quantized off: model.onnx");
    let tract = files.with_quantized(QuantizedMode::Auto, &cpu, Backend::Tract);
    assert!(tract.onnx.ends_with("model.onnx"));
    assert!(
        tract.onnx_reason.starts_with("backend tract"),
        "{}",
        tract.onnx_reason
    );

    // An FP32 copy under another name: not quantized, not gated.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["model.onnx", "tokenizer.json"] {
        std::os::unix::fs::symlink(dir.join(f), tmp.path().join(f)).unwrap();
    }
    std::os::unix::fs::symlink(dir.join("model.onnx"), tmp.path().join("model_copy.onnx")).unwrap();
    let copy = ModelFiles::from_dir(tmp.path())
        .unwrap()
        .with_onnx_file(tmp.path(), Path::new("model_copy.onnx"))
        .unwrap();
    assert_eq!(copy.onnx_reason, "--onnx-file model_copy.onnx");
    assert!(accuracy::reference_for(&copy).unwrap().is_none());
}

/// Rerankers are compared by how they rank each query's documents, classifiers by the labels
/// they give: a file against itself agrees fully; against a model with another scoring head
/// (what a broken file would look like) it fails the gate with the numbers.
#[test]
fn rerankers_and_classifiers_are_compared_by_rank_and_label() {
    let _shared = crate::support::shared_blocking();
    use corestream_serve::model::{ModelKind, TextTokenizer};
    use corestream_testkit::heads::{classifier_config, reranker_config, Head};

    let minilm = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    if !minilm.join("paraphrase-MiniLM-L3-v2.onnx").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must fetch the models");
        eprintln!("models/ not fetched: skipping");
        return;
    }
    let backend = backend("rerankers_and_classifiers_are_compared");
    let tmp = tempfile::tempdir().unwrap();
    let load = |name: &str, head: &Head, config: &serde_json::Value| {
        let dir = tmp.path().join(name);
        head.write(minilm, &dir, config).unwrap();
        let files = ModelFiles::from_dir(&dir).unwrap();
        let (model, tokenizer): (TextEmbedder, TextTokenizer) =
            TextEmbedder::load_with_tokenizer(&files, backend).unwrap();
        (model, tokenizer, files.kind)
    };
    let (reranker, tokenizer, kind) = load("rr", &Head::random(1, 7), &reranker_config());
    assert_eq!(kind, ModelKind::Reranker);
    let (other, _, _) = load("rr-other", &Head::random(1, 99), &reranker_config());
    let mut same = Accuracy::measure(&reranker, &reranker, &tokenizer, &kind).unwrap();
    same.judge(Thresholds::default());
    assert!(same.passed, "{same:?}");
    assert_eq!(same.rank_agreement, Some(1.0));
    assert_eq!(same.top1_agreement, Some(1.0));
    assert_eq!(same.mean_abs_score_diff, Some(0.0));
    assert_eq!(same.probes, 50);
    let mut unlike = Accuracy::measure(&reranker, &other, &tokenizer, &kind).unwrap();
    unlike.judge(Thresholds::default());
    eprintln!("reranker, another head: {}", unlike.summary());
    assert!(!unlike.passed, "{unlike:?}");
    assert!(unlike.rank_agreement.unwrap() < 0.9, "{unlike:?}");
    let failure = unlike.failure().unwrap();
    assert!(failure.contains("rank agreement"), "{failure}");

    let (classifier, tokenizer, kind) = load("cls", &Head::random(3, 7), &classifier_config(false));
    let (other, _, _) = load("cls-other", &Head::random(3, 99), &classifier_config(false));
    let mut same = Accuracy::measure(&classifier, &classifier, &tokenizer, &kind).unwrap();
    same.judge(Thresholds::default());
    assert!(same.passed && same.label_agreement == Some(1.0), "{same:?}");
    assert!(same.worst_probe.is_none());
    let mut unlike = Accuracy::measure(&classifier, &other, &tokenizer, &kind).unwrap();
    unlike.judge(Thresholds::default());
    eprintln!("classifier, another head: {}", unlike.summary());
    assert!(
        !unlike.passed && unlike.label_agreement.unwrap() < 0.9,
        "{unlike:?}"
    );
    assert!(unlike.failure().unwrap().contains("label agreement"));
}

/// `corestream serve --model DIR` as the command loads it: the file the CPU chooses, why, and
/// the gate's numbers in `/info`; `--quantized off` serves the FP32 file ungated; the vectors
/// of both through their batchers agree within the gate. `--onnx-file` of the broken file
/// fails the load.
#[test]
fn serve_chooses_gates_and_reports_the_int8_file() {
    let _shared = crate::support::shared_blocking();
    use clap::Parser;
    use corestream::batch::Rows;
    use corestream_serve::model::{probes, Encoded};
    use corestream_serve::service::load;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        serve: corestream_serve::Args,
    }
    let Some(dir) = minilm_l6() else { return };
    let backend = backend("serve_chooses_gates_and_reports_the_int8_file");
    let backend_name = backend.to_string();
    let serve = |extra: &[&str]| {
        let args = ["serve", "--model", dir.to_str().unwrap(), "--streams", "1"]
            .into_iter()
            .chain(["--backend", &backend_name])
            .chain(extra.iter().copied());
        load::load(&Command::parse_from(args).serve)
    };
    let auto = serve(&[]).unwrap();
    let auto = auto.iter().next().unwrap();
    let info = &auto.info;
    let reason = info.onnx_file_reason.as_deref().unwrap();
    let chosen = info.onnx_file.as_deref().unwrap();
    eprintln!("chosen: {chosen} ({reason})");
    assert!(reason.ends_with(chosen), "{reason}");
    match OnnxVariant::of(chosen) {
        OnnxVariant::Fp32 => assert!(info.accuracy_gate.is_none()),
        _ => {
            let gate = info
                .accuracy_gate
                .as_ref()
                .expect("a quantized file is gated");
            assert!(gate.passed && gate.file.ends_with(chosen), "{gate:?}");
            assert_eq!(gate.reference, "model.onnx");
            assert!(gate.seconds > 0.0);
            let json = serde_json::to_value(info).unwrap();
            assert!(
                json["accuracy_gate"]["mean_cosine"].as_f64().unwrap() > 0.98,
                "{json}"
            );
        }
    }
    let off = serve(&["--quantized", "off"]).unwrap();
    let off = off.iter().next().unwrap();
    assert_eq!(off.info.onnx_file.as_deref(), Some("model.onnx"));
    assert_eq!(
        off.info.onnx_file_reason.as_deref(),
        Some("--quantized off: model.onnx")
    );
    assert!(off.info.accuracy_gate.is_none());

    // Each probe alone through both services' batchers.
    let embed = |loaded: &corestream_serve::service::Loaded, text: &str| {
        let ids = loaded.tokenizer.encode(text).unwrap();
        let rows =
            futures::executor::block_on(loaded.embedder.infer(Rows(vec![Encoded::single(ids)])))
                .unwrap();
        rows.0.into_iter().next().unwrap()
    };
    let cosines: Vec<f64> = probes::SENTENCES[..20]
        .iter()
        .map(|t| accuracy::cosine(&embed(auto, t), &embed(off, t)))
        .collect();
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    let worst = cosines.iter().copied().fold(1.0, f64::min);
    assert!(mean >= 0.98 && worst >= 0.9, "mean {mean}, worst {worst}");

    // Thresholds above what the int8 files reach: the chosen quantized file does not load.
    if OnnxVariant::of(chosen).is_quantized() {
        let error = serve(&["--min-cosine", "0.999"]).unwrap_err().to_string();
        assert!(
            error.contains("accuracy gate: ") && error.contains("< 0.999"),
            "{error}"
        );
    }
}
