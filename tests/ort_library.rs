//! Finding the ONNX Runtime library (feature `ort`): a missing file, a file that is not a
//! library, and a library that is not ONNX Runtime are typed errors naming what was tried,
//! returned fast. One test, in its own process, because the first good library loaded stays
//! for the process.
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corestream::backend::ort::{self as cs_ort, OrtModel};
use corestream::Error;

fn model() -> String {
    format!(
        "{}/assets/models/examplenet1.onnx",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn tried(err: &Error) -> Vec<(PathBuf, String)> {
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
        .find(|p| Path::new(p).exists())
    {
        let err = OrtModel::builder(model())
            .library(libm)
            .build()
            .unwrap_err();
        assert!(tried(&err)[0].1.contains("OrtGetApiBase"), "{err}");
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(cs_ort::loaded_library().is_none());

    // The default look-up: ORT_DYLIB_PATH, then the fetch script's folder above this test
    // executable (target/debug/deps/) when it has one, then in the current folder. Found at run
    // time: the path is relative, not this checkout's, compiled in.
    assert!(Path::new(cs_ort::FETCHED_LIBRARY).is_relative());
    let candidates = cs_ort::library_candidates(None);
    let here = std::env::current_dir()
        .unwrap()
        .join(cs_ort::FETCHED_LIBRARY);
    assert!(candidates.contains(&here), "{candidates:?}");
    let exe = std::env::current_exe().unwrap();
    if let Some(near) = cs_ort::fetched_library_near(&exe) {
        assert!(candidates.contains(&near), "{candidates:?}");
    }
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

/// The fetched library is found at run time in the nearest folder above the executable that
/// has `target/onnxruntime/libonnxruntime.so`, wherever the tree is: the path of the checkout
/// corestream was built in used to be compiled in (`FETCHED_LIBRARY`), so a binary moved or
/// built elsewhere looked in the wrong place.
#[test]
fn the_fetched_library_is_found_above_the_executable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let put = |dir: &Path| {
        let lib = dir.join(cs_ort::FETCHED_LIBRARY);
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"").unwrap();
        lib
    };
    let repo = root.join("checkout");
    let test_exe = repo.join("target/debug/deps/ort_library-0123456789abcdef");
    let release_exe = repo.join("target/release/corestream");
    // Nothing fetched: nothing found (the executables need not exist).
    assert_eq!(cs_ort::fetched_library_near(&test_exe), None);
    let lib = put(&repo);
    assert_eq!(cs_ort::fetched_library_near(&test_exe), Some(lib.clone()));
    assert_eq!(
        cs_ort::fetched_library_near(&release_exe),
        Some(lib.clone())
    );
    // Another tree, moved or elsewhere, does not see it.
    let elsewhere = root.join("elsewhere/bin/corestream");
    assert_eq!(cs_ort::fetched_library_near(&elsewhere), None);
    // The nearest folder wins: a checkout inside another tree that has a library too.
    let inner = repo.join("vendor/corestream");
    let inner_lib = put(&inner);
    assert_eq!(
        cs_ort::fetched_library_near(&inner.join("target/debug/corestream")),
        Some(inner_lib)
    );
    assert_eq!(cs_ort::fetched_library_near(&test_exe), Some(lib));
    // Only a file counts: a folder of that name, or a dangling link, is passed over.
    let fake = root.join("a/b");
    std::fs::create_dir_all(fake.join(cs_ort::FETCHED_LIBRARY)).unwrap();
    let dangling = root.join("a");
    std::fs::create_dir_all(dangling.join("target/onnxruntime")).unwrap();
    std::os::unix::fs::symlink(
        root.join("nowhere.so"),
        dangling.join(cs_ort::FETCHED_LIBRARY),
    )
    .unwrap();
    assert_eq!(
        cs_ort::fetched_library_near(&fake.join("target/debug/x")),
        None
    );
}
