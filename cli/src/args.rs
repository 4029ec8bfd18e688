//! The options `bench` and `tune` share ([`RunArgs`]: which backend, input shapes, how to run
//! the model), and the value parsers every subcommand's options use: each returns a [`Fail`]
//! with a one-line message, which `main` prints as `error: ...` with exit status 2.

use std::str::FromStr;
use std::time::Duration;

use corestream::backend::ort as ort_backend;
use corestream::backend::{Backend, ORT_MISSING_NOTE};
use corestream::{CpuPool, Streams};

use crate::Fail;

// === the shared options ===

/// The options `bench` and `tune` share: how to load the model and how to run it.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The inference backend: `ort` (ONNX Runtime) or `tract`. Default: `ort` when the ONNX
    /// Runtime library is found, else `tract`; `tune` searches both when it is found.
    #[arg(long, value_name = "ort|tract", value_parser = parse_backend)]
    pub backend: Option<Backend>,
    /// An input's shape with its batch as the first axis, e.g. `input=1x3x224x224` (the first
    /// axis is replaced by each batch size). Repeat for several inputs.
    #[arg(long = "input", value_name = "NAME=SHAPE", value_parser = parse_input_shape)]
    pub inputs: Vec<InputShape>,
    /// tract only: run at most this many rows through the model at a time
    /// (`OnnxModelBuilder::max_rows_per_run`); default: whole parts. `tune` searches it for
    /// tract when not given.
    #[arg(long, value_name = "ROWS")]
    pub max_rows_per_run: Option<usize>,
    /// Let each stream (and the waiting caller) poll this long before parking, e.g. `50us`
    /// (`MultiStreamModuleBuilder::spin`); default: corestream's `DEFAULT_SPIN` (100 us); `0s`
    /// parks at once. `tune` also tries parking at once when not given.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub spin: Option<Duration>,
    /// ort only: whether ONNX Runtime's intra-op workers of multi-CPU streams spin while they
    /// wait (`OrtModelBuilder::spin`); default: on.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub ort_spin: Option<bool>,
    /// Measure beside a controlled neighbour: one busy thread per allowed CPU, each pinned, at
    /// this process's priority (`corestream::Cotenant`), running from before the first
    /// measurement to after the last. Users' machines are rarely idle.
    #[arg(long)]
    pub cotenant: bool,
    /// Pin the measuring (calling) thread to the first stream's first CPU, as Python
    /// onnxruntime's latency mode pins its caller. With one-CPU streams `forward_sync` then
    /// runs the first stream's part on the caller itself (`MultiStreamModuleBuilder::caller_runs`).
    #[arg(long)]
    pub pin_caller: bool,
}

impl RunArgs {
    /// The neighbour `--cotenant` asks for, running until dropped.
    pub fn neighbour(&self) -> Result<Option<corestream::Cotenant>, Fail> {
        if !self.cotenant {
            return Ok(None);
        }
        Ok(Some(corestream::Cotenant::start(&CpuPool::all()?)?))
    }

    /// The backend a backend-specific option asks for, when no `--backend` is given; an error
    /// when the options ask for both, or for the other backend than `--backend`.
    fn implied_backend(&self) -> Result<Option<Backend>, Fail> {
        let tract_only = self
            .max_rows_per_run
            .is_some()
            .then_some("--max-rows-per-run");
        let ort_only = self.ort_spin.is_some().then_some("--ort-spin");
        match (self.backend, tract_only, ort_only) {
            (_, Some(t), Some(o)) => Err(Fail(format!(
                "{t} is a tract option and {o} an ONNX Runtime option: use one backend"
            ))),
            (Some(Backend::Ort), Some(t), None) => Err(Fail(format!(
                "{t} is a tract option (OnnxModelBuilder::max_rows_per_run); ONNX Runtime runs each stream's part whole: drop it or use --backend tract"
            ))),
            (Some(Backend::Tract), None, Some(o)) => Err(Fail(format!(
                "{o} is an ONNX Runtime option; it needs --backend ort"
            ))),
            (Some(b), _, _) => Ok(Some(b)),
            (None, Some(_), None) => Ok(Some(Backend::Tract)),
            (None, None, Some(_)) => Ok(Some(Backend::Ort)),
            (None, None, None) => Ok(None),
        }
    }

    /// The backends to run: the one `--backend` (or a backend-specific option) names; else
    /// ONNX Runtime when its library is found (with `all_if_found`: both, ONNX Runtime first),
    /// else tract, with one note on stderr.
    pub fn backends(&self, all_if_found: bool) -> Result<Vec<Backend>, Fail> {
        if let Some(b) = self.implied_backend()? {
            return Ok(vec![b]);
        }
        match ort_backend::load_library(None) {
            Ok(_) if all_if_found => Ok(vec![Backend::Ort, Backend::Tract]),
            Ok(_) => Ok(vec![Backend::Ort]),
            Err(_) => {
                eprintln!("{ORT_MISSING_NOTE}");
                Ok(vec![Backend::Tract])
            }
        }
    }
}

/// One `--input NAME=SHAPE`.
#[derive(Debug, Clone)]
pub struct InputShape {
    /// The option's value as given, for messages.
    pub spec: String,
    /// The model input it names.
    pub name: String,
    /// The axes after the first; the first (the batch) becomes symbolic.
    pub row_axes: Vec<usize>,
}

impl InputShape {
    /// The shape for `OnnxModelBuilder::input`: a symbolic batch axis `N`, then the rest.
    pub fn symbolic(&self) -> String {
        std::iter::once("N".to_string())
            .chain(self.row_axes.iter().map(usize::to_string))
            .collect::<Vec<_>>()
            .join(",")
    }
}

// === value parsers ===

/// A duration in humantime's syntax: `10s`, `500ms`, `2m`, `50us`.
pub fn parse_duration(text: &str) -> Result<Duration, Fail> {
    humantime::parse_duration(text).map_err(|e| {
        Fail(format!(
            "cannot parse duration {text:?}: {e} (e.g. 10s, 500ms, 2m)"
        ))
    })
}

/// A comma-separated list of `--{what}` values, none empty.
fn parse_list<T>(what: &str, text: &str, item: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, Fail> {
    let items: Option<Vec<T>> = text.split(',').map(str::trim).map(&item).collect();
    match items {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Fail(format!(
            "cannot parse --{what} {text:?}: expected a comma-separated list"
        ))),
    }
}

/// Batch sizes: positive numbers.
pub fn parse_batches(text: &str) -> Result<Vec<usize>, Fail> {
    parse_list("batch", text, |s| s.parse().ok().filter(|&b: &usize| b > 0))
}

/// Stream counts as [`Streams::from_str`] reads them: `auto` or positive numbers.
/// [`check_streams`] compares them with the CPUs.
pub fn parse_streams(text: &str) -> Result<Vec<Streams>, Fail> {
    parse_list("streams", text, |s| Streams::from_str(s).ok())
}

pub fn parse_backend(text: &str) -> Result<Backend, Fail> {
    text.parse().map_err(|_| {
        Fail(format!(
            "--backend {text:?}: expected ort (ONNX Runtime) or tract"
        ))
    })
}

pub fn parse_on_off(text: &str) -> Result<bool, Fail> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(Fail(format!("--ort-spin {text:?}: expected on or off"))),
    }
}

pub fn parse_input_shape(spec: &str) -> Result<InputShape, Fail> {
    let (name, shape) = spec.split_once('=').ok_or_else(|| {
        Fail(format!(
            "--input {spec:?}: expected NAME=SHAPE, e.g. x=1x64x3x3"
        ))
    })?;
    let axes: Option<Vec<usize>> = shape.split(['x', ',']).map(|d| d.parse().ok()).collect();
    match axes {
        Some(axes) if !axes.is_empty() => Ok(InputShape {
            spec: spec.to_owned(),
            name: name.to_owned(),
            row_axes: axes[1..].to_vec(),
        }),
        _ => Err(Fail(format!(
            "--input {spec:?}: cannot parse shape {shape:?}; expected numbers joined by x, e.g. 1x3x224x224"
        ))),
    }
}

/// Rejects stream counts above the CPUs this process may use.
pub fn check_streams(streams: &[Streams], cpus: usize) -> Result<(), Fail> {
    match streams
        .iter()
        .find(|s| matches!(s, Streams::Count(n) if *n > cpus))
    {
        Some(s) => Err(Fail(format!(
            "--streams {s}: more streams than CPUs; this process may use {cpus} CPUs (1 to {cpus} streams)"
        ))),
        None => Ok(()),
    }
}
