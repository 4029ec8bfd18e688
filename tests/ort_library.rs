//! Finding the ONNX Runtime library (feature `ort`): a missing file, a file that is not a
//! library, and a library that is not ONNX Runtime are typed errors naming what was tried,
//! returned fast. One test, in its own process, because the first good library loaded stays
//! for the process.
#![cfg(feature = "ort")]

use std::time::{Duration, Instant};

use corestream::backend::ort::{self as cs_ort, OrtModel};
use corestream::Error;

fn model() -> String {
    format!(
        "{}/assets/models/examplenet1.onnx",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn tried(err: &Error) -> Vec<(std::path::PathBuf, String)> {
    match err {
        Error::OrtLibrary { tried, .. } => tried.clone(),
        other => panic!("expected Error::OrtLibrary, got {other:?}"),
    }
}

#[test]
fn bad_libraries_are_typed_errors_then_a_good_one_loads() {
    let dir = tempfile::tempdir().unwrap();

    let t = Instant::now();
    let missing = dir.path().join("nowhere/libonnxruntime.so");
    let err = OrtModel::builder(model())
        .library(&missing)
        .build()
        .unwrap_err();
    let tr = tried(&err);
    assert_eq!(
        tr.len(),
        1,
        "an explicit path is the only one tried: {tr:?}"
    );
    assert_eq!(tr[0].0, missing);
    assert_eq!(tr[0].1, "no such file");
    let msg = err.to_string();
    assert!(msg.contains("scripts/fetch-onnxruntime.sh"), "{msg}");
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    let text = dir.path().join("libonnxruntime.so");
    std::fs::write(&text, "this is a text file\n").unwrap();
    let err = OrtModel::builder(model())
        .library(&text)
        .build()
        .unwrap_err();
    assert!(
        tried(&err)[0].1.contains("not a loadable shared library"),
        "{err}"
    );

    // A real shared library that is not ONNX Runtime.
    if let Some(libm) = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib64/libm.so.6"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    {
        let err = OrtModel::builder(model())
            .library(libm)
            .build()
            .unwrap_err();
        assert!(tried(&err)[0].1.contains("OrtGetApiBase"), "{err}");
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(cs_ort::loaded_library().is_none());

    // The default look-up: ORT_DYLIB_PATH, then the fetch script's folder.
    let candidates = cs_ort::library_candidates(None);
    assert_eq!(
        candidates.last().unwrap(),
        std::path::Path::new(cs_ort::FETCHED_LIBRARY)
    );
    match cs_ort::load_library(None) {
        Ok(lib) => {
            assert!(lib.version().starts_with("1."), "{lib:?}");
            // Now loaded: another file is refused, the same one accepted.
            let err = OrtModel::builder(model())
                .library(&text)
                .build()
                .unwrap_err();
            assert!(tried(&err)[0].1.contains("already loaded"), "{err}");
            OrtModel::builder(model())
                .library(lib.path())
                .build()
                .unwrap();
        }
        Err(e) if std::env::var("CORESTREAM_REQUIRE_ORT").as_deref() == Ok("1") => {
            panic!("CORESTREAM_REQUIRE_ORT=1 but: {e}")
        }
        Err(e) => {
            assert_eq!(tried(&e).len(), candidates.len());
            eprintln!("skipped the loading part: {e}");
        }
    }
}
