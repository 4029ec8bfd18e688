//! Probing a library that is not a usable ONNX Runtime (feature `ort`) unloads it again: a
//! rejected library is not kept mapped in the process, however often it is tried. One test, in
//! its own process: a library accepted earlier in the process would answer every later builder
//! before any probe.
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};
use std::process::Command;

use corestream::backend::ort::{self as cs_ort, OrtModel};
use corestream::Error;

fn model() -> String {
    format!(
        "{}/assets/models/examplenet1.onnx",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Builds tests/ort_probe/fake_ort.c with `defines` into `dir/name`.
fn build_fake(dir: &Path, name: &str, defines: &[(&str, Option<&str>)]) -> PathBuf {
    let work = dir.join(format!("build-{name}"));
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let mut build = cc::Build::new();
    build
        .target(&target)
        .host(&target)
        .opt_level(1)
        .debug(false)
        .pic(true)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .out_dir(&work)
        .file(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_probe/fake_ort.c"));
    for (key, value) in defines {
        build.define(key, *value);
    }
    let objects = build
        .try_compile_intermediates()
        .expect("compile tests/ort_probe/fake_ort.c (a C compiler)");
    let out = dir.join(name);
    let mut link = Command::new(build.get_compiler().path());
    link.arg("-shared").arg("-o").arg(&out).args(&objects);
    let status = link.status().expect("run the linker");
    assert!(status.success(), "linking {name} failed: {link:?}");
    out
}

/// Whether `path` (canonical) is mapped into this process.
fn mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let path = path.to_string_lossy();
    maps.lines().any(|l| l.ends_with(&*path))
}

#[test]
fn rejected_libraries_are_unloaded() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let cases = [
        (
            build_fake(&dir, "libnot-ort.so", &[]),
            "does not export OrtGetApiBase",
        ),
        (
            build_fake(
                &dir,
                "libold-ort.so",
                &[("FAKE_VERSION", Some("\"1.10.0\""))],
            ),
            "ONNX Runtime 1.10.0 is too old",
        ),
        (
            build_fake(
                &dir,
                "libno-api-ort.so",
                &[("FAKE_VERSION", Some("\"1.999.0\""))],
            ),
            "does not provide C API level",
        ),
    ];
    for (lib, why) in &cases {
        assert!(!mapped(lib), "{} mapped before any probe", lib.display());
        for attempt in 0..3 {
            let err = OrtModel::builder(model()).library(lib).build().unwrap_err();
            match &err {
                Error::OrtLibrary { tried, .. } => {
                    assert_eq!(tried.len(), 1, "{err}");
                    assert!(tried[0].1.contains(why), "{err}");
                }
                other => panic!("expected Error::OrtLibrary, got {other:?}"),
            }
            assert!(
                !mapped(lib),
                "{} is still mapped after rejected probe {attempt}",
                lib.display()
            );
        }
    }
    assert!(cs_ort::loaded_library().is_none());
}
