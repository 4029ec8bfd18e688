//! The kernel's CPU list syntax (`0-3,8,10-11`), as used by sysfs, `taskset -c` and
//! `/proc/<pid>/status`: the parser corestream reads every such list with, and the printer of
//! its messages.
//!
//! ```
//! use corestream::cpulist::{parse, CpuList};
//!
//! let ids = parse(" 0-2, 8 ,10-11").expect("a valid list");
//! assert_eq!(ids, [0, 1, 2, 8, 10, 11]);
//! assert_eq!(CpuList(&ids).to_string(), "0-2,8,10-11");
//! assert_eq!(parse("3-1"), None);
//! ```

use std::fmt;

/// One more than the largest CPU id a list may name: 8192 is the largest `CONFIG_NR_CPUS` Linux
/// configures (x86-64 and powerpc with `MAXSMP`), so the kernel never prints a larger id.
/// Without a bound, one range such as `0-18446744073709551615` in a corrupt or hostile sysfs
/// file would be expanded id by id until memory runs out (found by `fuzz/` target `cpulist`).
pub const MAX_CPUS: usize = 8192;

/// Parses a kernel CPU list such as `0-3,8,10-11` into ascending, de-duplicated ids.
///
/// Whitespace around the list and around items is ignored; an empty list gives no ids.
/// Returns `None` when an item is not a number, a range is reversed, or an id is not below
/// [`MAX_CPUS`]. Overlapping ranges are merged before they are expanded, so the work is
/// bounded by the text's length plus `MAX_CPUS`, whatever the list repeats.
pub fn parse(text: &str) -> Option<Vec<usize>> {
    let mut ranges = Vec::new();
    for item in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let id: usize = item.parse().ok()?;
                (id, id)
            }
        };
        if lo > hi || hi >= MAX_CPUS {
            return None;
        }
        ranges.push((lo, hi));
    }
    ranges.sort_unstable();
    let mut ids: Vec<usize> = Vec::new();
    for (lo, hi) in ranges {
        // Ranges are sorted by start: skip the ids the previous ranges already gave.
        let start = ids.last().map_or(lo, |&last| lo.max(last + 1));
        if start <= hi {
            ids.extend(start..=hi);
        }
    }
    Some(ids)
}

/// Displays CPU ids in the kernel's list syntax, keeping their order: runs of consecutive
/// ascending ids become ranges (`[0, 1, 2, 3, 8]` shows as `0-3,8`); no ids show as `none`.
#[derive(Debug, Clone, Copy)]
pub struct CpuList<'a>(pub &'a [usize]);

impl fmt::Display for CpuList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = self.0;
        if ids.is_empty() {
            return f.write_str("none");
        }
        let mut i = 0;
        let mut first = true;
        while i < ids.len() {
            let mut j = i;
            while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
                j += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if j == i {
                write!(f, "{}", ids[i])?;
            } else {
                write!(f, "{}-{}", ids[i], ids[j])?;
            }
            i = j + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
/// Formats CPU ids in the kernel's list syntax (see [`CpuList`]).
pub(crate) fn format(ids: &[usize]) -> String {
    CpuList(ids).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_singles_and_whitespace() {
        assert_eq!(parse("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse(" 5 "), Some(vec![5]));
        assert_eq!(parse(""), Some(vec![]));
        assert_eq!(parse("3,1,1"), Some(vec![1, 3]));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse("a"), None);
        assert_eq!(parse("3-1"), None);
        assert_eq!(parse("1-"), None);
    }

    #[test]
    fn rejects_ids_beyond_the_kernel_limit_without_expanding_them() {
        // Regression (fuzz target `cpulist`): this range used to be expanded id by id.
        assert_eq!(parse("0-18446744073709551615"), None);
        assert_eq!(parse(&format!("{MAX_CPUS}")), None);
        assert_eq!(
            parse(&format!("0-{}", MAX_CPUS - 1)).map(|v| v.len()),
            Some(MAX_CPUS)
        );
        // Repeated and overlapping ranges are merged, not expanded once per repetition.
        let repeated = vec![format!("0-{}", MAX_CPUS - 1); 10_000].join(",");
        assert_eq!(parse(&repeated).map(|v| v.len()), Some(MAX_CPUS));
        assert_eq!(parse("4-6,0-5,9,5"), Some(vec![0, 1, 2, 3, 4, 5, 6, 9]));
    }

    #[test]
    fn formats_runs_keeping_order() {
        assert_eq!(format(&[0, 1, 2, 3, 8]), "0-3,8");
        assert_eq!(format(&[3, 2, 1]), "3,2,1");
        assert_eq!(format(&[0, 2, 4]), "0,2,4");
        assert_eq!(format(&[]), "none");
    }
}
