//! `corestream`: inspect the machine, benchmark an ONNX model in throughput mode, tune its
//! stream count and batch size, and serve a model over HTTP.
//!
//! - `corestream topology [--json]`: nodes, physical cores with SMT siblings, allowed CPUs, the
//!   pools corestream would make, and the OpenMP runtime found ([`topology`](mod@topology)).
//! - `corestream bench [MODEL.onnx] [--backend ort|tract] [--input name=1x3x224x224 ...]
//!   [--batch 1,8,16] [--streams auto,1,2] [--duration 10s] [--json FILE]`: items/s, latency
//!   p50/p99 and FLOP efficiency (GFLOP/s and % of the FP32 peak) for every batch x streams
//!   combination; without a model it runs the bundled ExampleNet1 ([`bench`](mod@bench)).
//! - `corestream tune MODEL.onnx [--backend ort|tract] [--latency-p99 20ms]`: the backend,
//!   stream count and batch size with the highest throughput within the latency bound, and the
//!   builder code that uses it ([`tune`](mod@tune)).
//! - `corestream serve ...`: the embedding service of the `corestream-serve` crate ([`serve`](mod@serve)).
//! - `corestream check-quantized DIR [--json]`: the accuracy gate of `serve` for every quantized
//!   ONNX file of a model directory against its FP32 file, with rows/s of each and the file
//!   `serve` would choose on this CPU ([`check_quantized`]); exit status 1 when a file fails.
//!
//! The backend: `--backend ort` (ONNX Runtime, `corestream::backend::ort`) or `--backend tract`
//! (`corestream::backend::tract`). Without `--backend`, a backend-specific option picks its
//! backend (`--max-rows-per-run`: tract, `--ort-spin`: ort); otherwise the default is `ort` when
//! the ONNX Runtime library is found (`ORT_DYLIB_PATH`, then `target/onnxruntime/` filled by
//! `bash scripts/fetch-onnxruntime.sh`, above the executable or in the current folder), else
//! `tract`, with one `note:` line on stderr saying how to fetch ONNX Runtime. `tune` without
//! `--backend` searches both backends when ONNX
//! Runtime is found. A backend-specific option with the other backend is an error.
//!
//! Bad input (missing file, unparsable shape, unknown input name, more streams than CPUs, ...)
//! prints one `error: ...` line on stderr and exits with status 2. `tune` exits with status 1
//! when no configuration meets the bound; `serve` with status 1 when the service fails.
//!
//! The flow: [`main`] parses the command line once into typed values ([`Cli`]; the value
//! parsers are in [`args`]); every value that does not parse is reported there. A command then
//! names its model as a [`ModelSource`](model::ModelSource), whose
//! [`load`](model::ModelSource::load) is the one place that builds a model (on either backend,
//! as one [`SharedModel`](model::SharedModel)), and measures [`Trial`](measure::Trial)s with
//! [`measure`](measure::measure), each giving a [`Measurement`](measure::Measurement). Both
//! report each measurement's FLOP efficiency through [`Efficiency`](efficiency::Efficiency):
//! the model's FLOPs counted from its ONNX graph ([`flops`]) against the FP32 peak of the
//! cores used ([`peak`]).

mod args;
mod bench;
mod check_quantized;
mod efficiency;
mod flops;
mod measure;
mod model;
mod peak;
mod serve;
mod topology;
mod tune;

use std::error::Error as StdError;
use std::fmt;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

/// The command line, parsed once in [`main`].
#[derive(Debug, Parser)]
#[command(
    name = "corestream",
    version,
    about = "Throughput-mode CPU inference: topology, bench, tune, serve"
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
    /// Measure items/s, latency and FLOP efficiency (GFLOP/s, % of the FP32 peak) for every
    /// batch x streams combination.
    Bench(bench::BenchArgs),
    /// Find the stream count and batch size with the highest throughput within a p99 bound
    /// (each with its FLOP efficiency).
    Tune(tune::TuneArgs),
    /// Serve an embedding model over HTTP (OpenAI /v1/embeddings, text-embeddings-inference
    /// /embed and /info, /health, /metrics) from a Hugging Face model directory, on pinned
    /// streams. Every flag also reads an environment variable.
    Serve(Box<corestream_serve::Args>),
    /// Compare every quantized ONNX file of a model directory with its FP32 file on fixed
    /// probe inputs (the accuracy gate `serve` runs before serving one): mean and worst
    /// cosine (embedders), rank agreement (rerankers), label agreement (classifiers), pass or
    /// fail, rows/s at batch 1 and 16, and the file `serve` chooses on this CPU. Exit status
    /// 0 when all pass, 1 when one fails, 2 on bad input.
    CheckQuantized(check_quantized::CheckArgs),
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

impl From<corestream::Error> for Fail {
    fn from(e: corestream::Error) -> Fail {
        Fail(e.to_string())
    }
}

fn main() {
    let cli = parse_cli();
    let result = match cli.command {
        Command::Topology { json } => topology::run(json),
        Command::Bench(args) => bench::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Serve(args) => Ok(serve::run(*args)),
        Command::CheckQuantized(args) => check_quantized::run(args),
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
