//! Which ONNX file of a model directory to serve when it holds quantized files beside the FP32
//! one, as Hugging Face repositories do (`onnx/model.onnx`, `onnx/model_qint8_avx512_vnni.onnx`,
//! `onnx/model_quint8_avx2.onnx`, ...): chosen by the CPU's instruction sets, read from the OS
//! ([`CpuFeatures`]), and the file names ([`OnnxVariant`]); [`choose`] says which and why.
//!
//! Only the names Hugging Face's exporters give (sentence-transformers'
//! `export_dynamic_quantized_onnx_model`, optimum's `ORTQuantizer`) count; a file of any other
//! name (e.g. `model_qint8_broken.onnx`, `model_int8.onnx`) is never chosen by itself, only by
//! `--onnx-file`. `model_O1.onnx` ... `model_O4.onnx` are optimum's graph-optimised FP32 (O4:
//! FP16) variants, not quantized files. A quantized file is served only after the accuracy
//! gate ([`crate::model::accuracy`]) compared it with the FP32 file.
//!
//! Only on ONNX Runtime: tract runs the int8 files, but slower than FP32 (measured on
//! all-MiniLM-L6-v2, one CPU: 0.5x to 0.7x FP32's rows per second, where ONNX Runtime's
//! qint8 file gives 2.2x to 2.9x), so on tract the FP32 file serves unless `--onnx-file` says
//! otherwise.

use std::fmt;

use crate::model::embedder::Backend;

/// What `--quantized` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QuantizedMode {
    /// A quantized file of the directory when the CPU has the instructions it is made for
    /// (the default), after the accuracy gate.
    #[default]
    Auto,
    /// The FP32 file (`onnx/model.onnx`, else `model.onnx`), whatever else the directory holds.
    Off,
}

/// What an ONNX file's name says it is, by Hugging Face's naming.
///
/// ```
/// use corestream_serve::model::quantized::OnnxVariant;
///
/// assert_eq!(OnnxVariant::of("onnx/model_qint8_avx512_vnni.onnx"), OnnxVariant::Qint8Avx512Vnni);
/// assert_eq!(OnnxVariant::of("model.onnx"), OnnxVariant::Fp32);
/// assert_eq!(OnnxVariant::of("onnx/model_O3.onnx"), OnnxVariant::Optimized(3));
/// assert!(!OnnxVariant::of("onnx/model_O3.onnx").is_quantized());
/// assert_eq!(OnnxVariant::of("onnx/model_qint8_broken.onnx"), OnnxVariant::Other);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnnxVariant {
    /// `model.onnx`: the FP32 model.
    Fp32,
    /// `model_O1.onnx` ... `model_O4.onnx`: optimum's graph-optimised variants of it (FP32; O4
    /// mixed FP16), not quantized.
    Optimized(u8),
    /// `model_qint8_avx512_vnni.onnx`: int8 compute, signed weights, for AVX-512 VNNI.
    Qint8Avx512Vnni,
    /// `model_qint8_avx512.onnx`: int8 compute, signed weights, for AVX-512 (BW) without VNNI.
    Qint8Avx512,
    /// `model_quint8_avx2.onnx`: int8 compute, unsigned weights, for AVX2.
    Quint8Avx2,
    /// `model_qint8_arm64.onnx`: int8 compute for ARM64 (never chosen by itself yet).
    Qint8Arm64,
    /// Any other name: chosen only by `--onnx-file`.
    Other,
}

impl OnnxVariant {
    /// The variant the file name of `path` (`onnx/NAME.onnx` or `NAME.onnx`) says.
    pub fn of(path: &str) -> OnnxVariant {
        let name = path.rsplit('/').next().unwrap_or(path);
        match name {
            "model.onnx" => OnnxVariant::Fp32,
            "model_qint8_avx512_vnni.onnx" => OnnxVariant::Qint8Avx512Vnni,
            "model_qint8_avx512.onnx" => OnnxVariant::Qint8Avx512,
            "model_quint8_avx2.onnx" => OnnxVariant::Quint8Avx2,
            "model_qint8_arm64.onnx" => OnnxVariant::Qint8Arm64,
            "model_O1.onnx" => OnnxVariant::Optimized(1),
            "model_O2.onnx" => OnnxVariant::Optimized(2),
            "model_O3.onnx" => OnnxVariant::Optimized(3),
            "model_O4.onnx" => OnnxVariant::Optimized(4),
            _ => OnnxVariant::Other,
        }
    }

    /// The file name Hugging Face gives it (`None` for [`OnnxVariant::Other`]).
    pub fn file_name(self) -> Option<String> {
        Some(match self {
            OnnxVariant::Fp32 => "model.onnx".to_owned(),
            OnnxVariant::Optimized(level) => format!("model_O{level}.onnx"),
            OnnxVariant::Qint8Avx512Vnni => "model_qint8_avx512_vnni.onnx".to_owned(),
            OnnxVariant::Qint8Avx512 => "model_qint8_avx512.onnx".to_owned(),
            OnnxVariant::Quint8Avx2 => "model_quint8_avx2.onnx".to_owned(),
            OnnxVariant::Qint8Arm64 => "model_qint8_arm64.onnx".to_owned(),
            OnnxVariant::Other => return None,
        })
    }

    /// Whether the name says int8 compute.
    pub fn is_quantized(self) -> bool {
        matches!(
            self,
            OnnxVariant::Qint8Avx512Vnni
                | OnnxVariant::Qint8Avx512
                | OnnxVariant::Quint8Avx2
                | OnnxVariant::Qint8Arm64
        )
    }
}

/// The CPU's instruction sets that decide which quantized file runs fastest, as the OS reports
/// them (Linux: the `flags` lines of `/proc/cpuinfo`; a feature counts when every CPU lists
/// it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// `avx2`.
    pub avx2: bool,
    /// `avx512bw`: AVX-512's byte and word instructions (int8 without VNNI).
    pub avx512bw: bool,
    /// `avx512_vnni`: AVX-512's int8 dot products.
    pub avx512_vnni: bool,
    /// `amx_int8`: AMX's int8 tiles (Sapphire Rapids and later).
    pub amx_int8: bool,
    /// Where they were read (`/proc/cpuinfo`), or why none were.
    pub source: String,
}

impl CpuFeatures {
    /// The features every processor of a `/proc/cpuinfo` text lists on its `flags` line (none
    /// when there is no such line, e.g. on ARM, whose `Features` lines name no x86 sets).
    ///
    /// ```
    /// use corestream_serve::model::quantized::CpuFeatures;
    ///
    /// let cpu = CpuFeatures::from_cpuinfo(
    ///     "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512bw avx512_vnni\n\n\
    ///      processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512bw avx512_vnni\n",
    /// );
    /// assert!(cpu.avx512_vnni && cpu.avx2 && !cpu.amx_int8);
    /// assert_eq!(cpu.to_string(), "avx2, avx512bw, avx512_vnni");
    /// ```
    pub fn from_cpuinfo(text: &str) -> CpuFeatures {
        let mut lines = text.lines().filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "flags").then(|| value.split_whitespace().collect::<Vec<_>>())
        });
        let Some(first) = lines.next() else {
            return CpuFeatures {
                source: "/proc/cpuinfo lists no x86 flags".to_owned(),
                ..CpuFeatures::default()
            };
        };
        let mut common: Vec<&str> = first;
        for flags in lines {
            common.retain(|f| flags.contains(f));
        }
        let has = |name: &str| common.contains(&name);
        CpuFeatures {
            avx2: has("avx2"),
            avx512bw: has("avx512bw"),
            avx512_vnni: has("avx512_vnni"),
            amx_int8: has("amx_int8"),
            source: "/proc/cpuinfo".to_owned(),
        }
    }

    /// This machine's features: from `/proc/cpuinfo`, else (another OS) from the CPU itself
    /// (`is_x86_feature_detected!`, which cannot tell AMX), else none.
    pub fn detect() -> CpuFeatures {
        match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(text) => CpuFeatures::from_cpuinfo(&text),
            Err(e) => CpuFeatures::from_cpuid(&format!("cannot read /proc/cpuinfo: {e}")),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn from_cpuid(why: &str) -> CpuFeatures {
        CpuFeatures {
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            avx512bw: std::arch::is_x86_feature_detected!("avx512bw"),
            avx512_vnni: std::arch::is_x86_feature_detected!("avx512vnni"),
            amx_int8: false,
            source: format!("cpuid ({why})"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn from_cpuid(why: &str) -> CpuFeatures {
        CpuFeatures {
            source: why.to_owned(),
            ..CpuFeatures::default()
        }
    }

    /// The quantized files that suit this CPU, best first, and the feature that decided it.
    fn preferred(&self) -> (&'static [OnnxVariant], &'static str) {
        use OnnxVariant::{Qint8Avx512, Qint8Avx512Vnni, Quint8Avx2};
        if self.avx512_vnni {
            (&[Qint8Avx512Vnni, Qint8Avx512, Quint8Avx2], "avx512_vnni")
        } else if self.amx_int8 {
            (&[Qint8Avx512Vnni, Qint8Avx512, Quint8Avx2], "amx_int8")
        } else if self.avx512bw {
            (&[Qint8Avx512, Quint8Avx2], "avx512bw (no avx512_vnni)")
        } else if self.avx2 {
            (&[Quint8Avx2], "avx2 (no avx512_vnni)")
        } else {
            (&[], "no avx2")
        }
    }
}

/// The features it has, as `avx2, avx512bw, avx512_vnni, amx_int8` (`none` for none).
impl fmt::Display for CpuFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.avx2, "avx2"),
            (self.avx512bw, "avx512bw"),
            (self.avx512_vnni, "avx512_vnni"),
            (self.amx_int8, "amx_int8"),
        ]
        .iter()
        .filter(|(has, _)| *has)
        .map(|(_, name)| *name)
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// A chosen ONNX file of a model directory and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxChoice {
    /// The file, relative to the directory (`onnx/model_qint8_avx512_vnni.onnx`).
    pub file: String,
    /// Why, for `/info` and the log: `cpu has avx512_vnni: onnx/model_qint8_avx512_vnni.onnx`.
    pub reason: String,
}

/// The file to serve among a directory's ONNX files `files` (relative to it, as
/// [`onnx_files`](crate::model::source::onnx_files) lists them), whose FP32 file is `fp32`:
/// with [`QuantizedMode::Auto`], the first quantized file (by Hugging Face's names) that suits
/// `cpu` (AVX-512 VNNI or AMX: `model_qint8_avx512_vnni.onnx`, else `model_qint8_avx512.onnx`,
/// else `model_quint8_avx2.onnx`; AVX-512 BW: the last two; AVX2: `model_quint8_avx2.onnx`),
/// in `onnx/` before the directory itself, when `backend` is ONNX Runtime; otherwise `fp32`.
///
/// ```
/// use corestream_serve::model::embedder::Backend;
/// use corestream_serve::model::quantized::{choose, CpuFeatures, QuantizedMode};
///
/// let files = ["model.onnx", "onnx/model_qint8_avx512_vnni.onnx", "onnx/model_quint8_avx2.onnx"]
///     .map(String::from);
/// let vnni = CpuFeatures { avx2: true, avx512bw: true, avx512_vnni: true, ..Default::default() };
/// let choice = choose(&files, "model.onnx", &vnni, QuantizedMode::Auto, Backend::Ort);
/// assert_eq!(choice.file, "onnx/model_qint8_avx512_vnni.onnx");
/// assert_eq!(choice.reason, "cpu has avx512_vnni: onnx/model_qint8_avx512_vnni.onnx");
/// let avx2 = CpuFeatures { avx2: true, ..Default::default() };
/// let choice = choose(&files, "model.onnx", &avx2, QuantizedMode::Auto, Backend::Ort);
/// assert_eq!(choice.file, "onnx/model_quint8_avx2.onnx");
/// let off = choose(&files, "model.onnx", &vnni, QuantizedMode::Off, Backend::Ort);
/// assert_eq!(off.file, "model.onnx");
/// let tract = choose(&files, "model.onnx", &vnni, QuantizedMode::Auto, Backend::Tract);
/// assert_eq!(tract.file, "model.onnx");
/// ```
pub fn choose(
    files: &[String],
    fp32: &str,
    cpu: &CpuFeatures,
    mode: QuantizedMode,
    backend: Backend,
) -> OnnxChoice {
    let fp32_choice = |why: String| OnnxChoice {
        file: fp32.to_owned(),
        reason: format!("{why}: {fp32}"),
    };
    if mode == QuantizedMode::Off {
        return fp32_choice("--quantized off".to_owned());
    }
    let quantized: Vec<&String> = files
        .iter()
        .filter(|f| OnnxVariant::of(f).is_quantized())
        .collect();
    if quantized.is_empty() {
        return fp32_choice("no quantized file of Hugging Face's names here".to_owned());
    }
    if backend != Backend::Ort {
        return fp32_choice(format!(
            "backend {backend} (its int8 kernels run slower than FP32; ort chooses int8)"
        ));
    }
    let (preferred, feature) = cpu.preferred();
    for variant in preferred {
        let Some(name) = variant.file_name() else {
            continue;
        };
        for candidate in [format!("onnx/{name}"), name] {
            if files.contains(&candidate) {
                return OnnxChoice {
                    reason: format!("cpu has {feature}: {candidate}"),
                    file: candidate,
                };
            }
        }
    }
    let found: Vec<&str> = quantized.iter().map(|f| f.as_str()).collect();
    fp32_choice(format!(
        "cpu has {feature} ({}): none of {} suits it",
        cpu.source,
        found.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::source::onnx_files;

    /// A `/proc/cpuinfo` of `cpus` processors with these flags each.
    fn cpuinfo(cpus: usize, flags: &str) -> String {
        (0..cpus)
            .map(|i| {
                format!(
                    "processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Fake CPU\n\
                     flags\t\t: fpu vme sse sse2 {flags}\nbugs\t\t: spectre_v1\n\n"
                )
            })
            .collect()
    }

    /// The ONNX files of a fresh directory holding `files` (empty files).
    fn dir_with(files: &[&str]) -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("onnx")).unwrap();
        for f in files {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let found = onnx_files(dir.path());
        (dir, found)
    }

    const HF: [&str; 9] = [
        "onnx/model.onnx",
        "onnx/model_O1.onnx",
        "onnx/model_O4.onnx",
        "onnx/model_qint8_arm64.onnx",
        "onnx/model_qint8_avx512.onnx",
        "onnx/model_qint8_avx512_vnni.onnx",
        "onnx/model_quint8_avx2.onnx",
        "tokenizer.json",
        "config.json",
    ];

    #[test]
    fn cpuinfo_flags_of_every_processor() {
        let sapphire = CpuFeatures::from_cpuinfo(&cpuinfo(
            4,
            "avx2 avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8",
        ));
        assert!(sapphire.avx2 && sapphire.avx512bw && sapphire.avx512_vnni && sapphire.amx_int8);
        assert_eq!(sapphire.source, "/proc/cpuinfo");
        // Word boundaries: avx512_vnni is not avx512_vnni_fake, avx_vnni is not avx512_vnni.
        let alder = CpuFeatures::from_cpuinfo(&cpuinfo(2, "avx2 avx_vnni avx512_vnni_fake"));
        assert!(alder.avx2 && !alder.avx512_vnni && !alder.avx512bw);
        // A feature one CPU lacks does not count (a hybrid or oddly virtualised machine).
        let mixed = cpuinfo(1, "avx2 avx512bw avx512_vnni") + &cpuinfo(1, "avx2");
        let mixed = CpuFeatures::from_cpuinfo(&mixed);
        assert!(mixed.avx2 && !mixed.avx512_vnni && !mixed.avx512bw);
        // ARM: `Features`, no `flags`.
        let arm = CpuFeatures::from_cpuinfo(
            "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp\n",
        );
        assert_eq!(arm.to_string(), "none");
        assert!(arm.source.contains("no x86 flags"), "{}", arm.source);
        assert_eq!(CpuFeatures::from_cpuinfo("").to_string(), "none");
    }

    #[test]
    fn names_hugging_face_gives() {
        for (name, variant) in [
            ("onnx/model.onnx", OnnxVariant::Fp32),
            ("model_qint8_avx512_vnni.onnx", OnnxVariant::Qint8Avx512Vnni),
            ("onnx/model_qint8_avx512.onnx", OnnxVariant::Qint8Avx512),
            ("onnx/model_quint8_avx2.onnx", OnnxVariant::Quint8Avx2),
            ("onnx/model_qint8_arm64.onnx", OnnxVariant::Qint8Arm64),
            ("onnx/model_O2.onnx", OnnxVariant::Optimized(2)),
            ("onnx/model_O5.onnx", OnnxVariant::Other),
            ("onnx/model_qint8_broken.onnx", OnnxVariant::Other),
            ("onnx/model_int8_weights.onnx", OnnxVariant::Other),
            ("onnx/model_quantized.onnx", OnnxVariant::Other),
            ("onnx/MODEL_QUINT8_AVX2.onnx", OnnxVariant::Other),
            ("paraphrase-MiniLM-L3-v2.onnx", OnnxVariant::Other),
        ] {
            assert_eq!(OnnxVariant::of(name), variant, "{name}");
            if variant != OnnxVariant::Other {
                assert!(name.ends_with(&variant.file_name().unwrap()), "{name}");
            }
        }
        assert!(OnnxVariant::Quint8Avx2.is_quantized());
        assert!(!OnnxVariant::Optimized(4).is_quantized());
        assert!(!OnnxVariant::Other.is_quantized());
    }

    #[test]
    fn each_cpu_gets_the_file_made_for_it() {
        let (_dir, files) = dir_with(&HF);
        let pick = |flags: &str| {
            let cpu = CpuFeatures::from_cpuinfo(&cpuinfo(2, flags));
            choose(
                &files,
                "onnx/model.onnx",
                &cpu,
                QuantizedMode::Auto,
                Backend::Ort,
            )
        };
        let vnni = pick("avx2 avx512f avx512bw avx512_vnni");
        assert_eq!(vnni.file, "onnx/model_qint8_avx512_vnni.onnx");
        assert_eq!(
            vnni.reason,
            "cpu has avx512_vnni: onnx/model_qint8_avx512_vnni.onnx"
        );
        let amx = pick("avx2 amx_int8");
        assert_eq!(amx.file, "onnx/model_qint8_avx512_vnni.onnx");
        assert!(amx.reason.starts_with("cpu has amx_int8"), "{}", amx.reason);
        let skylake = pick("avx2 avx512f avx512bw");
        assert_eq!(skylake.file, "onnx/model_qint8_avx512.onnx");
        let haswell = pick("avx2 fma");
        assert_eq!(haswell.file, "onnx/model_quint8_avx2.onnx");
        assert_eq!(
            haswell.reason,
            "cpu has avx2 (no avx512_vnni): onnx/model_quint8_avx2.onnx"
        );
        let old = pick("sse4_2 avx");
        assert_eq!(old.file, "onnx/model.onnx");
        assert!(old.reason.starts_with("cpu has no avx2"), "{}", old.reason);
        assert!(old.reason.ends_with(": onnx/model.onnx"), "{}", old.reason);
        // Never an optimised FP32 variant, the ARM file or another name.
        for flags in ["avx2 avx512bw avx512_vnni", "avx2", "", "asimddp"] {
            let chosen = pick(flags).file;
            assert!(
                !chosen.contains("_O") && !chosen.contains("arm64"),
                "{chosen}"
            );
        }
    }

    #[test]
    fn falls_back_through_the_files_present() {
        let vnni = CpuFeatures::from_cpuinfo(&cpuinfo(1, "avx2 avx512bw avx512_vnni"));
        // VNNI CPU, only the AVX2 file: it still beats FP32.
        let (_dir, files) = dir_with(&["model.onnx", "onnx/model_quint8_avx2.onnx"]);
        let choice = choose(
            &files,
            "model.onnx",
            &vnni,
            QuantizedMode::Auto,
            Backend::Ort,
        );
        assert_eq!(choice.file, "onnx/model_quint8_avx2.onnx");
        // Files beside model.onnx rather than in onnx/.
        let (_dir, files) = dir_with(&["model.onnx", "model_qint8_avx512_vnni.onnx"]);
        let choice = choose(
            &files,
            "model.onnx",
            &vnni,
            QuantizedMode::Auto,
            Backend::Ort,
        );
        assert_eq!(choice.file, "model_qint8_avx512_vnni.onnx");
        // An AVX2-only CPU and only AVX-512 files: FP32, saying why.
        let avx2 = CpuFeatures::from_cpuinfo(&cpuinfo(1, "avx2"));
        let (_dir, files) = dir_with(&["onnx/model.onnx", "onnx/model_qint8_avx512_vnni.onnx"]);
        let choice = choose(
            &files,
            "onnx/model.onnx",
            &avx2,
            QuantizedMode::Auto,
            Backend::Ort,
        );
        assert_eq!(choice.file, "onnx/model.onnx");
        assert!(
            choice
                .reason
                .contains("none of onnx/model_qint8_avx512_vnni.onnx suits it"),
            "{}",
            choice.reason
        );
        // Unknown and broken names never count, nor optimised FP32 variants.
        let (_dir, files) = dir_with(&[
            "onnx/model.onnx",
            "onnx/model_qint8_broken.onnx",
            "onnx/model_int8_weights.onnx",
            "onnx/model_O3.onnx",
        ]);
        let choice = choose(
            &files,
            "onnx/model.onnx",
            &vnni,
            QuantizedMode::Auto,
            Backend::Ort,
        );
        assert_eq!(choice.file, "onnx/model.onnx");
        assert_eq!(
            choice.reason,
            "no quantized file of Hugging Face's names here: onnx/model.onnx"
        );
        // tract: FP32, whatever the CPU.
        let (_dir, files) = dir_with(&HF);
        let choice = choose(
            &files,
            "onnx/model.onnx",
            &vnni,
            QuantizedMode::Auto,
            Backend::Tract,
        );
        assert_eq!(choice.file, "onnx/model.onnx");
        assert!(
            choice.reason.starts_with("backend tract"),
            "{}",
            choice.reason
        );
        // --quantized off.
        let choice = choose(
            &files,
            "onnx/model.onnx",
            &vnni,
            QuantizedMode::Off,
            Backend::Ort,
        );
        assert_eq!(choice.file, "onnx/model.onnx");
        assert_eq!(choice.reason, "--quantized off: onnx/model.onnx");
    }

    #[test]
    fn this_machine_reads_its_features() {
        let cpu = CpuFeatures::detect();
        if Path::new("/proc/cpuinfo").exists() {
            assert_eq!(cpu.source, "/proc/cpuinfo");
        }
        eprintln!("this machine: {cpu} ({})", cpu.source);
    }
}
