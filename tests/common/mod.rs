//! Helpers shared by the integration tests (each test binary includes this with `mod common;`
//! and uses what it needs).
#![allow(dead_code)]

/// The CPUs of a `/proc/.../status` text's `Cpus_allowed_list` line (e.g. `0-3,8`), ascending.
pub fn cpus_allowed(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line")
        .trim();
    let mut ids = Vec::new();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        match item.split_once('-') {
            Some((a, b)) => ids.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => ids.push(item.parse().unwrap()),
        }
    }
    ids
}

/// `true` when ONNX Runtime is loaded; else prints why and returns `false`, or panics when
/// `CORESTREAM_REQUIRE_ORT=1` (CI), so that the ORT tests cannot skip silently there.
#[cfg(feature = "ort")]
pub fn have_ort() -> bool {
    match corestream::backend::ort::load_library(None) {
        Ok(_) => true,
        Err(e) if std::env::var("CORESTREAM_REQUIRE_ORT").as_deref() == Ok("1") => {
            panic!("CORESTREAM_REQUIRE_ORT=1 but: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            false
        }
    }
}

/// A fake sysfs tree under the test's temporary folder: the CPUs `nodes[i]` on node `i`, each
/// its own core.
pub fn fake_machine(name: &str, nodes: &[&[usize]]) -> std::path::PathBuf {
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // One folder per call: tests running at once must not remove each other's trees.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("numa-{name}-{}-{call}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let mut all: Vec<usize> = nodes.iter().flat_map(|n| n.iter().copied()).collect();
    all.sort_unstable();
    let cpu_dir = root.join("devices/system/cpu");
    fs::create_dir_all(&cpu_dir).unwrap();
    let list = |cpus: &[usize]| {
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    fs::write(cpu_dir.join("online"), list(&all)).unwrap();
    for &cpu in &all {
        let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
        fs::create_dir_all(&topo).unwrap();
        fs::write(topo.join("core_id"), cpu.to_string()).unwrap();
        fs::write(topo.join("core_cpus_list"), cpu.to_string()).unwrap();
    }
    for (node, cpus) in nodes.iter().enumerate() {
        let dir = root.join(format!("devices/system/node/node{node}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cpulist"), list(cpus)).unwrap();
    }
    root
}

/// The live machine's first two CPUs described as two NUMA nodes (a fake topology over real
/// CPUs, for modules that must pin their streams), and a pool of the two; `None` on one CPU.
pub fn two_nodes() -> Option<(corestream::Topology, corestream::CpuPool)> {
    use corestream::{CpuPool, Topology};
    let live = CpuPool::all().unwrap();
    if live.len() < 2 {
        eprintln!(
            "one CPU: no second stream to give a copy (the plan tests on fake machines cover it)"
        );
        return None;
    }
    let (a, b) = (live.cpus()[0], live.cpus()[1]);
    let root = fake_machine(&format!("two-nodes-{a}-{b}"), &[&[a], &[b]]);
    let t = Topology::from_sysfs(root, [a, b]).unwrap();
    let pool = CpuPool::new_in(&t, [a, b]).unwrap();
    Some((t, pool))
}

/// ExampleNet1's input for `rows` rows, `(rows, 64, 3, 3)`, a deterministic pattern moved by
/// `seed`.
pub fn examplenet1_input(rows: usize, seed: usize) -> Vec<corestream::backend::Tensor> {
    let x = corestream::ndarray::ArrayD::from_shape_fn(
        corestream::ndarray::IxDyn(&[rows, 64, 3, 3]),
        |i| ((i[0] * 577 + i[1] * 31 + i[2] * 7 + i[3] + seed) as f32 * 0.37).sin(),
    );
    vec![corestream::backend::Tensor::from(x)]
}

/// The first output of `got` equals `want`'s within 1e-4 relative (1e-4 absolute below 1).
pub fn assert_first_close(
    got: &[corestream::backend::Tensor],
    want: &[corestream::backend::Tensor],
) {
    let (got, want) = (
        got[0].view::<f32>().unwrap(),
        want[0].view::<f32>().unwrap(),
    );
    assert_eq!(got.shape(), want.shape());
    for (a, b) in got.iter().zip(want.iter()) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
}
