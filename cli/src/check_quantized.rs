//! `corestream check-quantized DIR [--backend ort|tract] [--min-cosine MEAN,WORST]
//! [--min-agreement F] [--onnx-file FILE ...] [--seconds S] [--json]`: the accuracy gate of
//! `corestream serve` (see `corestream_serve::model::accuracy`) for every quantized ONNX file
//! of a model directory against its FP32 file, as a table (or JSON): how each is quantized,
//! its numbers on the probes (embedders: mean and worst cosine with the worst probe;
//! rerankers: rank and top-1 agreement; classifiers: label agreement), pass or fail, rows per
//! second of each file at batch 1 and 16 (a short timing on the backend, FP32 included), and
//! the file `serve` would choose on this CPU.
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
    /// Time each file for this long at batch 1 and at batch 16 (one stream on all CPUs, short
    /// sentences); 0 skips the timing.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    seconds: f64,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// The batch sizes timed.
const BATCHES: [usize; 2] = [1, 16];

/// One checked file: its comparison, or why it could not be compared, and its rows per second
/// at each of [`BATCHES`].
struct Checked {
    file: String,
    result: Result<Accuracy, String>,
    rates: Vec<f64>,
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
    let reference_rates = rates(Arc::clone(&reference), &rows, time)?;
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
        let (result, rates) = match result {
            Ok((accuracy, model)) => (Ok(accuracy), rates(Arc::new(model), &rows, time)?),
            Err(e) => (Err(e), Vec::new()),
        };
        checked.push(Checked {
            file,
            result,
            rates,
        });
    }
    let cpu = CpuFeatures::detect();
    let choice = quantized::choose(&all, &reference_name, &cpu, QuantizedMode::Auto);
    let passed = checked
        .iter()
        .all(|c| c.result.as_ref().is_ok_and(|a| a.passed));
    let report = Report {
        dir,
        backend: backend.describe(),
        kind: files.kind.name(),
        reference: &reference_name,
        reference_rates,
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

/// Rows per second of `model` at each of [`BATCHES`], each measured for `time` after a tenth
/// of it to warm up, on one stream over all CPUs (ONNX Runtime: that many intra-op threads),
/// called one batch after another; empty when `time` is 0.
fn rates(model: Arc<TextEmbedder>, rows: &[Encoded], time: Duration) -> Result<Vec<f64>, Fail> {
    if time.is_zero() {
        return Ok(Vec::new());
    }
    let msm = MultiStreamModule::builder(model)
        .pool(CpuPool::all()?)
        .num_streams(Streams::Count(1))
        .build()?;
    let mut out = Vec::new();
    for batch in BATCHES {
        let input = Rows(rows.iter().cycle().take(batch).cloned().collect::<Vec<_>>());
        let warm = Instant::now();
        while warm.elapsed() < time / 10 {
            msm.forward_sync(input.clone())?;
        }
        let (start, mut calls) = (Instant::now(), 0usize);
        while start.elapsed() < time || calls < 3 {
            msm.forward_sync(input.clone())?;
            calls += 1;
        }
        out.push((calls * batch) as f64 / start.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// What `check-quantized` prints.
struct Report<'a> {
    dir: &'a Path,
    backend: String,
    kind: &'static str,
    reference: &'a str,
    reference_rates: Vec<f64>,
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

    /// `329.1 (2.63x)`, or `-` without a timing.
    fn rate(&self, rates: &[f64], i: usize) -> String {
        match (rates.get(i), self.reference_rates.get(i)) {
            (Some(r), Some(fp32)) if *fp32 > 0.0 => format!("{r:.1} ({:.2}x)", r / fp32),
            (Some(r), _) => format!("{r:.1}"),
            _ => "-".to_owned(),
        }
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
            "| file | kind | {a} | {b} |{extra} gate | rows/s B=1 | rows/s B=16 |\n| --- | --- | --: | --- |{} --- | --: | --: |\n",
            if c.is_empty() { "" } else { " --: |" }
        );
        let filler = if c.is_empty() { "" } else { " - |" };
        out += &format!(
            "| {} | FP32 (reference) | - | - |{filler} - | {} | {} |\n",
            self.reference,
            self.rate(&self.reference_rates, 0),
            self.rate(&self.reference_rates, 1)
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
                        "| {} | {} | {x} | {y} |{z} {} | {} | {} |\n",
                        checked.file,
                        acc.quantization,
                        if acc.passed { "pass" } else { "FAIL" },
                        self.rate(&checked.rates, 0),
                        self.rate(&checked.rates, 1)
                    );
                }
                Err(e) => {
                    out += &format!(
                        "| {} | - | - | - |{filler} FAIL: {} | - | - |\n",
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
        let rates = |r: &[f64]| -> Value {
            if r.is_empty() {
                Value::Null
            } else {
                BATCHES
                    .iter()
                    .zip(r)
                    .map(|(b, r)| (b.to_string(), json!(r)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            }
        };
        let files: Vec<Value> = self
            .checked
            .iter()
            .map(|c| {
                let mut v = match &c.result {
                    Ok(acc) => serde_json::to_value(acc).unwrap_or(Value::Null),
                    Err(e) => json!({"file": c.file, "passed": false, "error": e}),
                };
                v["rows_per_s"] = rates(&c.rates);
                v
            })
            .collect();
        json!({
            "dir": self.dir.display().to_string(),
            "backend": self.backend,
            "model_type": self.kind,
            "reference": {"file": self.reference, "rows_per_s": rates(&self.reference_rates)},
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
