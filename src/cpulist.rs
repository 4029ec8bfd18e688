//! The kernel's CPU list syntax (`0-3,8,10-11`), as used by sysfs, `taskset -c` and
//! `/proc/<pid>/status`.

use std::fmt;

/// Parses a kernel CPU list such as `0-3,8,10-11` into ascending, de-duplicated ids.
///
/// Whitespace around the list and around items is ignored; an empty list gives no ids.
/// Returns `None` when an item is not a number or a range is reversed.
pub(crate) fn parse(text: &str) -> Option<Vec<usize>> {
    let mut ids = Vec::new();
    for item in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match item.split_once('-') {
            Some((lo, hi)) => {
                let lo: usize = lo.trim().parse().ok()?;
                let hi: usize = hi.trim().parse().ok()?;
                if lo > hi {
                    return None;
                }
                ids.extend(lo..=hi);
            }
            None => ids.push(item.parse().ok()?),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Some(ids)
}

/// Displays CPU ids in the kernel's list syntax, keeping their order: runs of consecutive
/// ascending ids become ranges (`[0, 1, 2, 3, 8]` shows as `0-3,8`).
pub(crate) struct CpuList<'a>(pub(crate) &'a [usize]);

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
    fn formats_runs_keeping_order() {
        assert_eq!(format(&[0, 1, 2, 3, 8]), "0-3,8");
        assert_eq!(format(&[3, 2, 1]), "3,2,1");
        assert_eq!(format(&[0, 2, 4]), "0,2,4");
        assert_eq!(format(&[]), "none");
    }
}
