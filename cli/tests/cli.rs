//! The `corestream` command on the bundled model with short durations: table and JSON shapes,
//! topology, tune's choice, both backends (`--backend tract`, `--backend ort`, the default),
//! exit code 2 with a one-line message on bad input, and the subcommands `--help` lists.
//!
//! The ONNX Runtime runs are skipped with a notice when its library is not found
//! (`bash scripts/fetch-onnxruntime.sh`), unless `CORESTREAM_REQUIRE_ORT=1`.

use assert_cmd::Command;

fn cli() -> Command {
    let mut cmd = Command::cargo_bin("corestream").unwrap();
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The data rows of a markdown table printed by the tool.
fn table_rows(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.starts_with("| ") && !l.starts_with("| streams") && !l.starts_with("| backend")
        })
        .collect()
}

/// The note the tool prints when it falls back to tract because ONNX Runtime is missing.
const ORT_MISSING_NOTE: &str = "note: ONNX Runtime library not found";

/// Whether the ONNX Runtime library is found (as the tool looks for it). When it is not,
/// prints a notice naming `test` and returns false, or panics when `CORESTREAM_REQUIRE_ORT=1`.
fn ort_available(test: &str) -> bool {
    match corestream::backend::ort::load_library(None) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("CORESTREAM_REQUIRE_ORT").as_deref() != Ok("1"),
                "CORESTREAM_REQUIRE_ORT=1 but {e}"
            );
            eprintln!(
                "{test}: skipped, ONNX Runtime not found (bash scripts/fetch-onnxruntime.sh): {e}"
            );
            false
        }
    }
}

fn cpus() -> usize {
    corestream::CpuPool::all().unwrap().len()
}

/// The streams `--streams auto` runs: one per CPU, fewer under a CPU quota.
fn auto_streams() -> usize {
    corestream::Streams::auto_count(cpus(), corestream::quota::CpuQuota::detect().as_ref())
}

/// The repository's copy of the bundled ExampleNet1 (the model `bench` runs without one).
const NET1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../assets/models/examplenet1.onnx"
);

/// Runs `corestream bench ARGS --json FILE`; returns its stdout and the JSON report.
fn bench_with_json(args: &[&str]) -> (String, serde_json::Value) {
    let (stdout, _, report) = bench_with_json_and_stderr(args);
    (stdout, report)
}

/// As [`bench_with_json`], with stderr too.
fn bench_with_json_and_stderr(args: &[&str]) -> (String, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = cli()
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert_success(&out);
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        report,
    )
}

#[test]
fn bench_prints_one_row_per_combination_and_writes_json() {
    let (stdout, report) = bench_with_json(&[
        "--batch",
        "1,4",
        "--streams",
        "auto,1",
        "--duration",
        "150ms",
    ]);
    let rows = table_rows(&stdout);
    assert_eq!(rows.len(), 4, "{stdout}");
    assert!(
        stdout.contains(&format!("| auto ({}) | 4 |", auto_streams())),
        "{stdout}"
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert!(r["items_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["p99_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
    }
    assert_eq!(
        report["topology"]["allowed"].as_array().unwrap().len(),
        cpus()
    );
    assert_eq!(report["corestream"], env!("CARGO_PKG_VERSION"));
}

/// ExampleNet1's FLOPs per item: one Conv of W (128, 64, 3, 3), stride 2, pads 1, on
/// (64, 3, 3) -> (128, 2, 2): 128 x 2 x 2 x 64 x 3 x 3 multiply-adds, 2 FLOPs each.
const NET1_FLOPS: f64 = 2.0 * 128.0 * 2.0 * 2.0 * 64.0 * 9.0;

#[test]
fn bench_reports_flop_efficiency_in_table_and_json() {
    let (stdout, report) = bench_with_json(&[
        "--backend",
        "tract",
        "--batch",
        "1,4",
        "--streams",
        "1",
        "--duration",
        "100ms",
    ]);
    assert!(
        stdout.contains("FLOPs: 0.590 MFLOP per item (1 MatMul/Gemm/Conv/attention nodes"),
        "{stdout}"
    );
    assert!(stdout.contains("| p99 ms | GFLOP/s | % peak |"), "{stdout}");
    let rows = table_rows(&stdout);
    assert!(rows.iter().all(|l| l.split('|').count() == 9), "{stdout}");
    assert_eq!(report["flops"]["per_item"]["1"], NET1_FLOPS);
    assert_eq!(report["flops"]["per_item"]["4"], NET1_FLOPS);
    assert_eq!(report["flops"]["counted_nodes"], 1);
    assert_eq!(
        report["flops"]["uncounted_nodes"].as_array().unwrap().len(),
        0
    );
    // The peak is known wherever the OS reports CPU flags and a clock (not everywhere).
    let peak = &report["peak"];
    let known = peak["error"].is_null();
    assert!(known || peak["error"].is_string(), "{peak}");
    if known {
        assert!(peak["core_gflops"].as_f64().unwrap() > 0.0, "{peak}");
        assert!(peak["isa"].is_string() && peak["ghz"].as_f64().unwrap() > 0.0);
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["flops_per_item"], NET1_FLOPS);
        let gflops = r["gflops"].as_f64().unwrap();
        let items = r["items_per_s"].as_f64().unwrap();
        assert!(close(gflops, items * NET1_FLOPS / 1e9), "{r}");
        // One stream on every CPU: the configuration's peak is that of all their cores.
        assert_eq!(r["cpus"].as_array().unwrap().len(), cpus(), "{r}");
        let cores = r["cores"].as_f64().unwrap();
        assert!(cores > 0.0 && cores <= cpus() as f64, "{r}");
        if known {
            let peak_gflops = r["peak_gflops"].as_f64().unwrap();
            assert!(
                close(peak_gflops, cores * peak["core_gflops"].as_f64().unwrap()),
                "{r}"
            );
            assert!(close(
                r["peak_fraction"].as_f64().unwrap(),
                gflops / peak_gflops
            ));
            let derivation = r["peak_derivation"].as_str().unwrap();
            assert!(derivation.starts_with("FP32 peak "), "{derivation}");
            assert!(stdout.contains(&format!("peak: {derivation}")), "{stdout}");
        } else {
            assert!(r["peak_fraction"].is_null(), "{r}");
        }
    }
}

#[test]
fn bench_counts_minilm_flops_at_the_given_sequence_length() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/paraphrase-MiniLM-L3-v2.onnx"
    );
    if !std::path::Path::new(model).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the models (scripts/fetch-models.sh)"
        );
        eprintln!("models/ not fetched: skipping (bash scripts/fetch-models.sh)");
        return;
    }
    let (stdout, report) = bench_with_json(&[
        model,
        "--backend",
        "tract",
        "--input",
        "input_ids=1x16",
        "--input",
        "attention_mask=1x16",
        "--batch",
        "2",
        "--streams",
        "1",
        "--duration",
        "50ms",
    ]);
    // Per BERT layer at L = 16: 4 x L x 384 x 384 + 2 x L x 384 x 1536 + 2 x 12 x L x L x 32
    // multiply-adds; 3 layers, 2 FLOPs each.
    let l = 16.0;
    let layer = 4.0 * l * 384.0 * 384.0 + 2.0 * l * 384.0 * 1536.0 + 2.0 * 12.0 * l * l * 32.0;
    assert_eq!(
        report["flops"]["per_item"]["2"],
        2.0 * 3.0 * layer,
        "{stdout}"
    );
    assert_eq!(report["flops"]["counted_nodes"], 24);
    assert_eq!(
        report["flops"]["uncounted_nodes"].as_array().unwrap().len(),
        0
    );
    assert!(report["results"][0]["gflops"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_beside_a_neighbour_with_a_pinned_caller_says_so() {
    let (stdout, report) = bench_with_json(&[
        "--batch",
        "2",
        "--streams",
        "auto",
        "--duration",
        "150ms",
        "--cotenant",
        "--pin-caller",
    ]);
    assert!(
        stdout.contains("beside one busy thread per CPU"),
        "{stdout}"
    );
    assert_eq!(report["cotenant"], true);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["pin_caller"], true);
    assert!(results[0]["items_per_s"].as_f64().unwrap() > 0.0);
    // The neighbour is gone with the command: a plain run says nothing of it.
    let (stdout, report) =
        bench_with_json(&["--batch", "1", "--streams", "1", "--duration", "50ms"]);
    assert!(!stdout.contains("busy thread"), "{stdout}");
    assert_eq!(report["cotenant"], false);
    assert_eq!(report["results"][0]["pin_caller"], false);
}

#[test]
fn bench_accepts_an_explicit_input_shape() {
    let out = cli()
        .args([
            "bench",
            NET1,
            "--input",
            "x=1x64x3x3",
            "--batch",
            "2",
            "--streams",
            "1",
            "--duration",
            "100ms",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("| 1 (1) | 2 |"));
}

#[test]
fn topology_text_and_json() {
    let out = cli().arg("topology").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("allowed cpus:") && text.contains("CpuPool::all() = CpuPool["),
        "{text}"
    );
    assert!(text.contains("openmp:"), "{text}");
    let runs = format!("--streams auto runs {} streams", auto_streams());
    assert!(
        text.contains("cpu quota: ") && text.contains(&runs),
        "{text}"
    );
    let out = cli().args(["topology", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["all"].as_array().unwrap().len(), cpus());
    assert_eq!(v["auto_streams"], auto_streams());
    let quota = corestream::quota::CpuQuota::detect();
    assert_eq!(v["cpu_quota"].is_null(), quota.is_none(), "{v}");
    assert!(!v["nodes"].as_array().unwrap().is_empty());
}

#[test]
fn tune_picks_one_of_the_measured_configurations() {
    let out = cli()
        .args(["tune", NET1, "--duration", "100ms", "--latency-p99", "10s"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    // | backend | streams | batch | rows per run | spin us | items/s | p99 ms |
    let measured: Vec<(String, usize, usize, String, u64)> = table_rows(&text)
        .into_iter()
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].to_owned(),
                cells[2].parse().unwrap(),
                cells[3].parse().unwrap(),
                cells[4].to_owned(),
                cells[5].parse().unwrap(),
            )
        })
        .collect();
    let best = text
        .lines()
        .find(|l| l.starts_with("best within"))
        .expect(&text);
    let words: Vec<&str> = best.split_whitespace().collect();
    let after = |word: &str| {
        words
            .iter()
            .position(|w| *w == word)
            .map(|i| words[i + 1].trim_end_matches([':', ',']).to_owned())
    };
    let backend = after("backend").unwrap();
    let streams: usize = after("streams").unwrap().parse().unwrap();
    let batch: usize = after("batch").unwrap().parse().unwrap();
    let rows = after("of").unwrap_or_else(|| "all".into());
    let spin: u64 = after("spin").unwrap().parse().unwrap();
    assert!(
        measured.contains(&(backend.clone(), streams, batch, rows.clone(), spin)),
        "{best} not in {measured:?}"
    );
    // Without --backend, both backends are searched when ONNX Runtime is found.
    let backends: Vec<&str> = measured.iter().map(|m| m.0.as_str()).collect();
    assert!(backends.contains(&"tract"), "{text}");
    let ort = ort_available("tune_picks_one_of_the_measured_configurations (ort part)");
    assert_eq!(backends.contains(&"ort"), ort, "{text}");
    // Every trial polls corestream's DEFAULT_SPIN when idle, but the last: the spin trial
    // parks at once (0 us) on an earlier configuration.
    let default_us = corestream::DEFAULT_SPIN.as_micros() as u64;
    let last = measured.last().unwrap();
    assert_eq!(last.4, 0, "{text}");
    assert!(
        measured[..measured.len() - 1]
            .iter()
            .all(|m| m.4 == default_us),
        "{text}"
    );
    assert!(
        measured[..measured.len() - 1]
            .iter()
            .any(|m| (&m.0, m.1, m.2, &m.3) == (&last.0, last.1, last.2, &last.3)),
        "{text}"
    );
    // The chunk search ran on tract, on a measured stream count and batch, below its rows per
    // stream.
    for (backend, s, b, r, _) in measured.iter().filter(|m| m.3 != "all") {
        assert_eq!(backend, "tract", "{text}");
        let r: usize = r.parse().unwrap();
        assert!(r < b.div_ceil(*s), "{text}");
    }
    let builder = if backend == "ort" {
        "OrtModel::"
    } else {
        "OnnxModel::"
    };
    assert!(
        text.contains(&format!("MultiStreamModule::builder({builder}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Streams::Count({streams})")),
        "{text}"
    );
    assert_eq!(
        text.contains(&format!(".max_rows_per_run({rows})")),
        rows != "all",
        "{text}"
    );
    // The builder code sets the spin only when it is not the default.
    assert_eq!(text.contains(".spin(Duration::ZERO)"), spin == 0, "{text}");
    assert!(spin == 0 || spin == default_us, "{text}");
}

#[test]
fn bench_runs_in_chunks_when_asked() {
    let (_, report) = bench_with_json(&[
        "--batch",
        "4",
        "--streams",
        "1",
        "--duration",
        "100ms",
        "--max-rows-per-run",
        "2",
        "--spin",
        "20us",
    ]);
    assert_eq!(report["results"][0]["max_rows_per_run"], 2);
    assert_eq!(report["results"][0]["spin_us"], 20);
    // Runs in chunks are a tract option: it picks tract when no --backend is given.
    assert_eq!(report["backend"], "tract");
    assert_eq!(report["results"][0]["backend"], "tract");
}

#[test]
fn bench_on_tract_says_so_in_table_and_json() {
    let (stdout, stderr, report) = bench_with_json_and_stderr(&[
        "--backend",
        "tract",
        "--batch",
        "2",
        "--streams",
        "1",
        "--duration",
        "100ms",
    ]);
    assert!(stdout.contains("backend tract"), "{stdout}");
    assert!(stdout.contains("| 1 (1) | 2 |"), "{stdout}");
    assert_eq!(report["backend"], "tract");
    assert_eq!(report["onnxruntime"], serde_json::Value::Null);
    assert_eq!(report["results"][0]["backend"], "tract");
    assert!(!stderr.contains(ORT_MISSING_NOTE), "{stderr}");
}

#[test]
fn bench_on_ort_says_so_in_table_and_json() {
    if !ort_available("bench_on_ort_says_so_in_table_and_json") {
        return;
    }
    let (stdout, report) = bench_with_json(&[
        NET1,
        "--backend",
        "ort",
        "--input",
        "x=1x64x3x3",
        "--batch",
        "1,4",
        "--streams",
        "auto,1",
        "--duration",
        "100ms",
        "--ort-spin",
        "off",
    ]);
    assert!(stdout.contains("backend ort (ONNX Runtime 1."), "{stdout}");
    assert_eq!(table_rows(&stdout).len(), 4, "{stdout}");
    assert!(
        stdout.contains(&format!("| auto ({}) | 4 |", auto_streams())),
        "{stdout}"
    );
    assert_eq!(report["backend"], "ort");
    assert!(report["onnxruntime"]["version"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["backend"], "ort");
        assert!(r["items_per_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn tune_on_one_backend_measures_only_it() {
    let backend = if ort_available("tune_on_one_backend_measures_only_it (ort)") {
        "ort"
    } else {
        "tract"
    };
    let out = cli()
        .args([
            "tune",
            NET1,
            "--backend",
            backend,
            "--duration",
            "50ms",
            "--latency-p99",
            "10s",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let rows = table_rows(&text);
    assert!(!rows.is_empty(), "{text}");
    assert!(
        rows.iter()
            .all(|l| l.starts_with(&format!("| {backend} |"))),
        "{text}"
    );
    assert!(text.contains(&format!("backend {backend},")), "{text}");
    // Every trial and the winner show their FLOP efficiency.
    assert!(
        text.contains("| items/s | p99 ms | GFLOP/s | % peak |"),
        "{text}"
    );
    assert!(rows.iter().all(|l| l.split('|').count() == 11), "{text}");
    assert!(text.contains("FLOPs: 0.590 MFLOP per item"), "{text}");
    let efficiency = text
        .lines()
        .find(|l| l.starts_with("efficiency: "))
        .expect(&text);
    assert!(efficiency.contains(" GFLOP/s"), "{text}");
}

#[test]
fn default_backend_is_ort_when_found_else_tract_with_one_note() {
    let (_, stderr, report) =
        bench_with_json_and_stderr(&["--batch", "1", "--streams", "1", "--duration", "50ms"]);
    if corestream::backend::ort::load_library(None).is_ok() {
        assert_eq!(report["backend"], "ort");
        assert!(!stderr.contains(ORT_MISSING_NOTE), "{stderr}");
    } else {
        assert_eq!(report["backend"], "tract");
        let notes: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(ORT_MISSING_NOTE))
            .collect();
        assert_eq!(notes.len(), 1, "{stderr}");
        assert!(
            notes[0].contains("scripts/fetch-onnxruntime.sh")
                && notes[0].contains("ORT_DYLIB_PATH"),
            "{stderr}"
        );
    }
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    let cases: [(&[&str], &str); 14] = [
        (
            &["bench", "/nonexistent/model.onnx", "--duration", "10ms"],
            "no such file",
        ),
        (
            &["bench", "--input", "x=1xAx3", "--duration", "10ms"],
            "cannot parse shape",
        ),
        (
            &["bench", "--input", "nope=1x64x3x3", "--duration", "10ms"],
            "has no input \"nope\"",
        ),
        (
            &["bench", "--streams", "999", "--duration", "10ms"],
            "more streams than CPUs",
        ),
        (&["bench", "--duration", "soon"], "cannot parse duration"),
        (
            &["bench", "--batch", "1,zero", "--duration", "10ms"],
            "cannot parse --batch",
        ),
        (&["tune", "/nonexistent/model.onnx"], "no such file"),
        (
            &["bench", "--max-rows-per-run", "0", "--duration", "10ms"],
            "at least 1",
        ),
        (
            &["bench", "--spin", "briefly", "--duration", "10ms"],
            "cannot parse duration",
        ),
        (
            &["bench", "--backend", "foo", "--duration", "10ms"],
            "--backend \"foo\": expected ort",
        ),
        (&["tune", NET1, "--backend", "foo"], "--backend \"foo\""),
        (
            &["bench", "--backend", "ort", "--max-rows-per-run", "2"],
            "--max-rows-per-run is a tract option",
        ),
        (
            &["bench", "--backend", "tract", "--ort-spin", "on"],
            "--ort-spin is an ONNX Runtime option",
        ),
        (&["bench", "--ort-spin", "maybe"], "--ort-spin \"maybe\""),
    ];
    for (args, needle) in cases {
        let out = cli().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        // Without ONNX Runtime, the default backend's note may come first.
        let stderr: String = stderr
            .lines()
            .filter(|l| !l.starts_with(ORT_MISSING_NOTE))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn help_lists_the_subcommands_and_serve_has_its_own() {
    let out = cli().arg("--help").output().unwrap();
    assert_success(&out);
    let help = String::from_utf8(out.stdout).unwrap();
    for sub in ["topology", "bench", "tune", "serve", "check-quantized"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "{sub} missing: {help}"
        );
    }
    let out = cli().args(["serve", "--help"]).output().unwrap();
    assert_success(&out);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--model"), "{help}");
}

/// The fetched all-MiniLM-L6-v2 directory (`scripts/fetch-models.sh`), or `None` with a notice
/// (a failure under CI, which fetches it).
fn minilm_l6() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(concat!(
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

/// The data rows of `check-quantized`'s table.
fn quantized_rows(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| file ") && !l.starts_with("| ---"))
        .collect()
}

/// `check-quantized --json` on the fetched directory: every quantized file (the two
/// int8-compute files and the int8-storage one) passes with its numbers, exit status 0, and
/// the file `serve` would choose is named; the table says the same, with rows/s.
#[test]
fn check_quantized_passes_the_fetched_int8_files() {
    let Some(dir) = minilm_l6() else { return };
    if !ort_available("check_quantized_passes_the_fetched_int8_files") {
        return;
    }
    let out = cli()
        .args(["check-quantized", dir.to_str().unwrap(), "--json"])
        .args(["--backend", "ort", "--seconds", "0"])
        .output()
        .unwrap();
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(report["model_type"], "embedding");
    assert_eq!(report["reference"]["file"], "model.onnx");
    assert!(report["reference"]["rows_per_s"].is_null(), "{report:#}");
    let files = report["files"].as_array().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "onnx/model_int8_weights.onnx",
            "onnx/model_qint8_avx512_vnni.onnx",
            "onnx/model_quint8_avx2.onnx"
        ]
    );
    for f in files {
        assert_eq!(f["passed"], true, "{f:#}");
        assert_eq!(f["probes"], 52, "{f:#}");
        let mean = f["mean_cosine"].as_f64().unwrap();
        let worst = f["worst_cosine"].as_f64().unwrap();
        assert!(mean > 0.985 && worst > 0.93 && worst <= mean, "{f:#}");
    }
    assert!(files[1]["quantization"]
        .as_str()
        .unwrap()
        .starts_with("int8 compute"));
    let chosen = report["chosen"]["file"].as_str().unwrap();
    assert!(
        report["chosen"]["reason"]
            .as_str()
            .unwrap()
            .ends_with(chosen),
        "{report:#}"
    );
    if report["cpu"]["avx512_vnni"] == true {
        assert_eq!(chosen, "onnx/model_qint8_avx512_vnni.onnx");
    }

    // The table, one file, timed briefly.
    let out = cli()
        .args(["check-quantized", dir.to_str().unwrap(), "--backend", "ort"])
        .args(["--onnx-file", "onnx/model_qint8_avx512_vnni.onnx"])
        .args(["--seconds", "0.1"])
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows = quantized_rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].starts_with("| model.onnx | FP32 (reference) |"),
        "{stdout}"
    );
    assert!(rows[0].contains("(1.00x)"), "{stdout}");
    assert!(rows[1].starts_with("| onnx/model_qint8_avx512_vnni.onnx | int8 compute"));
    assert!(
        rows[1].contains("| pass |") && rows[1].contains("x) |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| CPU ms/row B=1 | CPU ms/row B=16 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("timed on one stream of one CPU"),
        "{stdout}"
    );
    assert!(stdout.contains("`corestream serve` chooses: "), "{stdout}");
    assert!(stdout.contains("thresholds: mean cosine >= 0.98, worst cosine >= 0.9"));
}

/// A directory whose int8 file has one weight scale x8 (made by corestream-testkit as
/// `scripts/quantize.sh --broken` makes it): exit status 1, the file marked FAIL with its
/// numbers and the gate's message; `--min-cosine 0` lets it pass.
#[test]
fn check_quantized_fails_a_broken_file() {
    let Some(dir) = minilm_l6() else { return };
    if !ort_available("check_quantized_fails_a_broken_file") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("onnx")).unwrap();
    for f in ["model.onnx", "tokenizer.json", "config.json"] {
        std::os::unix::fs::symlink(dir.join(f), tmp.path().join(f)).unwrap();
    }
    corestream_testkit::broken::scale_one_weight(
        &dir.join("onnx/model_qint8_avx512_vnni.onnx"),
        &tmp.path().join("onnx/model_qint8_broken.onnx"),
        8.0,
    )
    .unwrap();
    let check = |extra: &[&str]| {
        cli()
            .args(["check-quantized", tmp.path().to_str().unwrap()])
            .args(["--backend", "ort", "--seconds", "0"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows = quantized_rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[1].starts_with("| onnx/model_qint8_broken.onnx | int8 compute")
            && rows[1].contains("| FAIL |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("accuracy gate: onnx/model_qint8_broken.onnx")
            && stdout.contains("mean cosine 0.5")
            && stdout.contains("< 0.98"),
        "{stdout}"
    );
    // The broken name is never chosen by itself.
    assert!(
        stdout.contains("`corestream serve` chooses: model.onnx (no quantized file of Hugging Face's names here"),
        "{stdout}"
    );
    let out = check(&["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["files"][0]["passed"], false);
    assert!(report["files"][0]["mean_cosine"].as_f64().unwrap() < 0.7);
    let out = check(&["--min-cosine", "0"]);
    assert_success(&out);
}

#[test]
fn check_quantized_bad_input_exits_2() {
    let empty = tempfile::tempdir().unwrap();
    let fp32_only = tempfile::tempdir().unwrap();
    let net1 = std::path::Path::new(NET1);
    std::fs::copy(net1, fp32_only.path().join("model.onnx")).unwrap();
    std::fs::write(fp32_only.path().join("tokenizer.json"), b"{}").unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["/nonexistent/dir"], "no such model directory"),
        (
            vec![empty.path().to_str().unwrap()],
            "no FP32 file to compare with",
        ),
        (
            vec![fp32_only.path().to_str().unwrap()],
            "no quantized ONNX file to check beside model.onnx",
        ),
        (
            vec![
                fp32_only.path().to_str().unwrap(),
                "--onnx-file",
                "onnx/model_quint8_avx2.onnx",
            ],
            "--onnx-file onnx/model_quint8_avx2.onnx is not an ONNX file of",
        ),
    ];
    for (args, needle) in cases {
        let out = cli().arg("check-quantized").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    }
}

/// `bench DIR` measures the file `corestream serve` would serve from a model directory: on
/// ONNX Runtime the quantized file the CPU suits (the same one `check-quantized` names);
/// stderr says which and why, and the JSON's model is that file.
#[test]
fn bench_on_a_model_directory_measures_the_file_serve_would_choose() {
    let Some(dir) = minilm_l6() else { return };
    let d = dir.to_str().unwrap();
    let shape = ["--input", "input_ids=1x8", "--input", "attention_mask=1x8"];
    let shape = [&shape[..], &["--input", "token_type_ids=1x8"]].concat();
    let common = [
        &shape[..],
        &["--batch", "1", "--streams", "1", "--duration", "200ms"],
    ]
    .concat();
    if !ort_available("bench_on_a_model_directory_measures_the_file_serve_would_choose") {
        return;
    }
    let chosen = cli()
        .args([
            "check-quantized",
            d,
            "--json",
            "--backend",
            "ort",
            "--seconds",
            "0",
        ])
        .output()
        .unwrap();
    let chosen: serde_json::Value = serde_json::from_slice(&chosen.stdout).unwrap();
    let chosen = chosen["chosen"]["file"].as_str().unwrap().to_owned();
    let (_, stderr, report) =
        bench_with_json_and_stderr(&[&[d, "--backend", "ort"][..], &common[..]].concat());
    assert!(
        stderr.contains(&format!("all-MiniLM-L6-v2/{chosen} (")),
        "{stderr}"
    );
    assert!(report.to_string().contains(&chosen), "{report}");
}
