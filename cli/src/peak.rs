//! The machine's FP32 peak, from what the OS reports: the vector width and FMA units per core
//! from the CPU flags of `/proc/cpuinfo` (with its vendor, family and model), the clock from
//! `/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq`, else the `cpu MHz` of
//! `/proc/cpuinfo`. Peak GFLOP/s = physical cores x f32 lanes x 2 (an FMA is two FLOPs) x FMA
//! units per core x GHz. [`CpuPeak::parse`] reads the texts, so it is tested on fake ones.
//!
//! Virtual machines often have no cpufreq and report their nominal clock as `cpu MHz`, below
//! the clock the cores boost to; a peak from it can be beaten (ResNet-18 on ONNX Runtime ran at
//! 117% of it on a Zen 4 VM). So [`CpuPeak::detect`] also measures the clock of the core it
//! runs on ([`measure_ghz`]: a chain of dependent register adds, one cycle each) and uses
//! that when it is higher, saying so. A one-core boost clock may exceed the all-core one: the
//! peak is then an upper bound, and the fraction of it a lower bound.
//!
//! The FMA units per core are not in any file the OS offers; they are assumed from the
//! instruction set and CPU family, and [`CpuPeak::derivation`] says what was assumed.

use std::fs;

/// One core's FP32 throughput and how it was derived.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuPeak {
    /// The widest f32 FMA (or multiply and add) the flags show: `avx512f`, `avx2+fma`, ...
    pub isa: String,
    /// f32 lanes of that instruction: 16 (AVX-512), 8 (AVX, AVX2), 4 (SSE, NEON).
    pub lanes: u32,
    /// Vector FMA instructions of that width one core starts per cycle.
    pub fma_units: u32,
    /// Why [`fma_units`](Self::fma_units) is what it is.
    pub units_note: String,
    /// The clock, GHz.
    pub ghz: f64,
    /// Where the clock was read.
    pub clock_source: String,
}

impl CpuPeak {
    /// Reads the live machine: `/proc/cpuinfo` and cpu0's `cpuinfo_max_freq` (kHz), then
    /// raises the clock to the measured one when that is higher ([`with_measured_clock`](Self::with_measured_clock)).
    pub fn detect() -> Result<CpuPeak, String> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo")
            .map_err(|e| format!("cannot read /proc/cpuinfo: {e}"))?;
        let max_freq =
            fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").ok();
        let peak = CpuPeak::parse(&cpuinfo, max_freq.as_deref())?;
        Ok(match measure_ghz() {
            Some(ghz) => peak.with_measured_clock(ghz),
            None => peak,
        })
    }

    /// This peak at the measured clock `ghz` when it is over 2% above the reported one (which
    /// the derivation then names too); else unchanged.
    pub fn with_measured_clock(self, ghz: f64) -> CpuPeak {
        if ghz <= self.ghz * 1.02 {
            return self;
        }
        CpuPeak {
            clock_source: format!(
                "measured by dependent adds on one core, above the {:.3} GHz of {}",
                self.ghz, self.clock_source
            ),
            ghz,
            ..self
        }
    }

    /// The peak from the text of `/proc/cpuinfo` and of `cpuinfo_max_freq` (kHz), if present.
    pub fn parse(cpuinfo: &str, max_freq_khz: Option<&str>) -> Result<CpuPeak, String> {
        let field = |name: &str| {
            cpuinfo.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == name).then(|| value.trim())
            })
        };
        // x86 lists `flags`, arm64 `Features`.
        let flags: Vec<&str> = field("flags")
            .or_else(|| field("Features"))
            .ok_or("/proc/cpuinfo lists no CPU flags")?
            .split_whitespace()
            .collect();
        let has = |f: &str| flags.contains(&f);
        let vendor = field("vendor_id").unwrap_or("");
        let family: u32 = field("cpu family")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let model: u32 = field("model").and_then(|v| v.parse().ok()).unwrap_or(0);
        let amd = vendor == "AuthenticAMD";
        let (isa, lanes, fma_units, units_note) = if has("avx512f") {
            if amd && family == 0x19 {
                (
                    "avx512f",
                    16,
                    1,
                    "Zen 4 (AMD family 25) runs a 512-bit FMA on its two 256-bit FMA pipes: one per cycle",
                )
            } else if amd {
                ("avx512f", 16, 2, "two 512-bit FMA pipes, as on Zen 5")
            } else {
                (
                    "avx512f",
                    16,
                    2,
                    "assumed two 512-bit FMA units, as on Xeon Scalable Gold/Platinum; parts with one (some Silver/Bronze, client cores) peak at half",
                )
            }
        } else if has("avx2") && has("fma") {
            if amd && family == 0x17 && model < 0x30 {
                (
                    "avx2+fma",
                    8,
                    1,
                    "Zen 1 (AMD family 23, model < 48) runs a 256-bit FMA on two 128-bit pipes",
                )
            } else {
                (
                    "avx2+fma",
                    8,
                    2,
                    "two 256-bit FMA units (Haswell and later, Zen 2 and later)",
                )
            }
        } else if has("avx") {
            (
                "avx",
                8,
                1,
                "no FMA: one 256-bit multiply and one add per cycle",
            )
        } else if has("asimd") {
            (
                "asimd",
                4,
                2,
                "assumed two 128-bit NEON FMA pipes (Neoverse N1/N2; V1/V2 have four)",
            )
        } else {
            (
                "sse",
                4,
                1,
                "no FMA: one 128-bit multiply and one add per cycle",
            )
        };
        let max_khz = max_freq_khz.and_then(|t| t.trim().parse::<f64>().ok());
        let (ghz, clock_source) = match max_khz.filter(|&k| k > 0.0) {
            Some(khz) => (khz / 1e6, "cpuinfo_max_freq".to_string()),
            None => {
                let mhz = cpuinfo
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(k, _)| k.trim() == "cpu MHz")
                    .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
                    .fold(0.0, f64::max);
                if mhz <= 0.0 {
                    return Err(
                        "no clock: neither cpufreq's cpuinfo_max_freq nor /proc/cpuinfo's cpu MHz"
                            .into(),
                    );
                }
                (
                    mhz / 1e3,
                    "/proc/cpuinfo cpu MHz: the clock the OS reports now, not a boost clock"
                        .to_string(),
                )
            }
        };
        Ok(CpuPeak {
            isa: isa.into(),
            lanes,
            fma_units,
            units_note: units_note.into(),
            ghz,
            clock_source,
        })
    }

    /// One core's peak, GFLOP/s.
    pub fn core_gflops(&self) -> f64 {
        f64::from(self.lanes * 2 * self.fma_units) * self.ghz
    }

    /// The peak of `cores` physical cores, GFLOP/s.
    pub fn gflops(&self, cores: f64) -> f64 {
        cores * self.core_gflops()
    }

    /// How [`gflops`](Self::gflops) of `cores` cores is derived, on one line.
    pub fn derivation(&self, cores: f64) -> String {
        format!(
            "FP32 peak {:.1} GFLOP/s = {cores} cores x {} f32 lanes ({}) x 2 (FMA) x {} FMA/cycle ({}) x {:.3} GHz ({})",
            self.gflops(cores),
            self.lanes,
            self.isa,
            self.fma_units,
            self.units_note,
            self.ghz,
            self.clock_source
        )
    }
}

/// The clock of the core this thread runs on, GHz: the fastest of repeated chains of 100 000
/// dependent register adds (one cycle each on x86-64 cores) timed over about 50 ms, which also
/// lets the core reach its boost clock. `None` on other architectures or when implausible.
pub fn measure_ghz() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::time::{Duration, Instant};
        const ROUNDS: u64 = 1000; // of 100 adds
        let start = Instant::now();
        let mut fastest = f64::INFINITY;
        while start.elapsed() < Duration::from_millis(50) {
            let (mut x, y) = (0u64, std::hint::black_box(1u64));
            let t = Instant::now();
            for _ in 0..ROUNDS {
                // SAFETY: register-only arithmetic: no memory, no stack, no flags read after.
                unsafe {
                    std::arch::asm!(
                        ".rept 100",
                        "add {x}, {y}",
                        ".endr",
                        x = inout(reg) x,
                        y = in(reg) y,
                        options(nomem, nostack)
                    );
                }
            }
            std::hint::black_box(x);
            fastest = fastest.min(t.elapsed().as_secs_f64() / (ROUNDS * 100) as f64);
        }
        let ghz = 1e-9 / fastest;
        (0.2..10.0).contains(&ghz).then_some(ghz)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-CPU `/proc/cpuinfo` with these vendor, family, model, flags and clocks.
    fn cpuinfo(vendor: &str, family: u32, model: u32, flags: &str, mhz: [&str; 2]) -> String {
        mhz.iter()
            .enumerate()
            .map(|(i, mhz)| {
                format!(
                    "processor\t: {i}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n\
                     model name\t: Some CPU\ncpu MHz\t\t: {mhz}\nflags\t\t: fpu sse sse2 {flags}\n\n"
                )
            })
            .collect()
    }

    #[test]
    fn zen4_counts_one_512_bit_fma_per_cycle_at_the_reported_clock() {
        let text = cpuinfo(
            "AuthenticAMD",
            25,
            17,
            "avx fma avx2 avx512f avx512bw",
            ["2596.140", "2596.140"],
        );
        let p = CpuPeak::parse(&text, None).unwrap();
        assert_eq!((p.isa.as_str(), p.lanes, p.fma_units), ("avx512f", 16, 1));
        assert!((p.ghz - 2.59614).abs() < 1e-9);
        assert!((p.core_gflops() - 32.0 * 2.59614).abs() < 1e-6);
        let d = p.derivation(2.0);
        assert!(
            d.starts_with("FP32 peak 166.2 GFLOP/s = 2 cores x 16 f32 lanes"),
            "{d}"
        );
        assert!(d.contains("Zen 4") && d.contains("cpu MHz"), "{d}");
    }

    #[test]
    fn intel_avx512_counts_two_units_and_prefers_cpufreq_max() {
        let text = cpuinfo(
            "GenuineIntel",
            6,
            106,
            "avx fma avx2 avx512f",
            ["800.0", "3100.5"],
        );
        let p = CpuPeak::parse(&text, Some("3500000\n")).unwrap();
        assert_eq!((p.lanes, p.fma_units), (16, 2));
        assert_eq!(p.ghz, 3.5);
        assert_eq!(p.clock_source, "cpuinfo_max_freq");
        assert_eq!(p.gflops(4.0), 4.0 * 16.0 * 2.0 * 2.0 * 3.5);
        // Without cpufreq: the highest `cpu MHz` listed.
        let p = CpuPeak::parse(&text, Some("garbage")).unwrap();
        assert_eq!(p.ghz, 3.1005);
    }

    #[test]
    fn avx2_avx_and_sse_machines() {
        let avx2 = cpuinfo("GenuineIntel", 6, 85, "avx fma avx2", ["2000", "2000"]);
        let p = CpuPeak::parse(&avx2, None).unwrap();
        assert_eq!((p.isa.as_str(), p.lanes, p.fma_units), ("avx2+fma", 8, 2));
        assert_eq!(p.core_gflops(), 64.0);
        let zen1 = cpuinfo("AuthenticAMD", 23, 1, "avx fma avx2", ["2000", "2000"]);
        assert_eq!(CpuPeak::parse(&zen1, None).unwrap().fma_units, 1);
        let zen2 = cpuinfo("AuthenticAMD", 23, 49, "avx fma avx2", ["2000", "2000"]);
        assert_eq!(CpuPeak::parse(&zen2, None).unwrap().fma_units, 2);
        let avx = cpuinfo("GenuineIntel", 6, 42, "avx", ["1000", "1000"]);
        assert_eq!(CpuPeak::parse(&avx, None).unwrap().core_gflops(), 16.0);
        let sse = cpuinfo("GenuineIntel", 6, 15, "ssse3", ["1000", "1000"]);
        let p = CpuPeak::parse(&sse, None).unwrap();
        assert_eq!((p.isa.as_str(), p.core_gflops()), ("sse", 8.0));
    }

    #[test]
    fn a_higher_measured_clock_replaces_the_reported_one_and_says_so() {
        let text = cpuinfo(
            "AuthenticAMD",
            25,
            17,
            "avx fma avx2 avx512f",
            ["2596.140", "2596.140"],
        );
        let p = CpuPeak::parse(&text, None).unwrap();
        // Within 2% (or below): the reported clock stays.
        assert_eq!(p.clone().with_measured_clock(2.6), p);
        assert_eq!(p.clone().with_measured_clock(1.0), p);
        let boosted = p.with_measured_clock(3.7);
        assert_eq!(boosted.ghz, 3.7);
        let d = boosted.derivation(2.0);
        assert!(d.contains("x 3.700 GHz (measured by dependent adds on one core, above the 2.596 GHz of /proc/cpuinfo cpu MHz"), "{d}");
    }

    #[test]
    fn the_measured_clock_is_plausible() {
        if let Some(ghz) = measure_ghz() {
            assert!((0.2..10.0).contains(&ghz), "{ghz}");
        }
        assert_eq!(measure_ghz().is_some(), cfg!(target_arch = "x86_64"));
    }

    #[test]
    fn arm64_reads_features_and_needs_cpufreq() {
        let text = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\n";
        let p = CpuPeak::parse(text, Some("3000000")).unwrap();
        assert_eq!(
            (p.isa.as_str(), p.lanes, p.fma_units, p.ghz),
            ("asimd", 4, 2, 3.0)
        );
        let e = CpuPeak::parse(text, None).unwrap_err();
        assert!(e.contains("no clock"), "{e}");
        assert!(CpuPeak::parse("processor : 0\n", Some("1")).is_err());
    }
}
