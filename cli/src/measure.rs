//! One measurement: a [`Trial`] (backend, streams, batch, rows per run, spin, duration) run by
//! [`measure`] on a freshly built module, giving a [`Measurement`] (items/s, p50, p99, the CPUs
//! it ran on); and the progress bar `bench` and `tune` show while they measure.

use std::time::{Duration, Instant};

use corestream::backend::Backend;
use corestream::{CpuPool, MultiStreamModule, Streams};

use crate::args::RunArgs;
use crate::model::{make_inputs, ModelSource};
use crate::Fail;

/// One configuration to measure.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    pub backend: Backend,
    pub streams: Streams,
    /// Rows per call.
    pub batch: usize,
    /// Most rows one model run takes (`None`: whole parts).
    pub rows_per_run: Option<usize>,
    /// How long streams and the caller poll before parking.
    pub spin: Duration,
    /// Whether the measuring thread is pinned to the first stream's first CPU.
    pub pin_caller: bool,
    /// Measuring time (plus a tenth of it to warm up).
    pub duration: Duration,
}

impl Trial {
    /// The trial of `batch` rows on `streams` with `backend` and the fixed
    /// `--max-rows-per-run`, `--spin` and `--pin-caller` of `args`.
    pub fn new(
        args: &RunArgs,
        backend: Backend,
        streams: Streams,
        batch: usize,
        duration: Duration,
    ) -> Trial {
        Trial {
            backend,
            streams,
            batch,
            rows_per_run: args.max_rows_per_run,
            spin: args.spin.unwrap_or(corestream::DEFAULT_SPIN),
            pin_caller: args.pin_caller,
            duration,
        }
    }
}

/// A measured [`Trial`].
#[derive(Debug, Clone)]
pub struct Measurement {
    pub trial: Trial,
    /// The stream count the module chose (resolves `auto`).
    pub num_streams: usize,
    /// The CPUs its streams ran on, all streams together (what its FP32 peak counts).
    pub cpus: Vec<usize>,
    pub items_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Loads the model for `trial`, warms it up, then calls it with one batch after another for
/// the trial's duration (at least 3 calls).
pub fn measure(source: &ModelSource, trial: Trial) -> Result<Measurement, Fail> {
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
        cpus: msm.pools().iter().flat_map(|p| p.cpus().to_vec()).collect(),
        items_per_s: (latencies.len() * trial.batch) as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

pub fn progress(total: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
