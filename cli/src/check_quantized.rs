//! `corestream check-quantized DIR [--backend ort|tract] [--min-cosine MEAN,WORST]
//! [--min-agreement F] [--onnx-file FILE ...] [--seconds S] [--json]`: the accuracy gate of
//! `corestream serve` (see `corestream_serve::model::accuracy`) for every quantized ONNX file
//! of a model directory against its FP32 file, as a table (or JSON): how each is quantized,
//! its numbers on the probes (embedders: mean and worst cosine with the worst probe;
//! rerankers: rank and top-1 agreement; classifiers: label agreement), pass or fail, rows per
//! second and CPU time per row of each file at batch 1 and 16 (a short timing on one CPU of
//! the backend, FP32 included: [`timings`]), and the file `serve` would choose on this CPU.
//!
//! Exit status: 0 when every checked file passes, 1 when one fails (or does not load), 2 on bad
//! input (no such directory, no FP32 file, nothing quantized to check).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream::backend::Backend;
use corestream::batch::Rows;
use corestream::{CpuPool, MultiStreamModule, Streams};
use corestream_serve::model::accuracy::{Accuracy, GateArgs};
use corestream_serve::model::embedder::backend_or_default;
use corestream_serve::model::graph::{self, Quantization};
use corestream_serve::model::quantized::{self, CpuFeatures, QuantizedMode};
use corestream_serve::model::source::{fp32_file, onnx_files};
use corestream_serve::model::{probes, Encoded, Keep, ModelFiles, TextEmbedder, TextTokenizer};
use serde_json::{json, Value};

use crate::args::parse_backend;
use crate::Fail;

/// The arguments of `check-quantized` (clap shows the `Command::CheckQuantized` doc as its
/// help).
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The model directory (Hugging Face's layout: `onnx/model.onnx` or `model.onnx`, the
    /// quantized files beside it, `tokenizer.json`).
    dir: PathBuf,
    /// The inference backend: `ort` (ONNX Runtime) or `tract`. Default: `ort` when its library
    /// is found, else `tract`.
    #[arg(long, value_name = "ort|tract", value_parser = parse_backend)]
    backend: Option<Backend>,
    #[command(flatten)]
    gate: GateArgs,
    /// Check this file of the directory too (relative to it), whatever its name or content;
    /// repeat for several. Without it: every ONNX file whose graph is quantized.
    #[arg(long, value_name = "PATH")]
    onnx_file: Vec<PathBuf>,
    /// Time each file for this long at batch 1 and at batch 16: rows/s and CPU ms per row on
    /// one stream of one CPU (what each stream of `serve --streams auto` runs), 16 short probe
    /// sentences, in 5 slices the files take in turn (the best slice counts); 0 skips it.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    seconds: f64,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// The batch sizes timed.
const BATCHES: [usize; 2] = [1, 16];

/// One checked file: its comparison, or why it could not be compared, and its timing.
struct Checked {
    file: String,
    result: Result<Accuracy, String>,
    timing: Timing,
}

/// A file's timing at each of [`BATCHES`] (empty lists: not timed).
#[derive(Debug, Clone, Default)]
struct Timing {
    /// Rows per second (wall clock), the best slice.
    rows_per_s: Vec<f64>,
    /// The process's CPU time per row in milliseconds, the least of the slices (`None` where
    /// the OS does not say: `/proc/self/task/*/schedstat`).
    cpu_ms_per_row: Vec<Option<f64>>,
}

/// `corestream check-quantized`.
pub fn run(args: CheckArgs) -> Result<i32, Fail> {
    if !args.seconds.is_finite() || !(0.0..=60.0).contains(&args.seconds) {
        return Err(Fail(format!(
            "--seconds {}: give a number from 0 to 60",
            args.seconds
        )));
    }
    let dir = &args.dir;
    if !dir.is_dir() {
        return Err(Fail(format!("{}: no such model directory", dir.display())));
    }
    let reference_name = fp32_file(dir).ok_or_else(|| {
        Fail(format!(
            "{}: no FP32 file to compare with (onnx/model.onnx or model.onnx)",
            dir.display()
        ))
    })?;
    let files = ModelFiles::from_dir(dir)?;
    let all = onnx_files(dir);
    let mut candidates: Vec<(String, Option<Quantization>)> = Vec::new();
    let mut skipped = Vec::new();
    for file in &args.onnx_file {
        let name = file.to_string_lossy().replace('\\', "/");
        if !all.contains(&name) {
            return Err(Fail(format!(
                "--onnx-file {name} is not an ONNX file of {}; it has: {}",
                dir.display(),
                all.join(", ")
            )));
        }
    }
    for name in &all {
        if *name == reference_name {
            continue;
        }
        let named = args.onnx_file.iter().any(|f| f.to_string_lossy() == *name);
        let quantization = graph::read(&dir.join(name))
            .ok()
            .and_then(|g| Quantization::of(&g));
        if quantization.is_some() || named {
            candidates.push((name.clone(), quantization));
        } else if args.onnx_file.is_empty() {
            skipped.push(name.clone());
        }
    }
    if !args.onnx_file.is_empty() {
        candidates.retain(|(name, _)| args.onnx_file.iter().any(|f| f.to_string_lossy() == *name));
    }
    if candidates.is_empty() {
        return Err(Fail(format!(
            "{}: no quantized ONNX file to check beside {reference_name} (it has: {})",
            dir.display(),
            all.join(", ")
        )));
    }

    let backend = backend_or_default(args.backend);
    let thresholds = args.gate.thresholds();
    let (reference, tokenizer) = TextEmbedder::load_with_tokenizer(&files, backend)?;
    let reference = Arc::new(reference);
    let rows = timing_rows(&tokenizer)?;
    let time = Duration::from_secs_f64(args.seconds);
    // Every file that loads, the reference first, timed together at the end.
    let mut timed = vec![Arc::clone(&reference)];
    let mut checked = Vec::new();
    for (file, quantization) in candidates {
        let candidate_files = ModelFiles {
            onnx: dir.join(&file),
            ..files.clone()
        };
        let result = TextEmbedder::load(&candidate_files, backend)
            .map_err(|e| e.to_string())
            .and_then(|model| {
                let mut accuracy = Accuracy::measure(&reference, &model, &tokenizer, &files.kind)?;
                accuracy.file.clone_from(&file);
                accuracy.reference.clone_from(&reference_name);
                accuracy.quantization = quantization
                    .as_ref()
                    .map_or_else(|| "not quantized".to_owned(), ToString::to_string);
                accuracy.judge(thresholds);
                Ok((accuracy, model))
            });
        let result = result.map(|(accuracy, model)| {
            timed.push(Arc::new(model));
            accuracy
        });
        checked.push(Checked {
            file,
            result,
            timing: Timing::default(),
        });
    }
    drop(reference);
    let mut measured = timings(timed, &rows, time)?.into_iter();
    let reference_timing = measured.next().unwrap_or_default();
    for c in checked.iter_mut().filter(|c| c.result.is_ok()) {
        c.timing = measured.next().unwrap_or_default();
    }
    let cpu = CpuFeatures::detect();
    let choice = quantized::choose(&all, &reference_name, &cpu, QuantizedMode::Auto, backend);
    let passed = checked
        .iter()
        .all(|c| c.result.as_ref().is_ok_and(|a| a.passed));
    let report = Report {
        dir,
        backend: backend.describe(),
        kind: files.kind.name(),
        reference: &reference_name,
        reference_timing,
        checked: &checked,
        skipped: &skipped,
        cpu: &cpu,
        choice: &choice,
        gate: &args.gate,
    };
    if args.json {
        println!("{:#}", report.json(passed));
    } else {
        print!("{}", report.text());
    }
    Ok(if passed { 0 } else { 1 })
}

/// The rows timed: 16 short probe sentences (8 to 15 tokens; a batch pads to its longest).
fn timing_rows(tokenizer: &TextTokenizer) -> Result<Vec<Encoded>, Fail> {
    let max = tokenizer.max_input_length();
    probes::SENTENCES[..16]
        .iter()
        .map(|text| {
            let mut ids = tokenizer
                .encode_within(text, max, Keep::Start)
                .map_err(Fail)?;
            tokenizer.truncate(&mut ids, max, Keep::Start);
            Ok(Encoded::single(ids))
        })
        .collect()
}

/// How many slices each file's timing is cut into, the files taking turns.
const SLICES: u32 = 5;

/// The CPU time of this process's live threads so far (`/proc/self/task/*/schedstat`: the
/// nanoseconds each ran); `None` where the OS does not say.
fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// The timing of each of `models` at each of [`BATCHES`], on one stream of one CPU (the first
/// this process may use; no intra-op threads, so no spinning or waiting on each other in the
/// CPU time), called one batch after another: `time` per file and batch, cut into [`SLICES`]
/// slices that the files take in turn (so that a busy moment of a shared machine falls on all
/// of them), each after one warm-up call; the best slice counts. Empty when `time` is 0.
fn timings(
    models: Vec<Arc<TextEmbedder>>,
    rows: &[Encoded],
    time: Duration,
) -> Result<Vec<Timing>, Fail> {
    if time.is_zero() {
        return Ok(vec![Timing::default(); models.len()]);
    }
    let cpu = CpuPool::new([CpuPool::all()?.cpus()[0]])?;
    let streams = models
        .into_iter()
        .map(|model| {
            Ok(MultiStreamModule::builder(model)
                .pool(cpu.clone())
                .num_streams(Streams::Count(1))
                .build()?)
        })
        .collect::<Result<Vec<_>, Fail>>()?;
    let mut out = vec![
        Timing {
            rows_per_s: vec![0.0; BATCHES.len()],
            cpu_ms_per_row: vec![None; BATCHES.len()],
        };
        streams.len()
    ];
    let slice = time / SLICES;
    for _ in 0..SLICES {
        for (msm, timing) in streams.iter().zip(&mut out) {
            for (i, batch) in BATCHES.iter().enumerate() {
                let input = Rows(
                    rows.iter()
                        .cycle()
                        .take(*batch)
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                msm.forward_sync(input.clone())?;
                let (start, cpu_start, mut calls) = (Instant::now(), process_cpu(), 0usize);
                while start.elapsed() < slice || calls < 2 {
                    msm.forward_sync(input.clone())?;
                    calls += 1;
                }
                let (wall, rows) = (start.elapsed(), (calls * batch) as f64);
                timing.rows_per_s[i] = timing.rows_per_s[i].max(rows / wall.as_secs_f64());
                if let (Some(a), Some(b)) = (cpu_start, process_cpu()) {
                    let ms = b.saturating_sub(a).as_secs_f64() * 1e3 / rows;
                    let least = timing.cpu_ms_per_row[i].map_or(ms, |m: f64| m.min(ms));
                    timing.cpu_ms_per_row[i] = Some(least);
                }
            }
        }
    }
    Ok(out)
}

/// What `check-quantized` prints.
struct Report<'a> {
    dir: &'a Path,
    backend: String,
    kind: &'static str,
    reference: &'a str,
    reference_timing: Timing,
    checked: &'a [Checked],
    skipped: &'a [String],
    cpu: &'a CpuFeatures,
    choice: &'a quantized::OnnxChoice,
    gate: &'a GateArgs,
}

impl Report<'_> {
    fn thresholds(&self) -> String {
        let t = self.gate.thresholds();
        match self.kind {
            "embedding" => format!(
                "mean cosine >= {}, worst cosine >= {}",
                t.mean_cosine, t.worst_cosine
            ),
            "reranker" => format!(
                "rank agreement (mean Spearman) >= {0}, top-1 agreement >= {0}",
                t.agreement
            ),
            _ => format!("label agreement >= {}", t.agreement),
        }
    }

    /// The timing columns of a file: rows/s at each batch, then CPU ms per row, each with how
    /// many times better than FP32 (`329.1 (2.63x) |`); `- |` without a timing.
    fn timing_cells(&self, timing: &Timing) -> String {
        let fp32 = &self.reference_timing;
        let mut cells = String::new();
        for i in 0..BATCHES.len() {
            cells += &match (timing.rows_per_s.get(i), fp32.rows_per_s.get(i)) {
                (Some(r), Some(f)) if *f > 0.0 => format!(" {r:.1} ({:.2}x) |", r / f),
                _ => " - |".to_owned(),
            };
        }
        for i in 0..BATCHES.len() {
            let ms = timing.cpu_ms_per_row.get(i).copied().flatten();
            let f = fp32.cpu_ms_per_row.get(i).copied().flatten();
            cells += &match (ms, f) {
                (Some(ms), Some(f)) if ms > 0.0 => format!(" {ms:.2} ({:.2}x) |", f / ms),
                _ => " - |".to_owned(),
            };
        }
        cells
    }

    fn text(&self) -> String {
        let mut out = format!(
            "model: {} ({}, probes each alone, backend {})\nthresholds: {}\n\n",
            self.dir.display(),
            self.kind,
            self.backend,
            self.thresholds()
        );
        let (a, b, c) = match self.kind {
            "embedding" => ("mean cosine", "worst cosine (probe)", ""),
            "reranker" => ("rank agreement", "top-1 agreement", "mean abs score diff"),
            _ => (
                "label agreement",
                "first other label",
                "mean abs score diff",
            ),
        };
        let extra = if c.is_empty() {
            String::new()
        } else {
            format!(" {c} |")
        };
        out += &format!(
            "| file | kind | {a} | {b} |{extra} gate | rows/s B=1 | rows/s B=16 | CPU ms/row B=1 \
             | CPU ms/row B=16 |\n| --- | --- | --: | --- |{} --- | --: | --: | --: | --: |\n",
            if c.is_empty() { "" } else { " --: |" }
        );
        let filler = if c.is_empty() { "" } else { " - |" };
        out += &format!(
            "| {} | FP32 (reference) | - | - |{filler} - |{}\n",
            self.reference,
            self.timing_cells(&self.reference_timing)
        );
        for checked in self.checked {
            match &checked.result {
                Ok(acc) => {
                    let worst = acc
                        .worst_probe
                        .as_deref()
                        .map_or_else(String::new, |p| format!(" ({p:?})"));
                    let (x, y, z) = match self.kind {
                        "embedding" => (
                            format!("{:.4}", acc.mean_cosine.unwrap_or(0.0)),
                            format!("{:.4}{worst}", acc.worst_cosine.unwrap_or(0.0)),
                            String::new(),
                        ),
                        "reranker" => (
                            format!("{:.4}", acc.rank_agreement.unwrap_or(0.0)),
                            format!("{:.2}", acc.top1_agreement.unwrap_or(0.0)),
                            format!(" {:.4} |", acc.mean_abs_score_diff.unwrap_or(0.0)),
                        ),
                        _ => (
                            format!("{:.4}", acc.label_agreement.unwrap_or(0.0)),
                            acc.worst_probe
                                .as_deref()
                                .map_or_else(|| "-".to_owned(), |p| format!("{p:?}")),
                            format!(" {:.4} |", acc.mean_abs_score_diff.unwrap_or(0.0)),
                        ),
                    };
                    out += &format!(
                        "| {} | {} | {x} | {y} |{z} {} |{}\n",
                        checked.file,
                        acc.quantization,
                        if acc.passed { "pass" } else { "FAIL" },
                        self.timing_cells(&checked.timing)
                    );
                }
                Err(e) => {
                    out += &format!(
                        "| {} | - | - | - |{filler} FAIL: {} | - | - | - | - |\n",
                        checked.file,
                        e.replace('|', "/").replace('\n', " ")
                    );
                }
            }
        }
        if !self.skipped.is_empty() {
            out += &format!(
                "\nnot quantized, not checked: {}\n",
                self.skipped.join(", ")
            );
        }
        if !self.reference_timing.rows_per_s.is_empty() {
            out +=
                "\n(Nx): how many times FP32's rate, or FP32's CPU time per row over the file's; \
                    timed on one stream of one CPU\n";
        }
        out += &format!(
            "\ncpu: {} ({})\n`corestream serve` chooses: {} ({})\n",
            self.cpu, self.cpu.source, self.choice.file, self.choice.reason
        );
        for checked in self.checked {
            if let Some(failure) = checked.result.as_ref().ok().and_then(Accuracy::failure) {
                out += &format!("\n{failure}\n");
            }
        }
        out
    }

    fn json(&self, passed: bool) -> Value {
        let by_batch = |values: Vec<Value>| -> Value {
            if values.is_empty() {
                Value::Null
            } else {
                BATCHES
                    .iter()
                    .zip(values)
                    .map(|(b, v)| (b.to_string(), v))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            }
        };
        let timing = |t: &Timing| -> (Value, Value) {
            (
                by_batch(t.rows_per_s.iter().map(|r| json!(r)).collect()),
                by_batch(t.cpu_ms_per_row.iter().map(|r| json!(r)).collect()),
            )
        };
        let files: Vec<Value> = self
            .checked
            .iter()
            .map(|c| {
                let mut v = match &c.result {
                    Ok(acc) => serde_json::to_value(acc).unwrap_or(Value::Null),
                    Err(e) => json!({"file": c.file, "passed": false, "error": e}),
                };
                let (rows_per_s, cpu_ms_per_row) = timing(&c.timing);
                v["rows_per_s"] = rows_per_s;
                v["cpu_ms_per_row"] = cpu_ms_per_row;
                v
            })
            .collect();
        let (rows_per_s, cpu_ms_per_row) = timing(&self.reference_timing);
        json!({
            "dir": self.dir.display().to_string(),
            "backend": self.backend,
            "model_type": self.kind,
            "reference": {
                "file": self.reference,
                "rows_per_s": rows_per_s,
                "cpu_ms_per_row": cpu_ms_per_row,
            },
            "thresholds": self.gate.thresholds(),
            "files": files,
            "not_quantized": self.skipped,
            "cpu": {
                "avx2": self.cpu.avx2,
                "avx512bw": self.cpu.avx512bw,
                "avx512_vnni": self.cpu.avx512_vnni,
                "amx_int8": self.cpu.amx_int8,
                "source": self.cpu.source,
            },
            "chosen": {"file": self.choice.file, "reason": self.choice.reason},
            "passed": passed,
        })
    }
}
