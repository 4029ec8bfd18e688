//! `corestream bench [MODEL.onnx] [--batch 1,8,16] [--streams auto,1] [--duration 10s] [--json
//! FILE]`: items/s, latency p50/p99 and FLOP efficiency (achieved GFLOP/s and its fraction of
//! the FP32 peak of the cores used, see [`efficiency`](crate::efficiency)) for every batch x
//! streams combination, as a markdown table and optionally a JSON report with the machine's
//! topology.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corestream::backend::ort as ort_backend;
use corestream::backend::Backend;
use corestream::{CpuPool, Streams, Topology};
use serde_json::{json, Value};

use crate::args::{check_streams, parse_batches, parse_duration, parse_streams, RunArgs};
use crate::efficiency::Efficiency;
use crate::measure::{measure, progress, Measurement, Trial};
use crate::model::ModelSource;
use crate::{topology, Fail};

/// The arguments of `bench` (clap shows the `Command::Bench` doc as its help).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
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

/// `corestream bench`: every batch x streams combination, measured one after the other, as a
/// table on stdout (and JSON with `--json`).
pub fn run(args: BenchArgs) -> Result<i32, Fail> {
    let cpus = CpuPool::all()?.len();
    check_streams(&args.streams, cpus)?;
    let backend = args.run.backends(false)?[0];
    let (source, choice) = ModelSource::new(args.model.clone(), &args.run).resolve(backend)?;
    if let Some(reason) = &choice {
        eprintln!("model: {} ({reason})", source.label());
    }
    // Reject a bad model or --input before anything is measured.
    let loaded = source.load(backend, args.run.max_rows_per_run)?;
    let efficiency = Efficiency::new(&source, &loaded.inputs, &args.batch);
    drop(loaded);
    let label = source.label();
    let neighbour = args.run.neighbour()?;
    let bar = progress(args.batch.len() * args.streams.len());
    let mut measured = Vec::new();
    for &streams in &args.streams {
        for &batch in &args.batch {
            bar.set_message(format!("streams {streams} batch {batch}"));
            measured.push(measure(
                &source,
                Trial::new(&args.run, backend, streams, batch, args.duration),
            )?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(neighbour);
    print_table(&label, backend, cpus, &args, &measured, &efficiency);
    if let Some(file) = &args.json {
        write_json(file, &label, backend, &args, &measured, &efficiency)?;
    }
    Ok(0)
}

/// The markdown table on stdout: one row per combination, after a line naming the model,
/// CPUs, backend and duration, and the lines giving the FLOPs per item and the peak.
fn print_table(
    label: &str,
    backend: Backend,
    cpus: usize,
    args: &BenchArgs,
    measured: &[Measurement],
    efficiency: &Efficiency,
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
    for line in efficiency.header(measured) {
        println!("{line}");
    }
    println!("| streams | batch | items/s | p50 ms | p99 ms | GFLOP/s | % peak |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for m in measured {
        println!(
            "| {} ({}) | {} | {:.1} | {:.3} | {:.3} |{}",
            m.trial.streams,
            m.num_streams,
            m.trial.batch,
            m.items_per_s,
            m.p50_ms,
            m.p99_ms,
            efficiency.cells(m)
        );
    }
}

/// One row of the `--json` report's `results`, with its FLOP efficiency.
fn measurement_json(m: &Measurement, efficiency: &Efficiency) -> Value {
    let mut row = json!({"backend": m.trial.backend.to_string(), "streams": m.trial.streams.to_string(), "num_streams": m.num_streams, "batch": m.trial.batch,
           "max_rows_per_run": m.trial.rows_per_run, "spin_us": m.trial.spin.as_micros() as u64, "pin_caller": m.trial.pin_caller, "items_per_s": m.items_per_s, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms});
    if let (Value::Object(row), Value::Object(more)) = (&mut row, efficiency.row_json(m)) {
        row.extend(more);
    }
    row
}

/// Writes the `--json` report: the backend, the model's FLOPs, the machine's peak, the results
/// and the machine's topology.
fn write_json(
    file: &Path,
    label: &str,
    backend: Backend,
    args: &BenchArgs,
    measured: &[Measurement],
    efficiency: &Efficiency,
) -> Result<(), Fail> {
    let (flops, peak) = efficiency.json();
    let onnxruntime = match (backend, ort_backend::loaded_library()) {
        (Backend::Ort, Some(lib)) => {
            json!({"version": lib.version(), "path": lib.path().display().to_string()})
        }
        _ => Value::Null,
    };
    let report = json!({
        // corestream-cli is versioned with the corestream library.
        "corestream": env!("CARGO_PKG_VERSION"),
        "model": label,
        "backend": backend.to_string(),
        "onnxruntime": onnxruntime,
        "duration_s": args.duration.as_secs_f64(),
        "cotenant": args.run.cotenant,
        "flops": flops,
        "peak": peak,
        "topology": topology::json(&Topology::detect()?),
        "results": measured.iter().map(|m| measurement_json(m, efficiency)).collect::<Vec<_>>(),
    });
    std::fs::write(file, format!("{report:#}\n"))
        .map_err(|e| Fail(format!("cannot write {}: {e}", file.display())))
}
