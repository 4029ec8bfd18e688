//! FLOP efficiency, as `bench` and `tune` report it: the model's FLOPs per item for each batch
//! size ([`flops`](crate::flops), from the ONNX graph and the input shapes the trials feed), the
//! achieved GFLOP/s of a [`Measurement`] (items/s x FLOPs per item), and its fraction of the FP32
//! peak ([`peak`](crate::peak)) of the physical cores its streams ran on.
//!
//! Neither the count nor the peak stops a command: when one is not known, the reports say
//! why and leave the columns empty (`-` in tables, `null` in JSON).

use std::collections::{BTreeMap, BTreeSet};

use corestream::backend::InputSpec;
use corestream::Topology;
use serde_json::{json, Value};

use crate::flops::FlopCount;
use crate::measure::Measurement;
use crate::model::{input_shapes, ModelSource};
use crate::peak::CpuPeak;

/// The FLOP counts of a model for some batch sizes, and the machine's peak.
pub struct Efficiency {
    /// The count for one run of each batch size; `Err`: why there is none.
    counts: Result<BTreeMap<usize, FlopCount>, String>,
    peak: Result<CpuPeak, String>,
    topology: Option<Topology>,
}

impl Efficiency {
    /// Counts the FLOPs of `source` (whose inputs are `specs`) for each of `batches`, and reads
    /// the machine's peak.
    pub fn new(source: &ModelSource, specs: &[InputSpec], batches: &[usize]) -> Efficiency {
        let counts = source.graph().and_then(|graph| {
            batches
                .iter()
                .map(|&b| {
                    let shapes = input_shapes(specs, &source.inputs, b).map_err(|f| f.0)?;
                    let named: Vec<(String, Vec<usize>)> =
                        specs.iter().map(|s| s.name.clone()).zip(shapes).collect();
                    Ok((b, graph.count(&named)))
                })
                .collect()
        });
        Efficiency {
            counts,
            peak: CpuPeak::detect(),
            topology: Topology::detect().ok(),
        }
    }

    /// FLOPs per item at batch size `batch`.
    pub fn flops_per_item(&self, batch: usize) -> Option<f64> {
        let count = self.counts.as_ref().ok()?.get(&batch)?;
        Some(count.flops as f64 / batch as f64)
    }

    /// The physical cores `m`'s CPUs are on (SMT siblings share a core's FMA units), at most
    /// the CPUs a CPU quota pays for.
    pub fn cores(&self, m: &Measurement) -> f64 {
        let Some(topo) = &self.topology else {
            return m.cpus.len() as f64;
        };
        let cores: BTreeSet<(usize, usize)> = m
            .cpus
            .iter()
            .map(|&id| {
                topo.cpu(id)
                    .map_or((usize::MAX, id), |c| (c.package, c.core))
            })
            .collect();
        let quota = topo.cpu_quota().map_or(f64::INFINITY, |q| q.cpus());
        (cores.len() as f64).min(quota)
    }

    /// `m`'s achieved GFLOP/s.
    pub fn gflops(&self, m: &Measurement) -> Option<f64> {
        Some(m.items_per_s * self.flops_per_item(m.trial.batch)? / 1e9)
    }

    /// The FP32 peak of `m`'s cores, GFLOP/s.
    pub fn peak_gflops(&self, m: &Measurement) -> Option<f64> {
        Some(self.peak.as_ref().ok()?.gflops(self.cores(m)))
    }

    /// `m`'s GFLOP/s as a fraction of its cores' peak.
    pub fn peak_fraction(&self, m: &Measurement) -> Option<f64> {
        Some(self.gflops(m)? / self.peak_gflops(m)?)
    }

    /// The table cells `GFLOP/s | % peak |` of `m` (`-` where unknown), without the leading `|`.
    pub fn cells(&self, m: &Measurement) -> String {
        let gflops = self.gflops(m).map_or("-".into(), |g| format!("{g:.2}"));
        let fraction = self
            .peak_fraction(m)
            .map_or("-".into(), |f| format!("{:.1}%", f * 100.0));
        format!(" {gflops} | {fraction} |")
    }

    /// How the peak of `m`'s cores is derived, on one line.
    pub fn derivation(&self, m: &Measurement) -> String {
        match &self.peak {
            Ok(peak) => {
                let cores = self.cores(m);
                let on = if cores < m.cpus.len() as f64 {
                    "; SMT siblings share a core, a CPU quota caps the cores"
                } else {
                    ""
                };
                format!("{} (CPUs {:?}{on})", peak.derivation(cores), m.cpus)
            }
            Err(e) => format!("FP32 peak unknown: {e}"),
        }
    }

    /// The lines printed above a table: the FLOPs per item, and the peak of each distinct
    /// set of cores measured.
    pub fn header(&self, measured: &[Measurement]) -> Vec<String> {
        let mut lines = vec![match &self.counts {
            Ok(counts) => match counts.iter().next() {
                Some((&b, count)) => format!("FLOPs: {}", count.summary(b)),
                None => "FLOPs: no batch size counted".into(),
            },
            Err(e) => format!("FLOPs: not counted: {e}"),
        }];
        let mut seen = BTreeSet::new();
        for m in measured {
            let derivation = self.derivation(m);
            if seen.insert(derivation.clone()) {
                lines.push(format!("peak: {derivation}"));
            }
        }
        lines
    }

    /// The fields a `--json` result row gains.
    pub fn row_json(&self, m: &Measurement) -> Value {
        json!({
            "cpus": m.cpus,
            "cores": self.cores(m),
            "flops_per_item": self.flops_per_item(m.trial.batch),
            "gflops": self.gflops(m),
            "peak_gflops": self.peak_gflops(m),
            "peak_fraction": self.peak_fraction(m),
            "peak_derivation": self.derivation(m),
        })
    }

    /// The report's `flops` and `peak` objects.
    pub fn json(&self) -> (Value, Value) {
        let flops = match &self.counts {
            Ok(counts) => {
                let per_item: BTreeMap<String, f64> = counts
                    .iter()
                    .map(|(&b, c)| (b.to_string(), c.flops as f64 / b as f64))
                    .collect();
                // Which nodes were counted does not depend on the batch: report the first.
                let first = counts.values().next().cloned().unwrap_or_default();
                json!({
                    "per_item": per_item,
                    "counted_nodes": first.counted,
                    "uncounted_nodes": first.uncounted,
                    "uncounted_after_ops": first.stuck,
                    "by_op_per_run_of_first_batch": first.by_op,
                    "definition": "2 x multiply-adds of MatMul, Gemm, Conv, ConvTranspose, Einsum and fused attention nodes",
                })
            }
            Err(e) => json!({"error": e}),
        };
        let peak = match &self.peak {
            Ok(p) => json!({
                "isa": p.isa,
                "f32_lanes": p.lanes,
                "fma_per_cycle": p.fma_units,
                "fma_note": p.units_note,
                "ghz": p.ghz,
                "clock_source": p.clock_source,
                "core_gflops": p.core_gflops(),
                "formula": "physical cores x f32 lanes x 2 (FMA) x FMA per cycle x GHz",
            }),
            Err(e) => json!({"error": e}),
        };
        (flops, peak)
    }
}
