//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the same checks the
//! cargo-fuzz targets run (this crate), as ordinary tests on stable: every input the fuzzer
//! kept, and every crash it found (minimised, kept in the corpus as a regression), must pass.
//! `scripts/fuzz.sh` grows the corpora.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

use corestream_fuzz_checks as checks;

/// The fuzz crate's folder (`fuzz/`), the parent of this crate's.
fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("checks/ lies inside fuzz/")
        .to_owned()
}

/// `true` when ONNX Runtime is loaded; else prints why and returns `false`, or panics when
/// `CORESTREAM_REQUIRE_ORT=1` (CI), so that the ORT replay cannot skip silently there.
#[cfg(feature = "ort")]
fn have_ort() -> bool {
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

/// The corpus files of `target`, sorted by name; fails when there are fewer than `min` (a
/// missing or emptied corpus must not pass silently).
fn corpus(target: &str, min: usize) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "{} holds {} inputs, expected at least {min}",
        dir.display(),
        files.len()
    );
    files
}

/// Runs `check` on every input of `target`'s corpus and fails naming every input that failed.
fn replay(target: &str, min: usize, check: impl Fn(&[u8])) {
    let mut failed = Vec::new();
    for path in corpus(target, min) {
        let data = fs::read(&path).expect("a readable corpus file");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: failing inputs: {failed:#?}");
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target() {
    let root = fuzz_dir();
    for target in checks::TARGETS {
        assert!(
            root.join("corpus").join(target).is_dir(),
            "no corpus for {target}"
        );
        assert!(
            root.join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "no fuzz target {target}"
        );
    }
}

#[test]
fn cpulist_corpus() {
    replay("cpulist", 10, checks::cpulist::check);
}

#[test]
fn topology_corpus() {
    replay("topology", 10, checks::topology::check);
}

#[test]
fn batch_corpus() {
    replay("batch", 10, checks::batch::check);
}

#[cfg(feature = "tract")]
#[test]
fn model_tract_corpus() {
    replay("model_tract", 5, checks::model::check_tract);
}

#[cfg(feature = "ort")]
#[test]
fn model_ort_corpus() {
    if !have_ort() {
        return;
    }
    replay("model_ort", 5, |data| {
        assert!(checks::model::check_ort(data));
    });
}

#[cfg(feature = "service")]
#[test]
fn service_body_corpus() {
    replay("service_body", 10, checks::service_body::check);
}

/// The replay fails on a failing input (a replay that cannot fail proves nothing).
#[test]
fn replay_reports_failing_inputs() {
    // The replay reports a failing input instead of stopping at the first.
    let caught = panic::catch_unwind(|| replay("cpulist", 1, |_| panic!("boom")));
    assert!(caught.is_err());
}
