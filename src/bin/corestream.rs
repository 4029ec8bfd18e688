//! `corestream`: inspect the machine, benchmark an ONNX model in throughput mode, and tune its
//! stream count and batch size (feature `cli`).
//!
//! - `corestream topology [--json]`: nodes, physical cores with SMT siblings, allowed CPUs, the
//!   pools corestream would make, and the OpenMP runtime found.
//! - `corestream bench [MODEL.onnx] [--input name=1x3x224x224 ...] [--batch 1,8,16]
//!   [--streams auto,1,2] [--duration 10s] [--json FILE]`: items/s and latency p50/p99 for every
//!   batch x streams combination; without a model it runs the bundled ExampleNet1.
//! - `corestream tune MODEL.onnx [--latency-p99 20ms]`: the stream count and batch size with the
//!   highest throughput within the latency bound, and the builder code that uses it.
//!
//! Bad input (missing file, unparsable shape, unknown input name, more streams than CPUs, ...)
//! prints one `error: ...` line on stderr and exits with status 2.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use corestream::backend::tract::{DatumType, OnnxModel, Tensor};
use corestream::{CpuPool, Error, MultiStreamModule, Streams, Topology};
use serde_json::{json, Value};

const EXAMPLENET1: &[u8] = include_bytes!("../../assets/models/examplenet1.onnx");

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Show nodes, cores, SMT siblings, allowed CPUs, pools and the OpenMP runtime.
    Topology {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure items/s and latency for every batch x streams combination.
    Bench {
        /// The ONNX model (default: the bundled ExampleNet1).
        model: Option<PathBuf>,
        #[command(flatten)]
        inputs: InputArgs,
        /// Batch sizes, comma-separated.
        #[arg(long, default_value = "1,8,16")]
        batch: String,
        /// Stream counts, comma-separated: numbers or `auto` (one per CPU).
        #[arg(long, default_value = "auto,1")]
        streams: String,
        /// Measuring time per combination (e.g. 10s, 500ms).
        #[arg(long, default_value = "10s")]
        duration: String,
        /// Also write the results and the machine's topology as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Find the stream count and batch size with the highest throughput within a p99 bound.
    Tune {
        /// The ONNX model.
        model: PathBuf,
        #[command(flatten)]
        inputs: InputArgs,
        /// Latency bound for one call's p99.
        #[arg(long, default_value = "20ms")]
        latency_p99: String,
        /// Measuring time per trial.
        #[arg(long, default_value = "2s")]
        duration: String,
    },
}

#[derive(Debug, clap::Args)]
struct InputArgs {
    /// An input's shape with its batch as the first axis, e.g. `input=1x3x224x224` (the first
    /// axis is replaced by each batch size). Repeat for several inputs.
    #[arg(long = "input", value_name = "NAME=SHAPE")]
    inputs: Vec<String>,
    /// Run at most this many rows through the model at a time (`OnnxModelBuilder::max_rows_per_run`);
    /// default: whole parts. `tune` searches it when not given.
    #[arg(long, value_name = "ROWS")]
    max_rows_per_run: Option<usize>,
    /// Let each stream (and the waiting caller) poll this long before parking, e.g. `50us`
    /// (`MultiStreamModuleBuilder::spin`); default: park at once.
    #[arg(long, value_name = "DURATION")]
    spin: Option<String>,
}

/// A CLI failure: a message for stderr.
struct Fail(String);

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail(e.to_string())
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Topology { json } => topology(json),
        Command::Bench {
            model,
            inputs,
            batch,
            streams,
            duration,
            json,
        } => bench(
            model.as_deref(),
            &inputs,
            &batch,
            &streams,
            &duration,
            json.as_deref(),
        ),
        Command::Tune {
            model,
            inputs,
            latency_p99,
            duration,
        } => tune(&model, &inputs, &latency_p99, &duration),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(Fail(message)) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    }
}

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

fn parse_duration(text: &str) -> Result<Duration, Fail> {
    humantime::parse_duration(text).map_err(|e| {
        Fail(format!(
            "cannot parse duration {text:?}: {e} (e.g. 10s, 500ms, 2m)"
        ))
    })
}

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

fn parse_streams(text: &str, cpus: usize) -> Result<Vec<(String, Streams)>, Fail> {
    let list = parse_list("streams", text, |s| match s {
        "auto" => Some(("auto".to_string(), Streams::Auto)),
        n => n
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .map(|n| (n.to_string(), Streams::Count(n))),
    })?;
    if let Some((label, _)) = list
        .iter()
        .find(|(_, s)| matches!(s, Streams::Count(n) if *n > cpus))
    {
        return Err(Fail(format!(
            "--streams {label}: more streams than CPUs; this process may use {cpus} CPUs (1 to {cpus} streams)"
        )));
    }
    Ok(list)
}

/// The model with `--input` shapes applied, and per input its fixed per-row shape.
struct Loaded {
    model: OnnxModel,
    label: String,
}

fn load(path: Option<&Path>, inputs: &InputArgs) -> Result<Loaded, Fail> {
    load_with(path, inputs, inputs.max_rows_per_run)
}

fn load_with(
    path: Option<&Path>,
    inputs: &InputArgs,
    max_rows: Option<usize>,
) -> Result<Loaded, Fail> {
    // Reject a bad --spin before anything is measured.
    fixed_spin(inputs)?;
    let builder = || match path {
        Some(p) => OnnxModel::builder(p),
        None => OnnxModel::builder_from_bytes(EXAMPLENET1),
    };
    let label = path.map_or("bundled ExampleNet1".into(), |p| p.display().to_string());
    let plain = builder().build()?;
    let mut b = builder();
    for spec in &inputs.inputs {
        let (name, shape) = spec.split_once('=').ok_or_else(|| {
            Fail(format!(
                "--input {spec:?}: expected NAME=SHAPE, e.g. x=1x64x3x3"
            ))
        })?;
        let index = plain
            .input_names()
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| {
                Fail(format!(
                    "--input {spec:?}: the model has no input {name:?}; its inputs: {}",
                    plain.input_names().join(", ")
                ))
            })?;
        let dims: Vec<&str> = shape.split(['x', ',']).collect();
        if dims.is_empty() || dims.iter().any(|d| d.parse::<usize>().is_err()) {
            return Err(Fail(format!(
                "--input {spec:?}: cannot parse shape {shape:?}; expected numbers joined by x, e.g. 1x3x224x224"
            )));
        }
        let symbolic = std::iter::once("N")
            .chain(dims[1..].iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        b = b.input(index, plain.inputs()[index].datum_type, &symbolic);
    }
    if let Some(rows) = max_rows {
        b = b.max_rows_per_run(rows);
    }
    Ok(Loaded {
        model: b.build()?,
        label,
    })
}

/// Deterministic inputs for a batch of `b` rows.
fn make_inputs(model: &OnnxModel, b: usize) -> Result<Vec<Tensor>, Fail> {
    model
        .inputs()
        .iter()
        .map(|spec| {
            let mut symbolic = 0;
            let shape: Vec<usize> = spec
                .shape
                .iter()
                .map(|d| {
                    d.unwrap_or_else(|| {
                        symbolic += 1;
                        b
                    })
                })
                .collect();
            if symbolic > 1 {
                return Err(Fail(format!(
                    "input {:?} ({spec}) has symbolic axes besides the batch; give its shape with --input {}=1x...",
                    spec.name, spec.name
                )));
            }
            let n: usize = shape.iter().product();
            let t = match spec.datum_type {
                DatumType::F32 => Tensor::from_shape(&shape, &(0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect::<Vec<_>>()),
                DatumType::I64 => Tensor::from_shape(&shape, &(0..n).map(|i| ((i * 7919) % 1000) as i64).collect::<Vec<_>>()),
                DatumType::I32 => Tensor::from_shape(&shape, &(0..n).map(|i| ((i * 7919) % 1000) as i32).collect::<Vec<_>>()),
                other => return Err(Fail(format!("input {:?}: element type {other:?} is not supported by bench (f32, i64, i32)", spec.name))),
            };
            t.map_err(|e| Fail(e.to_string()))
        })
        .collect()
}

/// One measured configuration.
#[derive(Debug, Clone)]
struct Trial {
    streams: String,
    num_streams: usize,
    batch: usize,
    max_rows: Option<usize>,
    spin: Duration,
    items_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn measure(
    path: Option<&Path>,
    inputs: &InputArgs,
    streams: &(String, Streams),
    batch: usize,
    duration: Duration,
) -> Result<Trial, Fail> {
    let spin = fixed_spin(inputs)?.unwrap_or(Duration::ZERO);
    measure_with(
        path,
        inputs,
        streams,
        batch,
        inputs.max_rows_per_run,
        spin,
        duration,
    )
}

/// The `--spin` value, if given.
fn fixed_spin(inputs: &InputArgs) -> Result<Option<Duration>, Fail> {
    inputs.spin.as_deref().map(parse_duration).transpose()
}

fn measure_with(
    path: Option<&Path>,
    inputs: &InputArgs,
    streams: &(String, Streams),
    batch: usize,
    max_rows: Option<usize>,
    spin: Duration,
    duration: Duration,
) -> Result<Trial, Fail> {
    let loaded = load_with(path, inputs, max_rows)?;
    let x = make_inputs(&loaded.model, batch)?;
    let msm = MultiStreamModule::builder(loaded.model)
        .pool(CpuPool::all()?)
        .num_streams(streams.1)
        .spin(spin)
        .build()?;
    let warm = Instant::now();
    while warm.elapsed() < duration / 10 {
        msm.forward_sync(x.clone())?;
    }
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration || latencies.len() < 3 {
        let t = Instant::now();
        msm.forward_sync(x.clone())?;
        latencies.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct =
        |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    Ok(Trial {
        streams: streams.0.clone(),
        num_streams: msm.num_streams(),
        batch,
        max_rows,
        spin,
        items_per_s: (latencies.len() * batch) as f64 / secs,
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

fn trial_json(t: &Trial) -> Value {
    json!({"streams": t.streams, "num_streams": t.num_streams, "batch": t.batch,
           "max_rows_per_run": t.max_rows, "spin_us": t.spin.as_micros() as u64, "items_per_s": t.items_per_s, "p50_ms": t.p50_ms, "p99_ms": t.p99_ms})
}

fn bench(
    path: Option<&Path>,
    inputs: &InputArgs,
    batch: &str,
    streams: &str,
    duration: &str,
    json_out: Option<&Path>,
) -> Result<i32, Fail> {
    let batches = parse_batches(batch)?;
    let cpus = CpuPool::all()?.len();
    let streams = parse_streams(streams, cpus)?;
    let duration = parse_duration(duration)?;
    let label = load(path, inputs)?.label;
    let bar = progress(batches.len() * streams.len());
    let mut trials = Vec::new();
    for s in &streams {
        for &b in &batches {
            bar.set_message(format!("streams {} batch {b}", s.0));
            trials.push(measure(path, inputs, s, b, duration)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    println!("{label} on {cpus} CPUs, {:?} per row", duration);
    println!("| streams | batch | items/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for t in &trials {
        println!(
            "| {} ({}) | {} | {:.1} | {:.3} | {:.3} |",
            t.streams, t.num_streams, t.batch, t.items_per_s, t.p50_ms, t.p99_ms
        );
    }
    if let Some(file) = json_out {
        let report = json!({
            "corestream": env!("CARGO_PKG_VERSION"),
            "model": label,
            "duration_s": duration.as_secs_f64(),
            "topology": topology_json(&Topology::detect()?),
            "results": trials.iter().map(trial_json).collect::<Vec<_>>(),
        });
        std::fs::write(file, format!("{report:#}\n"))
            .map_err(|e| Fail(format!("cannot write {}: {e}", file.display())))?;
    }
    Ok(0)
}

/// The idle spin `tune` tries on its winner (streams and the waiting caller poll this long).
const TUNE_SPIN: Duration = Duration::from_micros(50);

fn tune(path: &Path, inputs: &InputArgs, bound: &str, duration: &str) -> Result<i32, Fail> {
    let bound_ms = parse_duration(bound)?.as_secs_f64() * 1e3;
    let duration = parse_duration(duration)?;
    let label = load(Some(path), inputs)?.label;
    let cpus = CpuPool::all()?.len();
    let mut counts: Vec<usize> = (0..)
        .map(|i| 1usize << i)
        .take_while(|&n| n < cpus)
        .chain([cpus])
        .collect();
    counts.dedup();
    let mut trials = Vec::new();
    let bar = progress(counts.len() * 7);
    for &n in &counts {
        let mut best = 0.0;
        for b in [1, 2, 4, 8, 16, 32, 64] {
            bar.set_message(format!("streams {n} batch {b}"));
            let t = measure(
                Some(path),
                inputs,
                &(n.to_string(), Streams::Count(n)),
                b,
                duration,
            )?;
            bar.inc(1);
            let (rate, p99) = (t.items_per_s, t.p99_ms);
            trials.push(t);
            // Larger batches only add latency once the bound is passed or throughput stalls.
            if p99 > bound_ms || rate < best * 1.02 {
                break;
            }
            best = rate;
        }
    }
    bar.finish_and_clear();
    let fastest_within = |trials: &[Trial]| {
        trials
            .iter()
            .filter(|t| t.p99_ms <= bound_ms)
            .max_by(|a, b| a.items_per_s.total_cmp(&b.items_per_s))
            .cloned()
    };
    // The winner again, with other rows per run or spin.
    let variant = |best: &Trial, max_rows: Option<usize>, spin: Duration| {
        let streams = (
            best.num_streams.to_string(),
            Streams::Count(best.num_streams),
        );
        measure_with(
            Some(path),
            inputs,
            &streams,
            best.batch,
            max_rows,
            spin,
            duration,
        )
    };
    // Then, unless --max-rows-per-run fixed it: whether the winner runs faster in chunks.
    if let (None, Some(best)) = (inputs.max_rows_per_run, fastest_within(&trials)) {
        let rows_per_stream = best.batch.div_ceil(best.num_streams);
        let chunks: Vec<usize> = (0..)
            .map(|i| 1usize << i)
            .take_while(|&r| r < rows_per_stream)
            .collect();
        let bar = progress(chunks.len());
        for r in chunks {
            bar.set_message(format!("batch {} in runs of {r} rows", best.batch));
            trials.push(variant(&best, Some(r), best.spin)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    // Last, unless --spin fixed it: whether the winner gains from spinning streams.
    if let (None, Some(best)) = (&inputs.spin, fastest_within(&trials)) {
        trials.push(variant(&best, best.max_rows, TUNE_SPIN)?);
    }
    println!("| streams | batch | rows per run | spin us | items/s | p99 ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for t in &trials {
        let rows = t.max_rows.map_or("all".to_string(), |r| r.to_string());
        println!(
            "| {} | {} | {rows} | {} | {:.1} | {:.3} |",
            t.num_streams,
            t.batch,
            t.spin.as_micros(),
            t.items_per_s,
            t.p99_ms
        );
    }
    let Some(best) = fastest_within(&trials) else {
        let fastest = trials.iter().min_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
        if let Some(t) = fastest {
            println!(
                "no configuration met p99 <= {bound_ms} ms; lowest p99: {} streams, batch {}: {:.3} ms",
                t.num_streams, t.batch, t.p99_ms
            );
        }
        return Ok(1);
    };
    let chunking = best
        .max_rows
        .map_or(String::new(), |r| format!(" in runs of {r} rows"));
    let (spin, spin_note) = if best.spin.is_zero() {
        (String::new(), String::new())
    } else {
        let us = best.spin.as_micros();
        (
            format!("\n    .spin(Duration::from_micros({us})) // polls when idle: costs CPU"),
            format!(", spin {us} us"),
        )
    };
    println!(
        "best within p99 <= {bound_ms} ms: streams {} batch {}{chunking}{spin_note}: {:.1} items/s, p99 {:.3} ms",
        best.num_streams, best.batch, best.items_per_s, best.p99_ms
    );
    let model = match best.max_rows {
        Some(r) => format!("OnnxModel::builder({label:?}).max_rows_per_run({r}).build()?"),
        None => format!("OnnxModel::load({label:?})?"),
    };
    println!(
        "\nlet msm = MultiStreamModule::builder({model})\n    .pool(CpuPool::all()?)\n    .num_streams(Streams::Count({})){spin}\n    .build()?;\n// call msm.forward(..) with batches of {} rows",
        best.num_streams, best.batch
    );
    Ok(0)
}
