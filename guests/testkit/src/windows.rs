//! The guest-physical windows a guest's device tree advertises (RAM, device
//! `reg`s, bus `ranges`), and which addresses lie outside all of them: those
//! are the ones the isolation guest expects to abort.

use alloc::string::String;
use alloc::vec::Vec;

/// One advertised range `[base, base + size)` and the node it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub size: u64,
    pub node: String,
}

impl Window {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size
    }
}

/// A set of windows.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub list: Vec<Window>,
}

impl Windows {
    pub fn add(&mut self, base: u64, size: u64, node: &str) {
        if size > 0 {
            self.list.push(Window { base, size, node: String::from(node) });
        }
    }

    /// The first window holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&Window> {
        self.list.iter().find(|w| w.contains(addr))
    }

    /// Every multiple of `step` in `[start, end)` that no window holds.
    pub fn gaps_stepped(&self, start: u64, end: u64, step: u64) -> impl Iterator<Item = u64> + '_ {
        let first = start.div_ceil(step);
        let last = end.div_ceil(step);
        (first..last).map(move |i| i * step).filter(move |&a| self.find(a).is_none())
    }

    /// Collects every `reg` of nodes on memory-mapped buses (the root and
    /// children of nodes with a `ranges` property) and every non-empty
    /// `ranges` (parent side) from a device tree. Addresses are not
    /// translated through more than one bus level; the guest platform has
    /// none deeper. `None` if the blob does not parse.
    pub fn from_fdt(blob: &[u8]) -> Option<Windows> {
        let fdt = fdt::Fdt::new(blob).ok()?;
        let root = fdt.find_node("/")?;
        let mut out = Windows::default();
        walk(root, Cells { address: 2, size: 1 }, true, &mut out, 0);
        Some(out)
    }
}

#[derive(Clone, Copy)]
struct Cells {
    address: usize,
    size: usize,
}

fn cells_of(node: fdt::node::FdtNode<'_, '_>, default: Cells) -> Cells {
    let get = |name| {
        node.property(name)
            .and_then(|p| p.value.get(..4))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    Cells { address: get("#address-cells").unwrap_or(default.address), size: get("#size-cells").unwrap_or(default.size) }
}

fn read_cells(bytes: &[u8], cells: usize) -> Option<u64> {
    if cells == 0 || cells > 2 {
        return if cells == 0 { Some(0) } else { None };
    }
    let mut v = 0u64;
    for chunk in bytes.get(..cells * 4)?.chunks_exact(4) {
        v = (v << 32) | u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as u64;
    }
    Some(v)
}

/// `parent`: the cell sizes this node's `reg` uses; `mapped`: the node sits
/// on a memory-mapped bus.
fn walk(node: fdt::node::FdtNode<'_, '_>, parent: Cells, mapped: bool, out: &mut Windows, depth: u32) {
    if depth > 16 {
        return;
    }
    let disabled = node
        .property("status")
        .and_then(|p| p.as_str())
        .is_some_and(|s| s != "okay" && s != "ok");
    if disabled {
        return;
    }
    let name = node.name;
    if mapped && parent.size > 0 {
        if let Some(reg) = node.property("reg") {
            let entry = (parent.address + parent.size) * 4;
            for e in reg.value.chunks_exact(entry.max(1)) {
                if let (Some(base), Some(size)) =
                    (read_cells(e, parent.address), read_cells(&e[parent.address * 4..], parent.size))
                {
                    out.add(base, size, name);
                }
            }
        }
    }
    let own = cells_of(node, Cells { address: 2, size: 1 });
    let ranges = node.property("ranges");
    if let Some(r) = ranges {
        // (child address, parent address, size) triples; the parent side is
        // what the CPU sees.
        let entry = (own.address + parent.address + own.size) * 4;
        if entry > 0 && mapped {
            for e in r.value.chunks_exact(entry) {
                let at = own.address * 4;
                if let (Some(base), Some(size)) =
                    (read_cells(&e[at..], parent.address), read_cells(&e[at + parent.address * 4..], own.size))
                {
                    out.add(base, size, name);
                }
            }
        }
    }
    let children_mapped = depth == 0 || (mapped && ranges.is_some());
    for child in node.children() {
        walk(child, own, children_mapped, out, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_skip_every_advertised_window() {
        let mut w = Windows::default();
        w.add(0x4000_0000, 64 << 20, "memory@40000000");
        w.add(0x0800_0000, 0x1_0000, "intc@8000000");
        w.add(0x0900_0000, 0x1000, "pl011@9000000");
        let step = 2 << 20;
        let gaps: Vec<u64> = w.gaps_stepped(0, 1 << 32, step).collect();
        assert_eq!(gaps.len(), 2048 - 32 - 1 - 1);
        assert!(!gaps.contains(&0x4000_0000));
        assert!(!gaps.contains(&0x4200_0000));
        assert!(gaps.contains(&0x4400_0000));
        assert!(!gaps.contains(&0x0800_0000));
        assert!(gaps.contains(&0));
        assert_eq!(w.find(0x0900_0fff).map(|w| w.node.as_str()), Some("pl011@9000000"));
        assert_eq!(w.find(0x0900_1000), None);
    }

    #[test]
    fn cells_read_big_endian_and_refuse_three_cell_addresses() {
        assert_eq!(read_cells(&[0, 0, 0, 1, 0, 0, 0, 2], 2), Some(0x1_0000_0002));
        assert_eq!(read_cells(&[0, 0, 1, 0], 1), Some(0x100));
        assert_eq!(read_cells(&[0; 12], 3), None);
        assert_eq!(read_cells(&[0, 0], 1), None);
    }
}
