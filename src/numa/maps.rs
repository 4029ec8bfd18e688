//! Reading `/proc/self/numa_maps`: resident pages per node of the mapping that holds an
//! address (the fallback of [`page_nodes`](super::page_nodes)).

use std::collections::BTreeMap;
use std::fs;
use std::io;

/// One `numa_maps` line: the mapping's start address and its resident pages per node
/// (`7f2a16049000 default anon=4 dirty=4 N0=3 N1=1 kernelpagesize_kB=4` -> `(0x7f2a16049000,
/// {0: 3, 1: 1})`); `None` for a line that does not start with a hexadecimal address.
fn parse_numa_maps_line(line: &str) -> Option<(u64, BTreeMap<usize, usize>)> {
    let mut fields = line.split_ascii_whitespace();
    let start = u64::from_str_radix(fields.next()?, 16).ok()?;
    let nodes = fields
        .filter_map(|f| {
            let (node, pages) = f.strip_prefix('N')?.split_once('=')?;
            Some((node.parse().ok()?, pages.parse().ok()?))
        })
        .collect();
    Some((start, nodes))
}

/// The start address of the `/proc/self/maps` mapping holding `address`.
fn mapping_start(maps: &str, address: u64) -> Option<u64> {
    maps.lines().find_map(|line| {
        let (start, end) = line.split_ascii_whitespace().next()?.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        (start..end).contains(&address).then_some(start)
    })
}

/// Resident pages per node of the mapping of `maps` / `numa_maps` (the two files' text) that
/// holds `address`.
pub(super) fn nodes_in(
    maps: &str,
    numa_maps: &str,
    address: u64,
) -> io::Result<BTreeMap<usize, usize>> {
    let start = mapping_start(maps, address).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no mapping holds address {address:#x}"),
        )
    })?;
    numa_maps
        .lines()
        .filter_map(parse_numa_maps_line)
        .find(|(s, _)| *s == start)
        .map(|(_, nodes)| nodes)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("numa_maps has no line for the mapping at {start:#x}"),
            )
        })
}

/// [`nodes_in`] on this process's own files.
pub(super) fn mapping_nodes(address: u64) -> io::Result<BTreeMap<usize, usize>> {
    let maps = fs::read_to_string("/proc/self/maps")?;
    let numa_maps = fs::read_to_string("/proc/self/numa_maps")?;
    nodes_in(&maps, &numa_maps, address)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
560205407000-560205409000 r--p 00000000 fd:01 1 /usr/bin/head
7f2a16000000-7f2a16049000 rw-p 00000000 00:00 0
7f2a16049000-7f2a160a0000 r--p 00000000 fd:01 2 /usr/lib/locale/C.utf8/LC_CTYPE
";
    const NUMA_MAPS: &str = "\
560205407000 default file=/usr/bin/head mapped=2 N0=2 kernelpagesize_kB=4
7f2a16000000 prefer:1 anon=70 dirty=70 N0=3 N1=67 kernelpagesize_kB=4
7f2a16049000 default file=/usr/lib/locale/C.utf8/LC_CTYPE mapped=32 mapmax=4 N0=32 kernelpagesize_kB=4
";

    #[test]
    fn lines_give_their_start_and_pages_per_node() {
        let (start, nodes) = parse_numa_maps_line(NUMA_MAPS.lines().nth(1).unwrap()).unwrap();
        assert_eq!(start, 0x7f2a16000000);
        assert_eq!(nodes, BTreeMap::from([(0, 3), (1, 67)]));
        assert_eq!(parse_numa_maps_line("not a line"), None);
        // A mapping with no resident page has no N fields.
        let (_, none) = parse_numa_maps_line("7f00 default anon=0").unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn an_address_finds_the_mapping_that_holds_it() {
        let nodes = nodes_in(MAPS, NUMA_MAPS, 0x7f2a16048fff).unwrap();
        assert_eq!(nodes, BTreeMap::from([(0, 3), (1, 67)]));
        let nodes = nodes_in(MAPS, NUMA_MAPS, 0x7f2a16049000).unwrap();
        assert_eq!(nodes, BTreeMap::from([(0, 32)]));
        assert_eq!(
            nodes_in(MAPS, NUMA_MAPS, 0x10).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            nodes_in(MAPS, "", 0x7f2a16000000).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
