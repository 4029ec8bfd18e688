//! The `corestream` command-line tool on the bundled model with short durations: table and
//! JSON shapes, topology, tune's choice, and exit code 2 with a one-line message on bad input.
#![cfg(feature = "cli")]

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
        .filter(|l| l.starts_with("| ") && !l.starts_with("| streams"))
        .collect()
}

fn cpus() -> usize {
    corestream::CpuPool::all().unwrap().len()
}

const NET1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/models/examplenet1.onnx"
);

/// Runs `corestream bench ARGS --json FILE`; returns its stdout and the JSON report.
fn bench_with_json(args: &[&str]) -> (String, serde_json::Value) {
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
    (String::from_utf8(out.stdout).unwrap(), report)
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
        stdout.contains(&format!("| auto ({}) | 4 |", cpus())),
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
    let out = cli().args(["topology", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["all"].as_array().unwrap().len(), cpus());
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
    // | streams | batch | rows per run | spin us | items/s | p99 ms |
    let measured: Vec<(usize, usize, String, u64)> = table_rows(&text)
        .into_iter()
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].parse().unwrap(),
                cells[2].parse().unwrap(),
                cells[3].to_owned(),
                cells[4].parse().unwrap(),
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
    let streams: usize = after("streams").unwrap().parse().unwrap();
    let batch: usize = after("batch").unwrap().parse().unwrap();
    let rows = after("of").unwrap_or_else(|| "all".into());
    let spin: u64 = after("spin").map_or(0, |us| us.parse().unwrap());
    assert!(
        measured.contains(&(streams, batch, rows.clone(), spin)),
        "{best} not in {measured:?}"
    );
    // The spin trial is the last one: 50 us on an earlier configuration.
    let last = measured.last().unwrap();
    assert_eq!(last.3, 50, "{text}");
    assert!(
        measured[..measured.len() - 1]
            .iter()
            .any(|m| (m.0, m.1, &m.2, m.3) == (last.0, last.1, &last.2, 0)),
        "{text}"
    );
    // The chunk search ran on the winning stream count and batch, below its rows per stream.
    for (s, b, r, _) in measured.iter().filter(|m| m.2 != "all") {
        let r: usize = r.parse().unwrap();
        assert!(r < b.div_ceil(*s), "{text}");
    }
    assert!(
        text.contains(&format!("Streams::Count({streams})")),
        "{text}"
    );
    assert_eq!(
        text.contains(&format!(".max_rows_per_run({rows})")),
        rows != "all",
        "{text}"
    );
    assert_eq!(
        text.contains(".spin(Duration::from_micros(50))"),
        spin == 50,
        "{text}"
    );
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
}

#[test]
fn bad_inputs_exit_2_with_one_line() {
    let cases: [(&[&str], &str); 9] = [
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
    ];
    for (args, needle) in cases {
        let out = cli().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
