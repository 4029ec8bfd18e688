//! `corestream serve` as a user runs it: the built command started as a process.
//!
//! - On a model directory laid out as Hugging Face lays it out (`config.json`,
//!   `tokenizer.json`, `onnx/model.onnx`, `1_Pooling/config.json`,
//!   `sentence_bert_config.json`; the fetched MiniLM-L3 files, `scripts/fetch-models.sh`):
//!   `/info`, `/v1/embeddings` and `/embed` answer, the startup line says what was chosen,
//!   `--model FILE.onnx --tokenizer FILE.json` serves the same vectors, `--pooling cls`
//!   other ones, and a directory without a model leaves `/health` at 503 (the reason in the
//!   log, not in the answer).
//! - Two models in one process (`--model NAME=DIR` twice): on their own CPUs, or shared.
//! - `--streams tune`: the profiles measured before serving, the chosen one served, reported
//!   in `/info` and the log, with the vectors of `--streams auto`.
//! - A cross-encoder's and a classifier's directories (made from MiniLM by
//!   corestream-testkit) are served as rerankers and classifiers.
//! - all-MiniLM-L6-v2 with its int8 files: the file the CPU suits is served after the accuracy
//!   gate (`/info` and the log say which, why, and the gate's numbers), `--quantized off`
//!   serves FP32 with vectors within the gate of the int8 server's, a broken int8 file is
//!   refused (`/health` 503, the numbers in the log).
//!
//! SIGTERM under load on both servers: `serve_sigterm.rs`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{call, fetched_minilm, hugging_face_dir, one_at_a_time, wait_health, Process};

/// The vectors `POST /v1/embeddings` answers for `texts`.
fn embeddings(base: &str, texts: &[&str]) -> Vec<Vec<f64>> {
    let (status, body) = call(
        &format!("{base}/v1/embeddings"),
        Some(json!({"input": texts, "model": "any"})),
    );
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

const TEXTS: [&str; 3] = [
    "A cat sits on the mat.",
    "Stocks fell sharply on Monday.",
    "Ein Hund läuft im Park.",
];

#[test]
fn serves_a_hugging_face_model_directory() {
    let _alone = one_at_a_time();
    let Some((onnx, tokenizer)) = fetched_minilm() else {
        return;
    };
    let (_tmp, dir) = hugging_face_dir(&onnx, &tokenizer);
    let mut process = Process::start(&["--model", dir.to_str().unwrap(), "--streams", "1"]);
    let base = process.base();
    wait_health(&mut process, &base, 200);

    // The one startup line says what was chosen.
    let ready = process.wait_log("ready");
    assert_eq!(ready["model"], "paraphrase-minilm", "{ready}");
    assert_eq!(ready["streams"], 1, "{ready}");
    assert_eq!(ready["max_input_length"], 96, "{ready}");
    assert_eq!(ready["pooling"], "mean", "{ready}");
    for field in [
        "backend",
        "stream_cpus",
        "max_batch",
        "max_batch_tokens",
        "server",
    ] {
        assert!(!ready[field].is_null(), "no {field} in {ready}");
    }

    let (status, info) = call(&format!("{base}/info"), None);
    assert_eq!(status, 200);
    assert_eq!(info["model_id"], "paraphrase-minilm", "{info}");
    assert_eq!(info["dimension"], 384, "{info}");
    assert_eq!(info["max_input_length"], 96, "{info}");
    assert_eq!(
        info["max_input_length_source"],
        "sentence_bert_config.json /max_seq_length"
    );
    assert_eq!(info["pooling"], "mean", "{info}");

    let vectors = embeddings(&base, &TEXTS);
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    // Different sentences, different vectors.
    assert!(max_diff(&vectors[..1], &vectors[1..2]) > 0.01);

    // text-embeddings-inference's route answers the same vectors.
    let (status, tei) = call(&format!("{base}/embed"), Some(json!({"inputs": TEXTS})));
    assert_eq!(status, 200, "{tei}");
    let tei: Vec<Vec<f64>> = serde_json::from_value(tei).unwrap();
    assert!(max_diff(&tei, &vectors) < 1e-6);
    drop(process);

    // The ONNX file and the tokenizer file named apart: the same vectors.
    let mut files = Process::start(&[
        "--model",
        dir.join("onnx/model.onnx").to_str().unwrap(),
        "--tokenizer",
        dir.join("tokenizer.json").to_str().unwrap(),
        "--streams",
        "1",
    ]);
    let base = files.base();
    wait_health(&mut files, &base, 200);
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["model_id"], "paraphrase-minilm", "{info}");
    assert!(max_diff(&embeddings(&base, &TEXTS), &vectors) < 1e-5);
    drop(files);

    // --pooling overrides the directory's: CLS vectors differ from mean-pooled ones.
    let mut cls = Process::start(&["--model", dir.to_str().unwrap(), "--pooling", "cls"]);
    let base = cls.base();
    wait_health(&mut cls, &base, 200);
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["pooling"], "cls", "{info}");
    assert!(max_diff(&embeddings(&base, &TEXTS), &vectors) > 0.01);
}

/// The directory's `config_sentence_transformers.json` prompts: listed in `/info`, put before
/// each input by `--default-prompt-name` (vectors of the prompted texts), or by a request's
/// `prompt_name`; a default name the directory lacks fails the load, saying which exist.
#[test]
fn prompts_from_the_directory_and_the_flags() {
    let _alone = one_at_a_time();
    let Some((onnx, tokenizer)) = fetched_minilm() else {
        return;
    };
    let (_tmp, dir) = hugging_face_dir(&onnx, &tokenizer);
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        r#"{"prompts": {"query": "query: ", "passage": ""}, "default_prompt_name": null}"#,
    )
    .unwrap();
    let prompted: Vec<String> = TEXTS.iter().map(|t| format!("query: {t}")).collect();
    let prompted: Vec<&str> = prompted.iter().map(String::as_str).collect();

    let mut plain = Process::start(&["--model", dir.to_str().unwrap(), "--streams", "1"]);
    let base = plain.base();
    wait_health(&mut plain, &base, 200);
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["prompts"], json!(["passage", "query"]), "{info}");
    assert!(info["default_prompt_name"].is_null(), "{info}");
    let want = embeddings(&base, &prompted);
    let (status, named) = call(
        &format!("{base}/embed"),
        Some(json!({"inputs": TEXTS, "prompt_name": "query"})),
    );
    assert_eq!(status, 200, "{named}");
    let named: Vec<Vec<f64>> = serde_json::from_value(named).unwrap();
    assert!(max_diff(&named, &want) < 1e-6);
    drop(plain);

    let mut default = Process::start(&[
        "--model",
        dir.to_str().unwrap(),
        "--streams",
        "1",
        "--default-prompt-name",
        "query",
    ]);
    let base = default.base();
    wait_health(&mut default, &base, 200);
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["default_prompt_name"], "query", "{info}");
    assert_eq!(info["default_prompt"], "query: ", "{info}");
    assert!(max_diff(&embeddings(&base, &TEXTS), &want) < 1e-6);
    drop(default);

    let mut unknown = Process::start(&[
        "--model",
        dir.to_str().unwrap(),
        "--default-prompt-name",
        "title",
    ]);
    let base = unknown.base();
    wait_health(&mut unknown, &base, 503);
    let logged = unknown.wait_log("model load failed");
    let error = logged["error"].as_str().unwrap_or_default();
    assert!(error.contains("\"title\" is not configured"), "{logged}");
    assert!(error.contains("passage, query"), "{logged}");
}

/// `--onnx-file` serves another ONNX file of the directory (here a copy of the model, as the
/// quantised files sit beside `onnx/model.onnx` in Hugging Face repositories), says so in
/// `/info`; one the directory lacks fails the load, listing the files it has.
#[test]
fn onnx_file_picks_a_file_of_the_directory() {
    let _alone = one_at_a_time();
    let Some((onnx, tokenizer)) = fetched_minilm() else {
        return;
    };
    let (_tmp, dir) = hugging_face_dir(&onnx, &tokenizer);
    std::fs::copy(
        dir.join("onnx/model.onnx"),
        dir.join("onnx/model_copy.onnx"),
    )
    .unwrap();
    let mut copy = Process::start(&[
        "--model",
        dir.to_str().unwrap(),
        "--streams",
        "1",
        "--onnx-file",
        "onnx/model_copy.onnx",
    ]);
    let base = copy.base();
    wait_health(&mut copy, &base, 200);
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["onnx_file"], "model_copy.onnx", "{info}");
    let ready = copy.wait_log("ready");
    assert_eq!(ready["onnx_file"], "model_copy.onnx", "{ready}");
    assert_eq!(embeddings(&base, &TEXTS).len(), TEXTS.len());
    drop(copy);

    let mut missing = Process::start(&[
        "--model",
        dir.to_str().unwrap(),
        "--onnx-file",
        "onnx/model_qint8_avx512_vnni.onnx",
    ]);
    let base = missing.base();
    wait_health(&mut missing, &base, 503);
    let logged = missing.wait_log("model load failed");
    let error = logged["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("it has: onnx/model.onnx, onnx/model_copy.onnx"),
        "{logged}"
    );
}

/// A cross-encoder's and a classifier's directories (config.json says
/// `BertForSequenceClassification`) are served as what they are: the startup line and `/info`
/// name the kind, the kind's routes answer with the scores the model gives, the embedding
/// routes refuse.
#[test]
fn serves_rerankers_and_classifiers_by_their_config() {
    use corestream_testkit::heads::{classifier_config, reranker_config, Head, LABELS};
    let _alone = one_at_a_time();
    let Some((onnx, _)) = fetched_minilm() else {
        return;
    };
    let minilm = onnx.parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (reranker, classifier) = (Head::random(1, 7), Head::random(3, 11));
    reranker
        .write(minilm, &tmp.path().join("reranker"), &reranker_config())
        .unwrap();
    classifier
        .write(
            minilm,
            &tmp.path().join("classifier"),
            &classifier_config(false),
        )
        .unwrap();

    let mut server = Process::start(&[
        "--model",
        tmp.path().join("reranker").to_str().unwrap(),
        "--streams",
        "1",
    ]);
    let base = server.base();
    wait_health(&mut server, &base, 200);
    let ready = server.wait_log("ready");
    assert_eq!(ready["model_type"], "reranker", "{ready}");
    let reference = reranker.reference(minilm, corestream::backend::Backend::Tract);
    let texts = ["cats nap all day", "the market fell", "kittens sleep a lot"];
    let (s, ranks) = call(
        &format!("{base}/rerank"),
        Some(json!({"query": "how do cats sleep", "texts": texts, "raw_scores": true})),
    );
    assert_eq!(s, 200, "{ranks}");
    let ranks = ranks.as_array().unwrap();
    assert_eq!(ranks.len(), 3);
    for r in ranks {
        let i = r["index"].as_u64().unwrap() as usize;
        let want = reference.scores("how do cats sleep", Some(texts[i]))[0];
        assert!(
            (r["score"].as_f64().unwrap() - f64::from(want)).abs() < 1e-4,
            "{r}"
        );
    }
    let (s, e) = call(&format!("{base}/embed"), Some(json!({"inputs": "x"})));
    assert_eq!(s, 400, "{e}");
    drop(server);

    let mut server = Process::start(&[
        "--model",
        tmp.path().join("classifier").to_str().unwrap(),
        "--streams",
        "1",
    ]);
    let base = server.base();
    wait_health(&mut server, &base, 200);
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["model_type"], "classifier", "{info}");
    assert_eq!(info["labels"], json!(LABELS), "{info}");
    let (s, labels) = call(
        &format!("{base}/predict"),
        Some(json!({"inputs": "the service answered quickly"})),
    );
    assert_eq!(s, 200, "{labels}");
    let sum: f64 = labels
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["score"].as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-5, "softmax: {labels}");
}

/// Two models in one process: each on its own share of the CPUs by default (all of them with
/// `--model-cpus shared`), one startup line each, both listed, each reached by its route or
/// its name.
#[test]
fn serves_several_models_on_their_share_of_the_cpus() {
    use corestream_testkit::heads::{reranker_config, Head};
    let _alone = one_at_a_time();
    let Some((onnx, tokenizer)) = fetched_minilm() else {
        return;
    };
    let (_tmp, embedder) = hugging_face_dir(&onnx, &tokenizer);
    let rerankers = tempfile::tempdir().unwrap();
    let reranker = rerankers.path().join("reranker");
    Head::random(1, 7)
        .write(onnx.parent().unwrap(), &reranker, &reranker_config())
        .unwrap();
    let embedder = format!("emb={}", embedder.display());
    let reranker = format!("org/rr={}", reranker.display());
    let cpus = corestream::CpuPool::all().unwrap().len();
    let quota = corestream::quota::CpuQuota::detect().map_or(cpus, |q| q.whole_cpus());
    for shared in [false, true] {
        let mut args = vec!["--model", &embedder, "--model", &reranker];
        if shared {
            args.extend(["--model-cpus", "shared"]);
        }
        let mut server = Process::start(&args);
        let base = server.base();
        wait_health(&mut server, &base, 200);
        let ready: Vec<Value> = server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ready"))
            })
            .map(|v| v["fields"].clone())
            .collect();
        let names: Vec<&str> = ready.iter().map(|r| r["model"].as_str().unwrap()).collect();
        assert_eq!(names, ["emb", "org/rr"], "{ready:?}");
        let (_, models) = call(&format!("{base}/v1/models"), None);
        assert_eq!(models["data"][1]["id"], "org/rr", "{models}");
        let (_, emb) = call(&format!("{base}/models/emb/info"), None);
        let (_, rr) = call(&format!("{base}/models/org/rr/info"), None);
        assert_eq!(rr["model_type"], "reranker", "{rr}");
        let split = !shared && cpus.min(quota) >= 2;
        assert_eq!(
            emb["stream_cpus"] != rr["stream_cpus"],
            split,
            "shared: {shared}, {cpus} CPUs: {} vs {}",
            emb["stream_cpus"],
            rr["stream_cpus"]
        );
        let (s, a) = call(&format!("{base}/embed"), Some(json!({"inputs": "a cat"})));
        assert_eq!(s, 200, "{a}");
        let (s, a) = call(
            &format!("{base}/rerank"),
            Some(json!({"query": "cats", "texts": ["a cat", "a market"]})),
        );
        assert_eq!(s, 200, "{a}");
        let (s, a) = call(
            &format!("{base}/v1/embeddings"),
            Some(json!({"input": "x", "model": "org/rr"})),
        );
        assert_eq!(
            (s, &a["error"]["code"]),
            (400, &json!("wrong_model_type")),
            "{a}"
        );
    }
}

#[test]
fn a_directory_without_a_model_answers_503_and_logs_the_reason() {
    let _alone = one_at_a_time();
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("tokenizer.json"), "{}").unwrap();
    let mut process = Process::start(&["--model", empty.path().to_str().unwrap()]);
    let base = process.base();
    let body = wait_health(&mut process, &base, 503);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut body = body;
    while body["status"] != "failed" {
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(50));
        body = call(&format!("{base}/health"), None).1;
    }
    // Clients learn that the load failed, not the server's paths; the log says why.
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("failed to load"), "{body}");
    assert!(
        !message.contains(&*empty.path().to_string_lossy()),
        "{body}"
    );
    let logged = process.wait_log("model load failed");
    let error = logged["error"].as_str().unwrap_or_default();
    assert!(error.contains("no ONNX model"), "{logged}");
    assert!(error.contains("onnx/model.onnx"), "{logged}");
    let (status, _) = call(
        &format!("{base}/v1/embeddings"),
        Some(json!({"input": "x"})),
    );
    assert_eq!(status, 503);
}

/// The count of wide batches in `/metrics`' text for the model `name`.
fn wide_batches(base: &str, name: &str) -> u64 {
    let text = support::block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let prefix = format!("corestream_batcher_wide_batches_total{{model=\"{name}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// `--width`: adaptive by default (on ONNX Runtime a lone request runs across every CPU,
/// counted in `/metrics`), narrow or wide by flag; the vectors are the same in every mode.
#[test]
fn batches_run_wide_when_alone_and_the_width_flag_pins_a_mode() {
    let _alone = one_at_a_time();
    let Some((onnx, tokenizer)) = fetched_minilm() else {
        return;
    };
    let (_tmp, dir) = hugging_face_dir(&onnx, &tokenizer);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut answers = Vec::new();
    for (flags, width) in [
        (&[][..], "adaptive (wide up to 8 rows)"),
        (&["--width", "narrow"][..], "narrow"),
        (&["--width", "wide"][..], "wide"),
        (
            &["--width", "adaptive", "--wide-max-rows", "2"][..],
            "adaptive (wide up to 2 rows)",
        ),
    ] {
        let mut args = vec!["--model", dir.to_str().unwrap()];
        args.extend_from_slice(flags);
        let mut process = Process::start(&args);
        let base = process.base();
        wait_health(&mut process, &base, 200);
        let ready = process.wait_log("ready");
        let (_, info) = call(&format!("{base}/info"), None);
        let ort = info["backend"].as_str().unwrap().starts_with("ort");
        // tract computes on its calling thread only: its batches always run narrow.
        let expected = if ort { width } else { "narrow" };
        assert_eq!(info["width"], expected, "{flags:?}: {info}");
        assert_eq!(ready["width"], expected, "{flags:?}: {ready}");
        // One request at a time: each finds the pool idle, and runs wide unless a stream has
        // just seen a neighbour on its CPU (this test's client and the HTTP threads can be
        // one, for a quiet period of at most 0.5 s): 20 ms apart, for 2 s at most.
        let vectors: Vec<_> = TEXTS
            .iter()
            .map(|t| embeddings(&base, &[t]).remove(0))
            .collect();
        let runs_wide = ort && cpus > 1 && width != "narrow";
        for _ in 0..100 {
            if !runs_wide || wide_batches(&base, "paraphrase-minilm") > 0 {
                break;
            }
            embeddings(&base, &TEXTS[..1]);
            std::thread::sleep(Duration::from_millis(20));
        }
        let wide = wide_batches(&base, "paraphrase-minilm");
        if width == "wide" && runs_wide {
            assert_eq!(wide, 3, "{flags:?}: every batch wide");
        } else {
            assert_eq!(wide > 0, runs_wide, "{flags:?}: {wide} wide batches");
        }
        answers.push(vectors);
    }
    for other in &answers[1..] {
        assert!(max_diff(&answers[0], other) < 1e-5);
    }
}

/// `--streams tune`: before serving, a sweep on the model measures the planned profiles
/// (streams x threads per stream, token budgets) on the CPUs `auto` uses; the fastest serves,
/// and `/info`, the startup line and the `streams tuned` line say so. The vectors are those of
/// `--streams auto`; the sweep leaves no trace in `/metrics`.
#[test]
fn streams_tune_measures_profiles_and_serves_the_fastest() {
    let _alone = one_at_a_time();
    let Some((onnx, tokenizer)) = fetched_minilm() else {
        return;
    };
    let (_tmp, dir) = hugging_face_dir(&onnx, &tokenizer);
    let dir = dir.to_str().unwrap();
    let cpus = corestream::CpuPool::all().unwrap().len();
    let quota = corestream::quota::CpuQuota::detect();
    let plan = corestream_serve::service::tune::Plan::new(cpus, quota.as_ref(), 16, 96, None);

    let mut tuned = Process::start(&["--model", dir, "--streams", "tune", "--tune-seconds", "1"]);
    let base = tuned.base();
    wait_health(&mut tuned, &base, 200);
    let (status, info) = call(&format!("{base}/info"), None);
    assert_eq!(status, 200);
    let tuning = &info["tuning"];
    let candidates = tuning["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), plan.len(), "{tuning}");
    assert_eq!(tuning["cpus"], plan.cpus, "{tuning}");
    let profile = |c: &Value| {
        (
            c["streams"].as_u64().unwrap() as usize,
            c["threads_per_stream"].as_u64().unwrap() as usize,
            c["max_batch_tokens"].as_u64().unwrap() as usize,
        )
    };
    for c in candidates {
        let (streams, threads, _) = profile(c);
        assert!(plan.streams.contains(&streams), "{c}");
        assert_eq!(streams * threads, plan.cpus, "{c}");
        assert!(c["rows_per_s"].as_f64().unwrap() >= 0.0, "{c}");
    }
    let chosen = profile(&tuning["chosen"]);
    let measured = candidates
        .iter()
        .find(|c| profile(c) == chosen)
        .unwrap_or_else(|| panic!("the chosen profile is not a candidate: {tuning}"));
    assert!(measured["rows_per_s"].as_f64().unwrap() > 0.0, "{tuning}");
    assert_eq!(info["streams"], chosen.0, "{info}");
    assert_eq!(info["stream_cpus"].as_array().unwrap().len(), chosen.0);
    assert_eq!(info["max_batch_tokens"], chosen.2, "{info}");
    assert!(tuning["seconds"].as_f64().unwrap() >= 0.9, "{tuning}");
    // The log: every candidate and the choice, then the startup line.
    let swept = tuned.wait_log("streams tuned");
    let table = swept["candidates"].as_str().unwrap();
    assert_eq!(table.matches("rows/s").count(), plan.len(), "{swept}");
    let ready = tuned.wait_log("ready");
    assert_eq!(ready["streams_tuned"], true, "{ready}");
    assert_eq!(ready["streams"], chosen.0, "{ready}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("tuned: the best of"),
        "{ready}"
    );
    let metrics = support::block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(!metrics.contains("(tuning)"), "{metrics}");
    let vectors = embeddings(&base, &TEXTS);
    drop(tuned);

    let mut plain = Process::start(&["--model", dir, "--streams", "auto"]);
    let base = plain.base();
    wait_health(&mut plain, &base, 200);
    let (_, info) = call(&format!("{base}/info"), None);
    assert!(info["tuning"].is_null(), "{info}");
    assert_eq!(plain.wait_log("ready")["streams_tuned"], false);
    assert!(max_diff(&embeddings(&base, &TEXTS), &vectors) < 1e-5);
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for (args, expected) in [
        (&["--streams", "0"][..], "positive number"),
        (
            &["--streams", "tuned"][..],
            "\"tuned\": expected `auto`, `tune` or a positive number",
        ),
        (
            &["--streams", "tune", "--tune-seconds", "0"][..],
            "from 0.5 to 60",
        ),
        (&["--tune-seconds", "61"][..], "from 0.5 to 60"),
        (
            &["--tune-seconds", "four"][..],
            "\"four\": give the sweep's time",
        ),
        (&["--tune-seconds", "NaN"][..], "from 0.5 to 60"),
        (&["--width", "sideways"][..], "sideways"),
        (&["--wide-max-rows", "0"][..], "0 is not in 1..="),
        (&["--server", "tomcat"][..], "tomcat"),
        (&["--pooling", "median"][..], "mean, cls, max or last-token"),
        (
            &[
                "--model",
                "a=models",
                "--model",
                "b=models",
                "--pooling",
                "cls",
            ][..],
            "--pooling describe one model",
        ),
        (
            &["--model", "a=models", "--model", "a=other"][..],
            "two --model are named \"a\"",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_corestream"))
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The fetched all-MiniLM-L6-v2 directory with its int8 files, and ONNX Runtime (the backend
/// the gate's numbers were measured on); `None` with a notice when either is missing (a
/// failure under CI, which fetches the models, and under `CORESTREAM_REQUIRE_ORT=1`).
fn minilm_l6_on_ort() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/all-MiniLM-L6-v2"
    ));
    if !dir.join("onnx/model_qint8_avx512_vnni.onnx").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the models (scripts/fetch-models.sh)"
        );
        eprintln!("models/all-MiniLM-L6-v2 not fetched: skipping (bash scripts/fetch-models.sh)");
        return None;
    }
    if let Err(e) = corestream::backend::ort::load_library(None) {
        assert!(
            std::env::var("CORESTREAM_REQUIRE_ORT").as_deref() != Ok("1"),
            "CORESTREAM_REQUIRE_ORT=1 but {e}"
        );
        eprintln!("ONNX Runtime not found: skipping the int8 run ({e})");
        return None;
    }
    Some(dir.to_owned())
}

/// Each of `texts` in a request of its own (a batch of one: int8 results move slightly with
/// their batch neighbours), unit length.
fn embeddings_alone(base: &str, texts: &[&str]) -> Vec<Vec<f64>> {
    texts
        .iter()
        .map(|t| embeddings(base, &[t]).remove(0))
        .collect()
}

/// all-MiniLM-L6-v2 served from its directory: on this CPU the int8 file it suits (by
/// /proc/cpuinfo; FP32 without AVX2), `/info` and the ready line say which and why, with the
/// accuracy gate's numbers; `--quantized off` serves FP32, whose vectors agree within the
/// gate; a broken int8 file chosen by `--onnx-file` leaves `/health` at 503 and logs the gate's
/// numbers.
#[test]
fn serves_the_int8_file_the_cpu_suits_after_its_accuracy_gate() {
    use corestream_serve::model::quantized::{CpuFeatures, OnnxVariant};

    let _alone = one_at_a_time();
    let Some(dir) = minilm_l6_on_ort() else {
        return;
    };
    let texts = [
        TEXTS[0],
        TEXTS[1],
        TEXTS[2],
        "OK",
        "Thanks!!!",
        "How do I reset my password?",
    ];
    let dir_arg = dir.to_str().unwrap();
    let start = Instant::now();
    let mut int8 = Process::start(&["--model", dir_arg, "--streams", "1", "--backend", "ort"]);
    let base = int8.base();
    wait_health(&mut int8, &base, 200);
    let ready_after = start.elapsed();
    let cpu = CpuFeatures::detect();
    let expected = if cpu.avx512_vnni || cpu.amx_int8 {
        "model_qint8_avx512_vnni.onnx"
    } else if cpu.avx2 {
        "model_quint8_avx2.onnx"
    } else {
        "model.onnx"
    };
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["onnx_file"], expected, "{info:#}");
    let reason = info["onnx_file_reason"].as_str().unwrap();
    assert!(reason.ends_with(expected), "{reason}");
    let ready = int8.wait_log("ready");
    assert_eq!(ready["onnx_file"], expected, "{ready}");
    assert_eq!(ready["onnx_file_reason"], reason, "{ready}");
    let quantized = OnnxVariant::of(expected).is_quantized();
    if quantized {
        assert!(reason.starts_with("cpu has "), "{reason}");
        let gate = &info["accuracy_gate"];
        assert_eq!(gate["passed"], true, "{gate:#}");
        assert_eq!(gate["reference"], "model.onnx");
        assert_eq!(gate["probes"], 52);
        let mean = gate["mean_cosine"].as_f64().unwrap();
        assert!(mean > 0.985, "{gate:#}");
        assert!(
            ready["accuracy_gate"]
                .as_str()
                .unwrap()
                .starts_with("mean cosine 0.99"),
            "{ready}"
        );
        let passed = int8.wait_log("accuracy gate passed");
        assert_eq!(passed["file"], format!("onnx/{expected}"), "{passed}");
        eprintln!(
            "int8 ready after {:.1} s, the gate took {:.2} s: {}",
            ready_after.as_secs_f64(),
            gate["seconds"].as_f64().unwrap(),
            passed["message"]
        );
    } else {
        assert!(info["accuracy_gate"].is_null(), "{info:#}");
    }
    let int8_vectors = embeddings_alone(&base, &texts);
    drop(int8);

    let start = Instant::now();
    let mut fp32 = Process::start(&[
        "--model",
        dir_arg,
        "--streams",
        "1",
        "--backend",
        "ort",
        "--quantized",
        "off",
    ]);
    let base = fp32.base();
    wait_health(&mut fp32, &base, 200);
    eprintln!("FP32 ready after {:.1} s", start.elapsed().as_secs_f64());
    let (_, info) = call(&format!("{base}/info"), None);
    assert_eq!(info["onnx_file"], "model.onnx", "{info:#}");
    assert_eq!(info["onnx_file_reason"], "--quantized off: model.onnx");
    assert!(info["accuracy_gate"].is_null(), "{info:#}");
    let fp32_vectors = embeddings_alone(&base, &texts);
    drop(fp32);
    let cosines: Vec<f64> = int8_vectors
        .iter()
        .zip(&fp32_vectors)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>())
        .collect();
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    assert!(
        mean >= 0.98 && cosines.iter().all(|c| *c >= 0.9),
        "{cosines:?}"
    );
    if quantized {
        // Not the same vectors: the int8 file computes otherwise.
        assert!(max_diff(&int8_vectors, &fp32_vectors) > 1e-4);
    }

    // A broken int8 file (one weight scale x8), named by --onnx-file: refused.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("onnx")).unwrap();
    for f in ["model.onnx", "tokenizer.json", "config.json", "1_Pooling"] {
        std::os::unix::fs::symlink(dir.join(f), tmp.path().join(f)).unwrap();
    }
    corestream_testkit::broken::scale_one_weight(
        &dir.join("onnx/model_qint8_avx512_vnni.onnx"),
        &tmp.path().join("onnx/model_qint8_avx512_vnni.onnx"),
        8.0,
    )
    .unwrap();
    let mut broken = Process::start(&[
        "--model",
        tmp.path().to_str().unwrap(),
        "--backend",
        "ort",
        "--onnx-file",
        "onnx/model_qint8_avx512_vnni.onnx",
    ]);
    let base = broken.base();
    let logged = broken.wait_log("model load failed");
    wait_health(&mut broken, &base, 503);
    let error = logged["error"].as_str().unwrap_or_default();
    for part in [
        "accuracy gate: onnx/model_qint8_avx512_vnni.onnx",
        "answers unlike model.onnx",
        "mean cosine 0.5",
        "< 0.98",
        "--quantized off",
    ] {
        assert!(error.contains(part), "{part:?} not in {logged}");
    }
}
