//! Where a model's files are: a Hugging Face model directory laid out as text-embeddings-
//! inference takes it, an ONNX file with a tokenizer file, or the bundled stand-in.
//!
//! In a directory, the ONNX file is `onnx/model.onnx` or `model.onnx`, the tokenizer
//! `tokenizer.json`, the pooling `1_Pooling/config.json` and the longest input
//! `sentence_bert_config.json` (or the other files [`crate::model::tokenizer`] names). The
//! folder of earlier releases (`--models DIR` holding `paraphrase-MiniLM-L3-v2.onnx` and
//! `tokenizer.json`) is read too.

use std::path::{Path, PathBuf};

use crate::model::accuracy::Thresholds;
use crate::model::embedder::Backend;
use crate::model::kind::ModelKind;
use crate::model::pooling::Pooling;
use crate::model::prompts::Prompts;
use crate::model::quantized::{self, CpuFeatures, QuantizedMode};

/// The file name of the model `--models DIR` (earlier releases' flag) names.
pub const LEGACY_ONNX: &str = "paraphrase-MiniLM-L3-v2.onnx";

/// The files of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The model's name, as `/info` and the answers' `model` field give it: the directory's
    /// name, or the ONNX file's stem.
    pub name: String,
    /// The ONNX file.
    pub onnx: PathBuf,
    /// The Hugging Face `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// How token vectors become one vector.
    pub pooling: Pooling,
    /// Where [`pooling`](Self::pooling) was read (`1_Pooling/config.json` or `default`).
    pub pooling_source: String,
    /// The prompts of `config_sentence_transformers.json` (none without it).
    pub prompts: Prompts,
    /// What it answers, from `config.json` (an embedding model without one).
    pub kind: ModelKind,
    /// The model directory: the one given, or the one the ONNX file is in (`DIR` for
    /// `DIR/onnx/FILE.onnx`). The accuracy gate looks for its FP32 file there.
    pub dir: Option<PathBuf>,
    /// Why this ONNX file: `the directory's FP32 file: onnx/model.onnx`, `--onnx-file ...`,
    /// `cpu has avx512_vnni: onnx/model_qint8_avx512_vnni.onnx` ([`with_quantized`]).
    ///
    /// [`with_quantized`]: ModelFiles::with_quantized
    pub onnx_reason: String,
    /// The accuracy gate's thresholds for a quantized ONNX file
    /// ([`crate::model::accuracy::gate`]); the defaults unless set.
    pub gate: Thresholds,
}

fn missing(path: &Path, what: &str) -> corestream::Error {
    corestream::Error::ModelLoad {
        model: path.display().to_string(),
        message: what.to_owned(),
    }
}

fn existing(path: PathBuf, what: &str) -> corestream::Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(missing(&path, &format!("no {what} here")))
    }
}

impl ModelFiles {
    /// The same model with another ONNX file of its directory (`--onnx-file`, relative to
    /// `dir`, e.g. `onnx/model_qint8_avx512_vnni.onnx`): an error listing the directory's ONNX
    /// files when it is not one of them.
    pub fn with_onnx_file(mut self, dir: &Path, file: &Path) -> corestream::Result<ModelFiles> {
        let path = dir.join(file);
        if !path.is_file() || path.extension().is_none_or(|e| e != "onnx") {
            let found = onnx_files(dir);
            return Err(missing(
                &path,
                &format!(
                    "--onnx-file {} is not an ONNX file of the model directory; it has: {}",
                    file.display(),
                    if found.is_empty() {
                        "none".to_owned()
                    } else {
                        found.join(", ")
                    }
                ),
            ));
        }
        self.onnx = path;
        self.onnx_reason = format!("--onnx-file {}", file.display());
        Ok(self)
    }

    /// The same model with the ONNX file of its directory that suits `cpu` and `backend`, as
    /// [`quantized::choose`] says (with [`QuantizedMode::Off`], on tract, or without a
    /// directory or FP32 file: the FP32 file), and why in [`onnx_reason`](Self::onnx_reason).
    /// For a model whose ONNX file was found in its directory, not named.
    ///
    /// ```
    /// use corestream_serve::model::embedder::Backend;
    /// use corestream_serve::model::quantized::{CpuFeatures, QuantizedMode};
    /// use corestream_serve::model::ModelFiles;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("onnx")).unwrap();
    /// for f in ["model.onnx", "onnx/model_quint8_avx2.onnx", "tokenizer.json"] {
    ///     std::fs::write(dir.path().join(f), b"").unwrap();
    /// }
    /// let files = ModelFiles::from_dir(dir.path())?;
    /// assert_eq!(files.onnx_reason, "the directory's FP32 file: model.onnx");
    /// let avx2 = CpuFeatures { avx2: true, ..Default::default() };
    /// let chosen = files.with_quantized(QuantizedMode::Auto, &avx2, Backend::Ort);
    /// assert!(chosen.onnx.ends_with("onnx/model_quint8_avx2.onnx"));
    /// assert_eq!(chosen.onnx_reason, "cpu has avx2 (no avx512_vnni): onnx/model_quint8_avx2.onnx");
    /// # Ok::<(), corestream::Error>(())
    /// ```
    pub fn with_quantized(
        mut self,
        mode: QuantizedMode,
        cpu: &CpuFeatures,
        backend: Backend,
    ) -> ModelFiles {
        let Some(dir) = self.dir.clone() else {
            return self;
        };
        let Some(fp32) = fp32_file(&dir) else {
            return self;
        };
        let choice = quantized::choose(&onnx_files(&dir), &fp32, cpu, mode, backend);
        self.onnx = dir.join(&choice.file);
        self.onnx_reason = choice.reason;
        self
    }

    /// The model at `path`: a directory (see the module documentation), or an ONNX file whose
    /// tokenizer is `tokenizer` (or the `tokenizer.json` beside it).
    pub fn locate(path: &Path, tokenizer: Option<&Path>) -> corestream::Result<ModelFiles> {
        if path.is_dir() {
            let mut files = ModelFiles::from_dir(path)?;
            if let Some(tokenizer) = tokenizer {
                files.tokenizer = existing(tokenizer.to_owned(), "tokenizer file")?;
            }
            Ok(files)
        } else {
            let tokenizer = match tokenizer {
                Some(t) => t.to_owned(),
                None => path.with_file_name("tokenizer.json"),
            };
            ModelFiles::from_files(path, &tokenizer)
        }
    }

    /// The model of the Hugging Face model directory `dir`.
    pub fn from_dir(dir: &Path) -> corestream::Result<ModelFiles> {
        let onnx = fp32_file(dir)
            .or_else(|| {
                dir.join(LEGACY_ONNX)
                    .is_file()
                    .then(|| LEGACY_ONNX.to_owned())
            })
            .map(|f| dir.join(f))
            .ok_or_else(|| {
                missing(
                    dir,
                    "no ONNX model: expected onnx/model.onnx or model.onnx (as Hugging Face \
                     model repositories ship them), or pass --model FILE.onnx",
                )
            })?;
        let tokenizer = existing(dir.join("tokenizer.json"), "tokenizer.json")?;
        let (pooling, pooling_source) = Pooling::from_dir(dir).map_err(|m| missing(dir, &m))?;
        let prompts = Prompts::from_dir(dir).map_err(|m| missing(dir, &m))?;
        let kind = ModelKind::from_dir(dir).map_err(|m| missing(dir, &m))?;
        let (name, onnx_reason) = if onnx.ends_with(LEGACY_ONNX) {
            (
                "paraphrase-MiniLM-L3-v2".to_owned(),
                format!("the folder's {LEGACY_ONNX}"),
            )
        } else {
            let file = fp32_file(dir).unwrap_or_default();
            (name_of(dir), format!("the directory's FP32 file: {file}"))
        };
        Ok(ModelFiles {
            name,
            onnx,
            tokenizer,
            pooling,
            pooling_source,
            prompts,
            kind,
            dir: Some(dir.to_owned()),
            onnx_reason,
            gate: Thresholds::default(),
        })
    }

    /// The ONNX file `onnx` with the tokenizer file `tokenizer`; pooling as the ONNX file's
    /// directory (or its parent, for `DIR/onnx/model.onnx`) declares it.
    pub fn from_files(onnx: &Path, tokenizer: &Path) -> corestream::Result<ModelFiles> {
        let onnx = existing(onnx.to_owned(), "ONNX file")?;
        let tokenizer = existing(tokenizer.to_owned(), "tokenizer file")?;
        let dir = onnx.parent().unwrap_or(Path::new("."));
        let model_dir = if dir.ends_with("onnx") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        let (pooling, pooling_source) =
            Pooling::from_dir(model_dir).map_err(|m| missing(model_dir, &m))?;
        let prompts = Prompts::from_dir(model_dir).map_err(|m| missing(model_dir, &m))?;
        let kind = ModelKind::from_dir(model_dir).map_err(|m| missing(model_dir, &m))?;
        let name = if model_dir != dir || onnx.file_name() == Some("model.onnx".as_ref()) {
            name_of(model_dir)
        } else {
            onnx.file_stem()
                .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned())
        };
        let model_dir = model_dir.to_owned();
        Ok(ModelFiles {
            name,
            onnx,
            tokenizer,
            pooling,
            pooling_source,
            prompts,
            kind,
            dir: Some(model_dir),
            onnx_reason: "--model names the file".to_owned(),
            gate: Thresholds::default(),
        })
    }
}

/// A model directory's FP32 ONNX file, relative to it: `onnx/model.onnx`, else `model.onnx`
/// (as Hugging Face repositories have it); `None` without either.
pub fn fp32_file(dir: &Path) -> Option<String> {
    ["onnx/model.onnx", "model.onnx"]
        .into_iter()
        .find(|f| dir.join(f).is_file())
        .map(str::to_owned)
}

/// The ONNX files of a model directory and of its `onnx/` folder, relative to it, sorted.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("onnx")).unwrap();
/// for f in ["onnx/model.onnx", "onnx/model_qint8_avx512_vnni.onnx", "README.md"] {
///     std::fs::write(dir.path().join(f), b"").unwrap();
/// }
/// assert_eq!(
///     corestream_serve::model::source::onnx_files(dir.path()),
///     ["onnx/model.onnx", "onnx/model_qint8_avx512_vnni.onnx"]
/// );
/// ```
pub fn onnx_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (folder, prefix) in [(dir.to_owned(), ""), (dir.join("onnx"), "onnx/")] {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".onnx") && entry.path().is_file() {
                found.push(format!("{prefix}{name}"));
            }
        }
    }
    found.sort();
    found
}

/// A directory's name (`.` and `..` resolved), `model` when it has none.
fn name_of(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".to_owned())
}
