//! `corestream tune MODEL.onnx [--latency-p99 20ms]`: a grid search over stream counts and batch
//! sizes on each backend, then probes of tract's runs in chunks and of parking at once, and the
//! best configuration within the p99 bound with the builder code that uses it. Every trial
//! and the winner show their FLOP efficiency (see [`efficiency`](crate::efficiency)).

use std::path::PathBuf;
use std::time::Duration;

use corestream::backend::ort as ort_backend;
use corestream::backend::Backend;
use corestream::{CpuPool, Streams};

use crate::args::{parse_duration, RunArgs};
use crate::efficiency::Efficiency;
use crate::measure::{measure, progress, Measurement, Trial};
use crate::model::ModelSource;
use crate::Fail;

/// The arguments of `tune` (clap shows the `Command::Tune` doc as its help).
#[derive(Debug, clap::Args)]
pub struct TuneArgs {
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

/// The idle spin `tune` tries on its winner instead of corestream's `DEFAULT_SPIN`: park at
/// once (idle streams and the waiting caller cost no CPU).
const TUNE_SPIN: Duration = Duration::ZERO;

/// The batch sizes the grid search tries per stream count, in order.
const TUNE_BATCHES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Grid search on each backend (the `--backend` given, else both when ONNX Runtime is found),
/// then, unless fixed by options, a chunk probe on tract's best and a spin probe on the
/// winner, then the report. Exits 1 when no configuration meets the bound.
pub fn run(args: TuneArgs) -> Result<i32, Fail> {
    let bound_ms = args.latency_p99.as_secs_f64() * 1e3;
    let backends = args.run.backends(true)?;
    // A model directory: the file `corestream serve` would serve on the first backend tried.
    let (source, choice) =
        ModelSource::new(Some(args.model.clone()), &args.run).resolve(backends[0])?;
    if let Some(reason) = &choice {
        eprintln!("model: {} ({reason})", source.label());
    }
    // Reject a bad model or --input before anything is measured.
    let mut specs = Vec::new();
    for &backend in &backends {
        specs = source.load(backend, args.run.max_rows_per_run)?.inputs;
    }
    let efficiency = Efficiency::new(&source, &specs, &TUNE_BATCHES);
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
    Ok(report(&measured, bound_ms, &source, &efficiency))
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
                Trial::new(&args.run, backend, Streams::Count(n), batch, args.duration),
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

/// Prints every measurement with its FLOP efficiency, then the best within the bound with its
/// efficiency and the builder code that uses it; returns the exit status (1 when none met the
/// bound).
fn report(
    measured: &[Measurement],
    bound_ms: f64,
    source: &ModelSource,
    efficiency: &Efficiency,
) -> i32 {
    if let Some(lib) = ort_backend::loaded_library() {
        println!(
            "ort: ONNX Runtime {} ({})",
            lib.version(),
            lib.path().display()
        );
    }
    for line in efficiency.header(measured) {
        println!("{line}");
    }
    println!(
        "| backend | streams | batch | rows per run | spin us | items/s | p99 ms | GFLOP/s | % peak |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in measured {
        let rows = m
            .trial
            .rows_per_run
            .map_or("all".to_string(), |r| r.to_string());
        println!(
            "| {} | {} | {} | {rows} | {} | {:.1} | {:.3} |{}",
            m.trial.backend,
            m.num_streams,
            m.trial.batch,
            m.trial.spin.as_micros(),
            m.items_per_s,
            m.p99_ms,
            efficiency.cells(m)
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
    print_recommendation(&best, bound_ms, source, efficiency);
    0
}

/// The best configuration, its FLOP efficiency, and the builder code that uses it (for its
/// backend).
fn print_recommendation(
    best: &Measurement,
    bound_ms: f64,
    source: &ModelSource,
    efficiency: &Efficiency,
) {
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
    print_efficiency(best, efficiency);
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

/// The winner's FLOP efficiency, on its own line.
fn print_efficiency(best: &Measurement, efficiency: &Efficiency) {
    match (efficiency.gflops(best), efficiency.peak_fraction(best)) {
        (Some(g), Some(f)) => println!(
            "efficiency: {g:.2} GFLOP/s, {:.1}% of the FP32 peak: {}",
            f * 100.0,
            efficiency.derivation(best)
        ),
        (Some(g), None) => println!(
            "efficiency: {g:.2} GFLOP/s; {}",
            efficiency.derivation(best)
        ),
        _ => println!("efficiency: unknown (the model's FLOPs were not counted)"),
    }
}
