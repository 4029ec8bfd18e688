//! Target `cpulist`: the kernel CPU-list parser, `corestream::cpulist` (used for every sysfs
//! list and for the messages that print CPU sets), on arbitrary text.
//!
//! Checks: no panic, bounded work (a list naming ids beyond [`parser::MAX_CPUS`] is rejected
//! instead of being expanded), and when a list parses, its ids are strictly ascending, below
//! the bound, and print back (`CpuList`) as a list that parses to the same ids.

use corestream::cpulist as parser;

/// Runs the parser on `data` (lossy UTF-8) and checks what it returns.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Some(ids) = parser::parse(&text) else {
        return;
    };
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids of {text:?} not strictly ascending: {ids:?}"
    );
    if let Some(&last) = ids.last() {
        assert!(last < parser::MAX_CPUS, "{text:?} gave cpu {last}");
    }
    let printed = parser::CpuList(&ids).to_string();
    let again = if ids.is_empty() {
        assert_eq!(printed, "none");
        Some(Vec::new())
    } else {
        parser::parse(&printed)
    };
    assert_eq!(
        again.as_deref(),
        Some(ids.as_slice()),
        "{text:?} printed as {printed:?}"
    );
}
