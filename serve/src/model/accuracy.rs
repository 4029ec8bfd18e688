//! The accuracy gate: before a quantized ONNX file serves, it and the directory's FP32 file are
//! loaded on the same backend and run on fixed probe inputs ([`crate::model::probes`]), each
//! probe alone (a batch of one: int8 files quantize activations per batch, so a row's result
//! moves a little with its neighbours), and compared ([`Accuracy::measure`]):
//!
//! - embedders: the cosine of each probe's pooled vectors; the mean and the worst must reach
//!   `--min-cosine MEAN,WORST` (default [`DEFAULT_MIN_MEAN_COSINE`],
//!   [`DEFAULT_MIN_WORST_COSINE`]);
//! - rerankers: how each file ranks each query's documents (Spearman's rank correlation per
//!   query, averaged, and how often both put the same document first) must reach
//!   `--min-agreement` (default [`DEFAULT_MIN_AGREEMENT`]); the mean absolute score difference
//!   is reported;
//! - classifiers: the share of probes given the same label must reach `--min-agreement`.
//!
//! Below a threshold the model does not load ([`gate`]), with the numbers in the error; a
//! threshold of 0 turns the gate off for the kinds it applies to.

use std::path::{Path, PathBuf};
use std::time::Instant;

use corestream::batch::Rows;
use corestream::Module;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::embedder::{Backend, TextEmbedder};
use crate::model::encoded::Encoded;
use crate::model::graph::{self, Quantization};
use crate::model::kind::ModelKind;
use crate::model::probes;
use crate::model::source::{fp32_file, ModelFiles};
use crate::model::tokenizer::{Keep, TextTokenizer};

/// The default lowest mean cosine of a quantized embedder's probes with FP32's. Measured on
/// all-MiniLM-L6-v2's probes (each alone): the int8-compute files 0.991 (qint8, AVX-512 VNNI)
/// and 0.991 (quint8, AVX2), the int8-storage file 0.9993, a deliberately broken file (one
/// weight scale x8) 0.526: 0.98 keeps a margin on both sides.
pub const DEFAULT_MIN_MEAN_COSINE: f64 = 0.98;

/// The default lowest cosine of any one probe. Measured: the good int8 files' worst probes are
/// 0.956 (qint8, `"Thanks!!!"`) and 0.964 (quint8); the broken file's 0.220. Very short, odd
/// inputs are where int8 does worst, so this is looser than the mean.
pub const DEFAULT_MIN_WORST_COSINE: f64 = 0.90;

/// The default lowest agreement of a quantized reranker (mean Spearman rank correlation over
/// the queries, and the share of queries with the same top document) or classifier (the share
/// of probes with the same label) with FP32: one query in ten may put another document first.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.90;

/// The gate's thresholds (`--min-cosine`, `--min-agreement`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Thresholds {
    /// Lowest mean cosine of an embedder's probes.
    pub mean_cosine: f64,
    /// Lowest cosine of any one probe of an embedder.
    pub worst_cosine: f64,
    /// Lowest rank agreement (reranker: mean Spearman and top-1 agreement) or label agreement
    /// (classifier).
    pub agreement: f64,
}

/// Thresholds are numbers from 0 to 1 (as the flags parse them), never NaN.
impl Eq for Thresholds {}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            mean_cosine: DEFAULT_MIN_MEAN_COSINE,
            worst_cosine: DEFAULT_MIN_WORST_COSINE,
            agreement: DEFAULT_MIN_AGREEMENT,
        }
    }
}

impl Thresholds {
    /// Whether any threshold that applies to a model of `kind` is above 0 (else the gate does
    /// not run: nothing could fail it).
    ///
    /// ```
    /// use corestream_serve::model::{accuracy::Thresholds, ModelKind};
    ///
    /// let off = Thresholds { mean_cosine: 0.0, worst_cosine: 0.0, ..Thresholds::default() };
    /// assert!(!off.gates(&ModelKind::Embedding));
    /// assert!(off.gates(&ModelKind::Reranker));
    /// ```
    pub fn gates(&self, kind: &ModelKind) -> bool {
        match kind {
            ModelKind::Embedding => self.mean_cosine > 0.0 || self.worst_cosine > 0.0,
            _ => self.agreement > 0.0,
        }
    }
}

/// `--min-cosine MEAN[,WORST]`: the lowest mean and worst cosine; WORST defaults to
/// [`DEFAULT_MIN_WORST_COSINE`] (no more than MEAN), so `0` turns the embedders' gate off.
///
/// ```
/// use corestream_serve::model::accuracy::MinCosine;
///
/// assert_eq!("0.97,0.8".parse::<MinCosine>()?, MinCosine { mean: 0.97, worst: 0.8 });
/// assert_eq!("0.99".parse::<MinCosine>()?, MinCosine { mean: 0.99, worst: 0.9 });
/// assert_eq!("0".parse::<MinCosine>()?, MinCosine { mean: 0.0, worst: 0.0 });
/// assert!("1.5".parse::<MinCosine>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinCosine {
    /// The lowest mean cosine.
    pub mean: f64,
    /// The lowest cosine of one probe.
    pub worst: f64,
}

impl Default for MinCosine {
    fn default() -> MinCosine {
        MinCosine {
            mean: DEFAULT_MIN_MEAN_COSINE,
            worst: DEFAULT_MIN_WORST_COSINE,
        }
    }
}

/// A number from 0 to 1.
fn unit(text: &str, what: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{what} {text:?}: give a number from 0 to 1")),
    }
}

impl std::str::FromStr for MinCosine {
    type Err = String;

    fn from_str(text: &str) -> Result<MinCosine, String> {
        let (mean, worst) = match text.split_once(',') {
            Some((mean, worst)) => (
                unit(mean, "--min-cosine")?,
                unit(worst, "--min-cosine's worst")?,
            ),
            None => {
                let mean = unit(text, "--min-cosine")?;
                (mean, DEFAULT_MIN_WORST_COSINE.min(mean))
            }
        };
        Ok(MinCosine { mean, worst })
    }
}

impl std::fmt::Display for MinCosine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.mean, self.worst)
    }
}

/// A `--min-agreement`: a number from 0 to 1.
fn agreement(text: &str) -> Result<f64, String> {
    unit(text, "--min-agreement")
}

/// The gate's flags, shared by `corestream serve` and `corestream check-quantized`.
#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// The accuracy gate of a quantized embedder: the lowest mean and worst cosine of its
    /// vectors with the FP32 file's over 52 probe sentences (each alone). Measured on
    /// all-MiniLM-L6-v2: int8 files mean 0.991, worst 0.956 (on "Thanks!!!"); a broken file
    /// (one weight scale x8) 0.526 and 0.220. `0` turns the gate off (the FP32 file is then
    /// not loaded).
    #[arg(
        long,
        env = "CORESTREAM_MIN_COSINE",
        value_name = "MEAN[,WORST]",
        default_value = "0.98,0.9"
    )]
    pub min_cosine: MinCosine,
    /// The accuracy gate of a quantized reranker (mean Spearman rank correlation over 10
    /// queries of 5 documents, and the share of queries with the same top document) or
    /// classifier (the share of the 52 probes given the same label). `0` turns it off.
    #[arg(
        long,
        env = "CORESTREAM_MIN_AGREEMENT",
        value_name = "FRACTION",
        default_value_t = DEFAULT_MIN_AGREEMENT,
        value_parser = agreement
    )]
    pub min_agreement: f64,
}

impl GateArgs {
    /// The thresholds the flags say.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            mean_cosine: self.min_cosine.mean,
            worst_cosine: self.min_cosine.worst,
            agreement: self.min_agreement,
        }
    }
}

/// How a quantized file's answers compare with its FP32 file's on the probes, and the gate's
/// verdict; `/info`'s `accuracy_gate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accuracy {
    /// The quantized file, relative to the model directory.
    pub file: String,
    /// How it is quantized (`int8 compute (48 MatMulInteger, ...)`).
    pub quantization: String,
    /// The FP32 file it was compared with, relative to the model directory.
    pub reference: String,
    /// `embedding`, `reranker` or `classifier`.
    pub model_type: String,
    /// Inputs compared (sentences, or query-document pairs).
    pub probes: usize,
    /// Embedder: the mean cosine of the probes' vectors.
    pub mean_cosine: Option<f64>,
    /// Embedder: the lowest cosine of one probe.
    pub worst_cosine: Option<f64>,
    /// The probe that fared worst: the embedder's lowest cosine, the reranker's query of
    /// lowest rank agreement, the classifier's first probe labelled otherwise.
    pub worst_probe: Option<String>,
    /// Reranker: Spearman's rank correlation of each query's document scores, averaged.
    pub rank_agreement: Option<f64>,
    /// Reranker: the share of queries whose top document is the same.
    pub top1_agreement: Option<f64>,
    /// Classifier: the share of probes given the same label.
    pub label_agreement: Option<f64>,
    /// Reranker and classifier: the mean absolute difference of the raw scores.
    pub mean_abs_score_diff: Option<f64>,
    /// The thresholds it was judged by.
    pub thresholds: Thresholds,
    /// Whether it reached them.
    pub passed: bool,
    /// How long the gate took: loading the FP32 file and running the probes on both.
    pub seconds: f64,
}

/// One probe's answer (a batch of one).
fn answer<M>(model: &M, input: Encoded) -> Result<Vec<f32>, String>
where
    M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
{
    model
        .forward(Rows(vec![input]))
        .map_err(|e| format!("a probe failed: {e}"))?
        .0
        .pop()
        .ok_or_else(|| "a probe got no answer".to_owned())
}

/// The cosine of two vectors (1 for two zero vectors, 0 for one).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    match (na > 0.0, nb > 0.0) {
        (true, true) => dot / (na * nb),
        (false, false) => 1.0,
        _ => 0.0,
    }
}

/// Ranks (1 = smallest), ties sharing their mean rank.
fn ranks(xs: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = mean;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation of two score lists (1 when both are constant, 0 when one is).
///
/// ```
/// use corestream_serve::model::accuracy::spearman;
///
/// assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
/// assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
/// // One adjacent swap among five.
/// assert!((spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 2.0, 3.0, 5.0, 4.0]) - 0.9).abs() < 1e-12);
/// ```
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let mean = (n + 1.0) / 2.0;
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        va += (x - mean).powi(2);
        vb += (y - mean).powi(2);
    }
    match (va > 0.0, vb > 0.0) {
        (true, true) => cov / (va * vb).sqrt(),
        (false, false) => 1.0,
        _ => 0.0,
    }
}

/// The index of the largest score.
fn argmax(xs: &[f32]) -> usize {
    xs.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = xs
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

impl Accuracy {
    /// Runs the probes of a model of `kind` through `reference` (the FP32 file) and
    /// `candidate`, each alone, with `tokenizer`, and compares them; the file names are
    /// empty, the thresholds the defaults (see [`judge`](Self::judge)).
    ///
    /// # Errors
    ///
    /// A probe the tokenizer or a model fails on.
    pub fn measure<R, C>(
        reference: &R,
        candidate: &C,
        tokenizer: &TextTokenizer,
        kind: &ModelKind,
    ) -> Result<Accuracy, String>
    where
        R: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
        C: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
    {
        let max = tokenizer.max_input_length();
        let single = |text: &str| -> Result<Encoded, String> {
            let mut ids = tokenizer.encode_within(text, max, Keep::Start)?;
            tokenizer.truncate(&mut ids, max, Keep::Start);
            Ok(Encoded::single(ids))
        };
        let both = |input: Encoded| -> Result<(Vec<f32>, Vec<f32>), String> {
            Ok((answer(reference, input.clone())?, answer(candidate, input)?))
        };
        let mut accuracy = Accuracy {
            model_type: kind.name().to_owned(),
            ..Accuracy::default()
        };
        let abs_diff =
            |a: &[f32], b: &[f32]| mean(a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())));
        match kind {
            ModelKind::Embedding => {
                let mut cosines = Vec::with_capacity(probes::SENTENCES.len());
                for text in probes::SENTENCES {
                    let (r, c) = both(single(text)?)?;
                    cosines.push((cosine(&r, &c), text));
                }
                let worst = cosines
                    .iter()
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .copied()
                    .unwrap_or((1.0, ""));
                accuracy.probes = cosines.len();
                accuracy.mean_cosine = Some(mean(cosines.iter().map(|c| c.0)));
                accuracy.worst_cosine = Some(worst.0);
                accuracy.worst_probe = Some(worst.1.to_owned());
            }
            ModelKind::Reranker => {
                let (mut rhos, mut top1, mut diffs) = (Vec::new(), 0usize, Vec::new());
                for (query, documents) in probes::RERANK {
                    let (mut r, mut c) = (Vec::new(), Vec::new());
                    for document in documents {
                        let pair = tokenizer
                            .encode_pair(query, document, max, true)?
                            .map_err(|n| format!("a probe pair of {n} tokens is too long"))?;
                        let (rs, cs) = both(pair)?;
                        diffs.push(abs_diff(&rs, &cs));
                        r.push(rs.first().copied().unwrap_or(0.0));
                        c.push(cs.first().copied().unwrap_or(0.0));
                    }
                    top1 += usize::from(argmax(&r) == argmax(&c));
                    rhos.push((spearman(&r, &c), query));
                    accuracy.probes += documents.len();
                }
                let worst = rhos
                    .iter()
                    .min_by(|a, b| a.0.total_cmp(&b.0))
                    .copied()
                    .unwrap_or((1.0, ""));
                accuracy.rank_agreement = Some(mean(rhos.iter().map(|r| r.0)));
                accuracy.top1_agreement = Some(top1 as f64 / probes::RERANK.len() as f64);
                accuracy.worst_probe = Some(worst.1.to_owned());
                accuracy.mean_abs_score_diff = Some(mean(diffs));
            }
            ModelKind::Classifier { .. } => {
                let (mut same, mut diffs) = (0usize, Vec::new());
                for text in probes::SENTENCES {
                    let (r, c) = both(single(text)?)?;
                    if argmax(&r) == argmax(&c) {
                        same += 1;
                    } else if accuracy.worst_probe.is_none() {
                        accuracy.worst_probe = Some(text.to_owned());
                    }
                    diffs.push(abs_diff(&r, &c));
                }
                accuracy.probes = probes::SENTENCES.len();
                accuracy.label_agreement = Some(same as f64 / accuracy.probes as f64);
                accuracy.mean_abs_score_diff = Some(mean(diffs));
            }
        }
        Ok(accuracy)
    }

    /// Judges it by `thresholds` (sets [`thresholds`](Self::thresholds) and
    /// [`passed`](Self::passed)).
    pub fn judge(&mut self, thresholds: Thresholds) {
        self.thresholds = thresholds;
        self.passed = self.failures().is_empty();
    }

    /// Each threshold it misses, with its number.
    fn failures(&self) -> Vec<String> {
        let t = &self.thresholds;
        let mut out = Vec::new();
        let mut check = |what: &str, value: Option<f64>, min: f64| {
            if let Some(v) = value.filter(|v| *v < min) {
                out.push(format!("{what} {v:.4} < {min}"));
            }
        };
        check("mean cosine", self.mean_cosine, t.mean_cosine);
        check("worst cosine", self.worst_cosine, t.worst_cosine);
        check("rank agreement", self.rank_agreement, t.agreement);
        check("top-1 agreement", self.top1_agreement, t.agreement);
        check("label agreement", self.label_agreement, t.agreement);
        out
    }

    /// Its numbers in a line: `mean cosine 0.9913, worst 0.9557 ("Thanks!!!") over 52
    /// probes`.
    pub fn summary(&self) -> String {
        let worst = self
            .worst_probe
            .as_deref()
            .map_or_else(String::new, |p| format!(" ({p:?})"));
        match (
            self.mean_cosine,
            self.worst_cosine,
            self.rank_agreement,
            self.label_agreement,
        ) {
            (Some(mean), Some(worst_cosine), _, _) => format!(
                "mean cosine {mean:.4}, worst {worst_cosine:.4}{worst} over {} probes",
                self.probes
            ),
            (_, _, Some(rank), _) => format!(
                "rank agreement {rank:.4}{}, top-1 agreement {:.2}, mean |score diff| {:.4} \
                 over {} pairs",
                self.worst_probe
                    .as_deref()
                    .map_or_else(String::new, |p| format!(" (lowest on {p:?})")),
                self.top1_agreement.unwrap_or(0.0),
                self.mean_abs_score_diff.unwrap_or(0.0),
                self.probes
            ),
            (_, _, _, Some(labels)) => format!(
                "label agreement {labels:.4}{}, mean |score diff| {:.4} over {} probes",
                self.worst_probe
                    .as_deref()
                    .map_or_else(String::new, |p| format!(" (first other label: {p:?})")),
                self.mean_abs_score_diff.unwrap_or(0.0),
                self.probes
            ),
            _ => format!("{} probes", self.probes),
        }
    }

    /// Why it fails the gate (`None` when it passes): the file, its numbers, the thresholds
    /// missed, and how to serve anyway.
    pub fn failure(&self) -> Option<String> {
        let failures = self.failures();
        if failures.is_empty() {
            return None;
        }
        Some(format!(
            "accuracy gate: {} ({}) answers unlike {} on the probes: {}; {}. Serve the FP32 \
             file (--quantized off, or --onnx-file {}), or lower the threshold (--min-cosine / \
             --min-agreement; 0 turns the gate off)",
            self.file,
            self.quantization,
            self.reference,
            self.summary(),
            failures.join(", "),
            self.reference
        ))
    }
}

/// `path` relative to `dir` (`/`-separated), or as given when it is not under it.
fn relative(path: &Path, dir: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The FP32 file the gate compares the ONNX file of `files` with, and how that file is
/// quantized: `None` when it is not quantized, its directory has no FP32 file
/// ([`fp32_file`]), or it is that file.
///
/// # Errors
///
/// The ONNX file cannot be read.
pub fn reference_for(files: &ModelFiles) -> Result<Option<(PathBuf, Quantization)>, String> {
    let Some(dir) = &files.dir else {
        return Ok(None);
    };
    let Some(reference) = fp32_file(dir).map(|f| dir.join(f)) else {
        return Ok(None);
    };
    let same = match (reference.canonicalize(), files.onnx.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => reference == files.onnx,
    };
    if same {
        return Ok(None);
    }
    let graph = graph::read(&files.onnx)?;
    Ok(Quantization::of(&graph).map(|q| (reference, q)))
}

/// The accuracy gate of the model `files` name, served as `candidate` (loaded on `backend`)
/// with `tokenizer`: when its ONNX file is quantized and its directory has an FP32 file
/// ([`reference_for`]), and `files.gate` has a threshold above 0 for its kind, the FP32 file
/// is loaded on `backend`, both run the probes, and the comparison is logged and returned.
/// `Ok(None)`: no gate applies.
///
/// # Errors
///
/// [`corestream::Error::ModelLoad`] naming the ONNX file when it misses a threshold (the
/// message gives the numbers: [`Accuracy::failure`]), or when the FP32 file or a probe fails.
pub fn gate(
    files: &ModelFiles,
    candidate: &TextEmbedder,
    tokenizer: &TextTokenizer,
    backend: Backend,
) -> corestream::Result<Option<Accuracy>> {
    let load_error = |message: String| corestream::Error::ModelLoad {
        model: files.onnx.display().to_string(),
        message,
    };
    let Some((reference, quantization)) = reference_for(files).map_err(load_error)? else {
        return Ok(None);
    };
    let dir = files.dir.as_deref().unwrap_or(Path::new("."));
    let (file, reference_name) = (relative(&files.onnx, dir), relative(&reference, dir));
    if !files.gate.gates(&files.kind) {
        tracing::warn!(
            file = %file,
            reference = %reference_name,
            "accuracy gate off (--min-cosine 0 / --min-agreement 0): serving the quantized file \
             unchecked"
        );
        return Ok(None);
    }
    let start = Instant::now();
    let fp32 = TextEmbedder::load(
        &ModelFiles {
            onnx: reference.clone(),
            ..files.clone()
        },
        backend,
    )?;
    let mut accuracy = Accuracy::measure(&fp32, candidate, tokenizer, &files.kind)
        .map_err(|e| load_error(format!("accuracy gate: {e}")))?;
    drop(fp32);
    accuracy.file = file;
    accuracy.reference = reference_name;
    accuracy.quantization = quantization.to_string();
    accuracy.seconds = start.elapsed().as_secs_f64();
    accuracy.judge(files.gate);
    if let Some(failure) = accuracy.failure() {
        return Err(load_error(failure));
    }
    tracing::info!(
        file = %accuracy.file,
        reference = %accuracy.reference,
        seconds = accuracy.seconds,
        "accuracy gate passed: {}",
        accuracy.summary()
    );
    Ok(Some(accuracy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(spearman(&[1.0, 1.0], &[2.0, 2.0]), 1.0);
        assert_eq!(spearman(&[1.0, 1.0], &[2.0, 3.0]), 0.0);
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), 1);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(cosine(&[0.0], &[0.0]), 1.0);
    }

    fn embedding(mean: f64, worst: f64) -> Accuracy {
        Accuracy {
            file: "onnx/model_qint8_avx512_vnni.onnx".into(),
            quantization: "int8 compute (48 MatMulInteger)".into(),
            reference: "model.onnx".into(),
            model_type: "embedding".into(),
            probes: 52,
            mean_cosine: Some(mean),
            worst_cosine: Some(worst),
            worst_probe: Some("Thanks!!!".into()),
            ..Accuracy::default()
        }
    }

    #[test]
    fn judged_by_the_thresholds() {
        let mut good = embedding(0.9913, 0.9557);
        good.judge(Thresholds::default());
        assert!(good.passed && good.failure().is_none());
        let mut broken = embedding(0.526, 0.220);
        broken.judge(Thresholds::default());
        assert!(!broken.passed);
        let message = broken.failure().unwrap();
        for part in [
            "onnx/model_qint8_avx512_vnni.onnx",
            "model.onnx",
            "mean cosine 0.5260 < 0.98",
            "worst cosine 0.2200 < 0.9",
            "\"Thanks!!!\"",
            "--onnx-file model.onnx",
        ] {
            assert!(message.contains(part), "{part} not in {message}");
        }
        // Only the worst probe below its threshold.
        let mut odd = embedding(0.99, 0.85);
        odd.judge(Thresholds::default());
        let message = odd.failure().unwrap();
        assert!(message.contains("worst cosine 0.8500 < 0.9"), "{message}");
        assert!(!message.contains("mean cosine 0.9900 <"), "{message}");
        // Thresholds of 0 pass anything.
        broken.judge(Thresholds {
            mean_cosine: 0.0,
            worst_cosine: 0.0,
            agreement: 0.0,
        });
        assert!(broken.passed);
    }
}
