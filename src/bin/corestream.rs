//! `corestream`: inspect the machine, benchmark an ONNX model in throughput mode, and tune its
//! stream count and batch size (feature `cli`).
//!
//! - `corestream topology [--json]`: nodes, physical cores with SMT siblings, allowed CPUs, the
//!   pools corestream would make, and the OpenMP runtime found.
//! - `corestream bench [MODEL.onnx] [--backend ort|tract] [--input name=1x3x224x224 ...]
//!   [--batch 1,8,16] [--streams auto,1,2] [--duration 10s] [--json FILE]`: items/s and latency
//!   p50/p99 for every batch x streams combination; without a model it runs the bundled
//!   ExampleNet1.
//! - `corestream tune MODEL.onnx [--backend ort|tract] [--latency-p99 20ms]`: the backend,
//!   stream count and batch size with the highest throughput within the latency bound, and the
//!   builder code that uses it.
//!
//! The backend: `--backend ort` (ONNX Runtime, `corestream::backend::ort`) or `--backend tract`
//! (`corestream::backend::tract`). Without `--backend`, a backend-specific option picks its
//! backend (`--max-rows-per-run`: tract, `--ort-spin`: ort); otherwise the default is `ort` when
//! the ONNX Runtime library is found (`ORT_DYLIB_PATH`, then `target/onnxruntime/` filled by
//! `bash scripts/fetch-onnxruntime.sh`), else `tract`, with one `note:` line on stderr saying
//! how to fetch ONNX Runtime. `tune` without `--backend` searches both backends when ONNX
//! Runtime is found. A backend-specific option with the other backend is an error.
//!
//! Bad input (missing file, unparsable shape, unknown input name, more streams than CPUs, ...)
//! prints one `error: ...` line on stderr and exits with status 2.
//!
//! The flow: [`main`] parses the command line once into typed values ([`Cli`]); every value
//! that does not parse is reported there. A command then names its model as a [`ModelSource`],
//! whose [`load`](ModelSource::load) is the one place that builds a model (on either backend,
//! as one [`SharedModel`]), and measures
//! [`Trial`]s with [`measure`], each giving a [`Measurement`].

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use corestream::backend::ort::{self as ort_backend, OrtModel};
use corestream::backend::tract::{OnnxModel, OnnxModelBuilder};
use corestream::backend::{Backend, ElementType, InputSpec, Tensor, ORT_MISSING_NOTE};
use corestream::{CpuPool, Error, Module, MultiStreamModule, Streams, Topology};
use serde_json::{json, Value};

const EXAMPLENET1: &[u8] = include_bytes!("../../assets/models/examplenet1.onnx");

// ===== command line =====

/// The command line, parsed once in [`main`].
#[derive(Debug, Parser)]
#[command(
    name = "corestream",
    version,
    about = "Throughput-mode CPU inference: topology, bench, tune"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Show nodes, cores, SMT siblings, allowed CPUs, pools and the OpenMP runtime.
    Topology {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure items/s and latency for every batch x streams combination.
    Bench(BenchArgs),
    /// Find the stream count and batch size with the highest throughput within a p99 bound.
    Tune(TuneArgs),
}

/// The arguments of `bench` (clap shows the `Command::Bench` doc as its help).
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The ONNX model (default: the bundled ExampleNet1).
    model: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    /// Batch sizes, comma-separated.
    // `std::vec::Vec` (not `Vec`): clap then takes the whole list as one value.
    #[arg(long, default_value = "1,8,16", value_parser = parse_batches)]
    batch: std::vec::Vec<usize>,
    /// Stream counts, comma-separated: numbers or `auto` (one per CPU).
    #[arg(long, default_value = "auto,1", value_parser = parse_streams)]
    streams: std::vec::Vec<Streams>,
    /// Measuring time per combination (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Also write the results and the machine's topology as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The arguments of `tune` (clap shows the `Command::Tune` doc as its help).
#[derive(Debug, clap::Args)]
struct TuneArgs {
    /// The ONNX model.
    model: PathBuf,
    #[command(flatten)]
    run: RunArgs,
    /// Latency bound for one call's p99.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    latency_p99: Duration,
    /// Measuring time per trial.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    duration: Duration,
}

/// The options `bench` and `tune` share: how to load the model and how to run it.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The inference backend: `ort` (ONNX Runtime) or `tract`. Default: `ort` when the ONNX
    /// Runtime library is found, else `tract`; `tune` searches both when it is found.
    #[arg(long, value_name = "ort|tract", value_parser = parse_backend)]
    backend: Option<Backend>,
    /// An input's shape with its batch as the first axis, e.g. `input=1x3x224x224` (the first
    /// axis is replaced by each batch size). Repeat for several inputs.
    #[arg(long = "input", value_name = "NAME=SHAPE", value_parser = parse_input_shape)]
    inputs: Vec<InputShape>,
    /// tract only: run at most this many rows through the model at a time
    /// (`OnnxModelBuilder::max_rows_per_run`); default: whole parts. `tune` searches it for
    /// tract when not given.
    #[arg(long, value_name = "ROWS")]
    max_rows_per_run: Option<usize>,
    /// Let each stream (and the waiting caller) poll this long before parking, e.g. `50us`
    /// (`MultiStreamModuleBuilder::spin`); default: corestream's `DEFAULT_SPIN` (100 us); `0s`
    /// parks at once. `tune` also tries parking at once when not given.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    spin: Option<Duration>,
    /// ort only: whether ONNX Runtime's intra-op workers of multi-CPU streams spin while they
    /// wait (`OrtModelBuilder::spin`); default: on.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    ort_spin: Option<bool>,
    /// Measure beside a controlled neighbour: one busy thread per allowed CPU, each pinned, at
    /// this process's priority (`corestream::Cotenant`), running from before the first
    /// measurement to after the last. Users' machines are rarely idle.
    #[arg(long)]
    cotenant: bool,
    /// Pin the measuring (calling) thread to the first stream's first CPU, as Python
    /// onnxruntime's latency mode pins its caller. With one-CPU streams `forward_sync` then
    /// runs the first stream's part on the caller itself (`MultiStreamModuleBuilder::caller_runs`).
    #[arg(long)]
    pin_caller: bool,
}

impl RunArgs {
    /// The neighbour `--cotenant` asks for, running until dropped.
    fn neighbour(&self) -> Result<Option<corestream::Cotenant>, Fail> {
        if !self.cotenant {
            return Ok(None);
        }
        Ok(Some(corestream::Cotenant::start(&CpuPool::all()?)?))
    }

    /// The trial of `batch` rows on `streams` with `backend` and the fixed
    /// `--max-rows-per-run` and `--spin`.
    fn trial(&self, backend: Backend, streams: Streams, batch: usize, duration: Duration) -> Trial {
        Trial {
            backend,
            streams,
            batch,
            rows_per_run: self.max_rows_per_run,
            spin: self.spin.unwrap_or(corestream::DEFAULT_SPIN),
            pin_caller: self.pin_caller,
            duration,
        }
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
    fn backends(&self, all_if_found: bool) -> Result<Vec<Backend>, Fail> {
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
struct InputShape {
    /// The option's value as given, for messages.
    spec: String,
    /// The model input it names.
    name: String,
    /// The axes after the first; the first (the batch) becomes symbolic.
    row_axes: Vec<usize>,
}

impl InputShape {
    /// The shape for [`OnnxModelBuilder::input`]: a symbolic batch axis `N`, then the rest.
    fn symbolic(&self) -> String {
        std::iter::once("N".to_string())
            .chain(self.row_axes.iter().map(usize::to_string))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A CLI failure: a message for stderr. Value parsers return it too, so [`parse_cli`] can tell
/// their messages from clap's own.
#[derive(Debug)]
struct Fail(String);

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Fail {}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail(e.to_string())
    }
}

fn main() {
    let cli = parse_cli();
    let result = match cli.command {
        Command::Topology { json } => topology(json),
        Command::Bench(args) => bench(args),
        Command::Tune(args) => tune(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(fail) => exit_with(fail),
    }
}

/// Parses the command line. A value our parsers reject exits with its one-line message; any
/// other problem (unknown option, missing argument, `--help`) exits as clap does.
fn parse_cli() -> Cli {
    Cli::try_parse().unwrap_or_else(|e| {
        let ours = e.source().and_then(|s| s.downcast_ref::<Fail>());
        match (e.kind(), ours) {
            (ErrorKind::ValueValidation, Some(fail)) => exit_with(Fail(fail.0.clone())),
            _ => e.exit(),
        }
    })
}

/// Prints `error: MESSAGE` on stderr and exits with status 2.
fn exit_with(Fail(message): Fail) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

// ===== value parsers =====

fn parse_duration(text: &str) -> Result<Duration, Fail> {
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

fn parse_batches(text: &str) -> Result<Vec<usize>, Fail> {
    parse_list("batch", text, |s| s.parse().ok().filter(|&b: &usize| b > 0))
}

/// Stream counts: `auto` or positive numbers. [`check_streams`] compares them with the CPUs.
fn parse_streams(text: &str) -> Result<Vec<Streams>, Fail> {
    parse_list("streams", text, |s| match s {
        "auto" => Some(Streams::Auto),
        n => n
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .map(Streams::Count),
    })
}

fn parse_backend(text: &str) -> Result<Backend, Fail> {
    text.parse().map_err(|_| {
        Fail(format!(
            "--backend {text:?}: expected ort (ONNX Runtime) or tract"
        ))
    })
}

fn parse_on_off(text: &str) -> Result<bool, Fail> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(Fail(format!("--ort-spin {text:?}: expected on or off"))),
    }
}

fn parse_input_shape(spec: &str) -> Result<InputShape, Fail> {
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

/// How a stream count is shown: `auto` or the number.
fn streams_label(streams: Streams) -> String {
    match streams {
        Streams::Auto => "auto".to_string(),
        Streams::Count(n) => n.to_string(),
    }
}

/// Rejects stream counts above the CPUs this process may use.
fn check_streams(streams: &[Streams], cpus: usize) -> Result<(), Fail> {
    match streams
        .iter()
        .find(|s| matches!(s, Streams::Count(n) if *n > cpus))
    {
        Some(&s) => Err(Fail(format!(
            "--streams {}: more streams than CPUs; this process may use {cpus} CPUs (1 to {cpus} streams)",
            streams_label(s)
        ))),
        None => Ok(()),
    }
}

// ===== topology =====

fn topology_json(topo: &Topology) -> Value {
    let pools: Vec<Value> = topo
        .nodes()
        .iter()
        .map(|&n| json!({"node": n, "from_node": CpuPool::from_node_in(topo, n).ok().map(|p| p.cpus().to_vec())}))
        .collect();
    json!({
        "nodes": topo.nodes().iter().map(|&n| json!({"node": n, "cpus": topo.node_cpus(n)})).collect::<Vec<_>>(),
        "physical_cores": topo.physical_cores(),
        "allowed": topo.allowed(),
        "pools": pools,
        "all": CpuPool::all_in(topo).ok().map(|p| p.cpus().to_vec()),
        "openmp": corestream::omp::status().to_string(),
    })
}

fn topology(as_json: bool) -> Result<i32, Fail> {
    let topo = Topology::detect()?;
    if as_json {
        println!("{:#}", topology_json(&topo));
        return Ok(0);
    }
    println!("nodes: {}", topo.nodes().len());
    for n in topo.nodes() {
        println!("  node {n}: cpus {:?}", topo.node_cpus(n));
    }
    println!("physical cores (SMT siblings):");
    for core in topo.physical_cores() {
        println!("  {core:?}");
    }
    println!("allowed cpus: {:?}", topo.allowed());
    for n in topo.nodes() {
        match CpuPool::from_node_in(&topo, n) {
            Ok(pool) => println!("CpuPool::from_node({n}) = {pool}"),
            Err(e) => println!("CpuPool::from_node({n}): {e}"),
        }
    }
    println!("CpuPool::all() = {}", CpuPool::all_in(&topo)?);
    println!("openmp: {}", corestream::omp::status());
    Ok(0)
}

// ===== models and measurements =====

/// A model on either backend: both take and return `Vec<Tensor>`.
type SharedModel = Arc<dyn Module<Input = Vec<Tensor>, Output = Vec<Tensor>>>;

/// A built model and what its inputs take.
struct Loaded {
    model: SharedModel,
    inputs: Vec<InputSpec>,
}

/// The model a command runs: a file (or the bundled ExampleNet1), its `--input` shapes and
/// the backend options.
#[derive(Debug, Clone)]
struct ModelSource {
    /// `None`: the bundled ExampleNet1.
    path: Option<PathBuf>,
    inputs: Vec<InputShape>,
    /// `--ort-spin`; `None`: the backend's default.
    ort_spin: Option<bool>,
}

impl ModelSource {
    fn new(path: Option<PathBuf>, run: &RunArgs) -> ModelSource {
        ModelSource {
            path,
            inputs: run.inputs.clone(),
            ort_spin: run.ort_spin,
        }
    }

    /// The model's name in reports and in the builder code `tune` prints.
    fn label(&self) -> String {
        self.path
            .as_deref()
            .map_or("bundled ExampleNet1".into(), |p| p.display().to_string())
    }

    fn tract_builder(&self) -> OnnxModelBuilder {
        match &self.path {
            Some(p) => OnnxModel::builder(p),
            None => OnnxModel::builder_from_bytes(EXAMPLENET1),
        }
    }

    fn ort_model(&self) -> Result<OrtModel, Fail> {
        let mut builder = match &self.path {
            Some(p) => OrtModel::builder(p),
            None => OrtModel::builder_from_bytes(EXAMPLENET1),
        };
        if let Some(spin) = self.ort_spin {
            builder = builder.spin(spin);
        }
        Ok(builder.build()?)
    }

    /// The index of the model input `shape` names.
    fn input_index(specs: &[InputSpec], shape: &InputShape) -> Result<usize, Fail> {
        specs
            .iter()
            .position(|s| s.name == shape.name)
            .ok_or_else(|| {
                Fail(format!(
                    "--input {:?}: the model has no input {:?}; its inputs: {}",
                    shape.spec,
                    shape.name,
                    specs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// Builds the model on `backend` with the `--input` shapes applied (tract: also running at
    /// most `rows_per_run` rows at a time). The one function that builds models.
    fn load(&self, backend: Backend, rows_per_run: Option<usize>) -> Result<Loaded, Fail> {
        // The same message whichever backend would have read the file.
        if let Some(path) = self.path.as_deref().filter(|p| !p.exists()) {
            return Err(Fail(format!(
                "cannot load model {}: no such file",
                path.display()
            )));
        }
        match backend {
            Backend::Tract => self.load_tract(rows_per_run),
            Backend::Ort => {
                if rows_per_run.is_some() {
                    return Err(Fail(
                        "--max-rows-per-run is a tract option; ONNX Runtime runs whole parts"
                            .into(),
                    ));
                }
                let model = self.ort_model()?;
                let inputs = model.inputs().to_vec();
                // ONNX Runtime keeps the declared shapes: --input only shapes the data, so
                // it must name an input and match its rank.
                for shape in &self.inputs {
                    let spec = &inputs[Self::input_index(&inputs, shape)?];
                    if spec.shape.len() != shape.row_axes.len() + 1 {
                        return Err(Fail(format!(
                            "--input {:?}: the model's input {:?} has {} axes ({spec})",
                            shape.spec,
                            shape.name,
                            spec.shape.len()
                        )));
                    }
                }
                Ok(Loaded {
                    model: Arc::new(model),
                    inputs,
                })
            }
        }
    }

    fn load_tract(&self, rows_per_run: Option<usize>) -> Result<Loaded, Fail> {
        // The model as declared, to find the inputs by name and keep their element types.
        let plain = self.tract_builder().build()?;
        let mut builder = self.tract_builder();
        for shape in &self.inputs {
            let index = Self::input_index(plain.inputs(), shape)?;
            let spec = &plain.inputs()[index];
            let element_type = spec.element_type.ok_or_else(|| {
                Fail(format!(
                    "--input {:?}: input {:?} has element type {}, which corestream tensors do not hold",
                    shape.spec, shape.name, spec.type_name
                ))
            })?;
            builder = builder.input(index, element_type, &shape.symbolic());
        }
        if let Some(rows) = rows_per_run {
            builder = builder.max_rows_per_run(rows);
        }
        let model = builder.build()?;
        Ok(Loaded {
            inputs: model.inputs().to_vec(),
            model: Arc::new(model),
        })
    }
}

/// Deterministic values for `n` elements of type `T`.
fn pattern<T>(n: usize, f: impl Fn(usize) -> T) -> Vec<T> {
    (0..n).map(|i| f((i * 7919) % 1000)).collect()
}

/// Deterministic inputs for a batch of `b` rows: an input named by `--input` gets that shape
/// with `b` rows; any other gets its declared shape with its one symbolic axis set to `b`.
fn make_inputs(specs: &[InputSpec], shapes: &[InputShape], b: usize) -> Result<Vec<Tensor>, Fail> {
    specs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = match shapes.iter().find(|s| s.name == spec.name) {
                Some(given) => std::iter::once(b).chain(given.row_axes.iter().copied()).collect(),
                None => {
                    if spec.shape.iter().filter(|d| d.is_none()).count() > 1 {
                        return Err(Fail(format!(
                            "input {:?} ({spec}) has symbolic axes besides the batch; give its shape with --input {}=1x...",
                            spec.name, spec.name
                        )));
                    }
                    spec.shape.iter().map(|d| d.unwrap_or(b)).collect()
                }
            };
            let n: usize = shape.iter().product();
            let t = match spec.element_type {
                Some(ElementType::F32) => Tensor::from_shape_vec(&shape, pattern(n, |v| v as f32 / 1000.0)),
                Some(ElementType::F64) => Tensor::from_shape_vec(&shape, pattern(n, |v| v as f64 / 1000.0)),
                Some(ElementType::I64) => Tensor::from_shape_vec(&shape, pattern(n, |v| v as i64)),
                Some(ElementType::I32) => Tensor::from_shape_vec(&shape, pattern(n, |v| v as i32)),
                Some(ElementType::U8) => Tensor::from_shape_vec(&shape, pattern(n, |v| (v % 256) as u8)),
                Some(ElementType::Bool) => Tensor::from_shape_vec(&shape, pattern(n, |v| v % 2 == 0)),
                _ => return Err(Fail(format!(
                    "input {:?}: element type {} is not supported by bench (f32, f64, i64, i32, u8, bool)",
                    spec.name, spec.type_name
                ))),
            };
            Ok(t?)
        })
        .collect()
}

/// One configuration to measure.
#[derive(Debug, Clone, Copy)]
struct Trial {
    backend: Backend,
    streams: Streams,
    /// Rows per call.
    batch: usize,
    /// Most rows one model run takes (`None`: whole parts).
    rows_per_run: Option<usize>,
    /// How long streams and the caller poll before parking.
    spin: Duration,
    /// Whether the measuring thread is pinned to the first stream's first CPU.
    pin_caller: bool,
    /// Measuring time (plus a tenth of it to warm up).
    duration: Duration,
}

/// A measured [`Trial`].
#[derive(Debug, Clone)]
struct Measurement {
    trial: Trial,
    /// The stream count the module chose (resolves `auto`).
    num_streams: usize,
    items_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Loads the model for `trial`, warms it up, then calls it with one batch after another for
/// the trial's duration (at least 3 calls).
fn measure(source: &ModelSource, trial: Trial) -> Result<Measurement, Fail> {
    let loaded = source.load(trial.backend, trial.rows_per_run)?;
    let x = make_inputs(&loaded.inputs, &source.inputs, trial.batch)?;
    let msm = MultiStreamModule::builder(loaded.model)
        .pool(CpuPool::all()?)
        .num_streams(trial.streams)
        .spin(trial.spin)
        .build()?;
    let _pinned = match trial.pin_caller {
        true => Some(CpuPool::new([msm.pools()[0].cpus()[0]])?.pin_current()?),
        false => None,
    };
    let warm = Instant::now();
    while warm.elapsed() < trial.duration / 10 {
        msm.forward_sync(x.clone())?;
    }
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < trial.duration || latencies.len() < 3 {
        let t = Instant::now();
        msm.forward_sync(x.clone())?;
        latencies.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    Ok(Measurement {
        trial,
        num_streams: msm.num_streams(),
        items_per_s: (latencies.len() * trial.batch) as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

fn progress(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

// ===== bench =====

fn bench(args: BenchArgs) -> Result<i32, Fail> {
    let cpus = CpuPool::all()?.len();
    check_streams(&args.streams, cpus)?;
    let backend = args.run.backends(false)?[0];
    let source = ModelSource::new(args.model.clone(), &args.run);
    // Reject a bad model or --input before anything is measured.
    source.load(backend, args.run.max_rows_per_run)?;
    let label = source.label();
    let neighbour = args.run.neighbour()?;
    let bar = progress(args.batch.len() * args.streams.len());
    let mut measured = Vec::new();
    for &streams in &args.streams {
        for &batch in &args.batch {
            bar.set_message(format!("streams {} batch {batch}", streams_label(streams)));
            measured.push(measure(
                &source,
                args.run.trial(backend, streams, batch, args.duration),
            )?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(neighbour);
    print_bench_table(&label, backend, cpus, &args, &measured);
    if let Some(file) = &args.json {
        write_bench_json(file, &label, backend, &args, &measured)?;
    }
    Ok(0)
}

fn print_bench_table(
    label: &str,
    backend: Backend,
    cpus: usize,
    args: &BenchArgs,
    measured: &[Measurement],
) {
    let beside = if args.run.cotenant {
        ", beside one busy thread per CPU (--cotenant)"
    } else {
        ""
    };
    println!(
        "{label} on {cpus} CPUs, backend {}, {:?} per row{beside}",
        Backend::describe(backend),
        args.duration
    );
    println!("| streams | batch | items/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for m in measured {
        println!(
            "| {} ({}) | {} | {:.1} | {:.3} | {:.3} |",
            streams_label(m.trial.streams),
            m.num_streams,
            m.trial.batch,
            m.items_per_s,
            m.p50_ms,
            m.p99_ms
        );
    }
}

fn measurement_json(m: &Measurement) -> Value {
    json!({"backend": m.trial.backend.to_string(), "streams": streams_label(m.trial.streams), "num_streams": m.num_streams, "batch": m.trial.batch,
           "max_rows_per_run": m.trial.rows_per_run, "spin_us": m.trial.spin.as_micros() as u64, "pin_caller": m.trial.pin_caller, "items_per_s": m.items_per_s, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms})
}

/// Writes the `--json` report: the backend, the results and the machine's topology.
fn write_bench_json(
    file: &Path,
    label: &str,
    backend: Backend,
    args: &BenchArgs,
    measured: &[Measurement],
) -> Result<(), Fail> {
    let onnxruntime = match (backend, ort_backend::loaded_library()) {
        (Backend::Ort, Some(lib)) => {
            json!({"version": lib.version(), "path": lib.path().display().to_string()})
        }
        _ => Value::Null,
    };
    let report = json!({
        "corestream": env!("CARGO_PKG_VERSION"),
        "model": label,
        "backend": backend.to_string(),
        "onnxruntime": onnxruntime,
        "duration_s": args.duration.as_secs_f64(),
        "cotenant": args.run.cotenant,
        "topology": topology_json(&Topology::detect()?),
        "results": measured.iter().map(measurement_json).collect::<Vec<_>>(),
    });
    std::fs::write(file, format!("{report:#}\n"))
        .map_err(|e| Fail(format!("cannot write {}: {e}", file.display())))
}

// ===== tune =====

/// The idle spin `tune` tries on its winner instead of corestream's `DEFAULT_SPIN`: park at
/// once (idle streams and the waiting caller cost no CPU).
const TUNE_SPIN: Duration = Duration::ZERO;

/// The batch sizes the grid search tries per stream count, in order.
const TUNE_BATCHES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Grid search on each backend (the `--backend` given, else both when ONNX Runtime is found),
/// then, unless fixed by options, a chunk probe on tract's best and a spin probe on the
/// winner, then the report. Exits 1 when no configuration meets the bound.
fn tune(args: TuneArgs) -> Result<i32, Fail> {
    let bound_ms = args.latency_p99.as_secs_f64() * 1e3;
    let backends = args.run.backends(true)?;
    let source = ModelSource::new(Some(args.model.clone()), &args.run);
    // Reject a bad model or --input before anything is measured.
    for &backend in &backends {
        source.load(backend, args.run.max_rows_per_run)?;
    }
    let cpus = CpuPool::all()?.len();
    let _neighbour = args.run.neighbour()?;
    let mut measured = Vec::new();
    for &backend in &backends {
        measured.extend(grid_search(&source, &args, backend, cpus, bound_ms)?);
    }
    if args.run.max_rows_per_run.is_none() {
        // Runs in chunks are tract's option: probe them on tract's best.
        let tract: Vec<Measurement> = measured
            .iter()
            .filter(|m| m.trial.backend == Backend::Tract)
            .cloned()
            .collect();
        if let Some(best) = fastest_within(&tract, bound_ms) {
            measured.extend(chunk_probe(&source, &best)?);
        }
    }
    if args.run.spin.is_none() {
        if let Some(best) = fastest_within(&measured, bound_ms) {
            measured.push(spin_probe(&source, &best)?);
        }
    }
    Ok(report_tune(&measured, bound_ms, &source))
}

/// Stream counts 1, 2, 4, ... below `cpus`, then `cpus`; for each, batches from
/// [`TUNE_BATCHES`] until the p99 bound is passed or throughput stops growing by 2%.
fn grid_search(
    source: &ModelSource,
    args: &TuneArgs,
    backend: Backend,
    cpus: usize,
    bound_ms: f64,
) -> Result<Vec<Measurement>, Fail> {
    let mut counts: Vec<usize> = (0..)
        .map(|i| 1usize << i)
        .take_while(|&n| n < cpus)
        .chain([cpus])
        .collect();
    counts.dedup();
    let mut measured = Vec::new();
    let bar = progress(counts.len() * TUNE_BATCHES.len());
    for &n in &counts {
        let mut best = 0.0;
        for batch in TUNE_BATCHES {
            bar.set_message(format!("{backend}: streams {n} batch {batch}"));
            let m = measure(
                source,
                args.run
                    .trial(backend, Streams::Count(n), batch, args.duration),
            )?;
            bar.inc(1);
            let (rate, p99) = (m.items_per_s, m.p99_ms);
            measured.push(m);
            // Larger batches only add latency once the bound is passed or throughput stalls.
            if p99 > bound_ms || rate < best * 1.02 {
                break;
            }
            best = rate;
        }
    }
    bar.finish_and_clear();
    Ok(measured)
}

/// The fastest measurement whose p99 is within the bound.
fn fastest_within(measured: &[Measurement], bound_ms: f64) -> Option<Measurement> {
    measured
        .iter()
        .filter(|m| m.p99_ms <= bound_ms)
        .max_by(|a, b| a.items_per_s.total_cmp(&b.items_per_s))
        .cloned()
}

/// The winner's trial again (on its backend and stream count), to vary rows per run or spin.
fn rerun(best: &Measurement) -> Trial {
    Trial {
        streams: Streams::Count(best.num_streams),
        ..best.trial
    }
}

/// Whether the (tract) winner runs faster in chunks: runs of 1, 2, 4, ... rows below its rows
/// per stream.
fn chunk_probe(source: &ModelSource, best: &Measurement) -> Result<Vec<Measurement>, Fail> {
    let rows_per_stream = best.trial.batch.div_ceil(best.num_streams);
    let chunks: Vec<usize> = (0..)
        .map(|i| 1usize << i)
        .take_while(|&r| r < rows_per_stream)
        .collect();
    let bar = progress(chunks.len());
    let mut measured = Vec::with_capacity(chunks.len());
    for rows in chunks {
        bar.set_message(format!("batch {} in runs of {rows} rows", best.trial.batch));
        measured.push(measure(
            source,
            Trial {
                rows_per_run: Some(rows),
                ..rerun(best)
            },
        )?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(measured)
}

/// Whether the winner does as well parking at once: it again with [`TUNE_SPIN`].
fn spin_probe(source: &ModelSource, best: &Measurement) -> Result<Measurement, Fail> {
    measure(
        source,
        Trial {
            spin: TUNE_SPIN,
            ..rerun(best)
        },
    )
}

/// Prints every measurement, then the best within the bound with the builder code that uses
/// it; returns the exit status (1 when none met the bound).
fn report_tune(measured: &[Measurement], bound_ms: f64, source: &ModelSource) -> i32 {
    if let Some(lib) = ort_backend::loaded_library() {
        println!(
            "ort: ONNX Runtime {} ({})",
            lib.version(),
            lib.path().display()
        );
    }
    println!("| backend | streams | batch | rows per run | spin us | items/s | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in measured {
        let rows = m
            .trial
            .rows_per_run
            .map_or("all".to_string(), |r| r.to_string());
        println!(
            "| {} | {} | {} | {rows} | {} | {:.1} | {:.3} |",
            m.trial.backend,
            m.num_streams,
            m.trial.batch,
            m.trial.spin.as_micros(),
            m.items_per_s,
            m.p99_ms
        );
    }
    let Some(best) = fastest_within(measured, bound_ms) else {
        let fastest = measured.iter().min_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        if let Some(m) = fastest {
            println!(
                "no configuration met p99 <= {bound_ms} ms; lowest p99: {} with {} streams, batch {}: {:.3} ms",
                m.trial.backend, m.num_streams, m.trial.batch, m.p99_ms
            );
        }
        return 1;
    };
    print_recommendation(&best, bound_ms, source);
    0
}

/// The best configuration, and the builder code that uses it (for its backend).
fn print_recommendation(best: &Measurement, bound_ms: f64, source: &ModelSource) {
    let label = source.label();
    let chunking = best
        .trial
        .rows_per_run
        .map_or(String::new(), |r| format!(" in runs of {r} rows"));
    let us = best.trial.spin.as_micros();
    let spin = if best.trial.spin == corestream::DEFAULT_SPIN {
        String::new()
    } else if best.trial.spin.is_zero() {
        "\n    .spin(Duration::ZERO) // parks at once when idle".to_string()
    } else {
        format!("\n    .spin(Duration::from_micros({us})) // polls when idle: costs CPU")
    };
    let spin_note = format!(", spin {us} us");
    println!(
        "best within p99 <= {bound_ms} ms: backend {}, streams {} batch {}{chunking}{spin_note}: {:.1} items/s, p99 {:.3} ms",
        best.trial.backend, best.num_streams, best.trial.batch, best.items_per_s, best.p99_ms
    );
    let model = match (best.trial.backend, best.trial.rows_per_run, source.ort_spin) {
        (Backend::Tract, Some(r), _) => {
            format!("OnnxModel::builder({label:?}).max_rows_per_run({r}).build()?")
        }
        (Backend::Tract, None, _) => format!("OnnxModel::load({label:?})?"),
        (Backend::Ort, _, Some(on)) if on != ort_backend::DEFAULT_SPIN => {
            format!("OrtModel::builder({label:?}).spin({on}).build()?")
        }
        (Backend::Ort, _, _) => format!("OrtModel::load({label:?})?"),
    };
    let import = match best.trial.backend {
        Backend::Tract => "use corestream::backend::tract::OnnxModel;",
        Backend::Ort => "use corestream::backend::ort::OrtModel;",
    };
    println!(
        "\n{import}\nlet msm = MultiStreamModule::builder({model})\n    .pool(CpuPool::all()?)\n    .num_streams(Streams::Count({})){spin}\n    .build()?;\n// call msm.forward(..) with batches of {} rows",
        best.num_streams, best.trial.batch
    );
}
