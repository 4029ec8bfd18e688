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
