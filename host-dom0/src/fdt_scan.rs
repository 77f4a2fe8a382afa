//! A small, bounds-checked walk over a raw flattened device tree for what
//! `hv_devtree::platform` does not give: `/memory` before the heap exists
//! (no allocation), the list of device nodes with `reg`, and `/hypervisor`.
//!
//! Never panics: every read is checked, and a malformed blob just ends the
//! walk. Hand-written rather than the `fdt` crate's walk because it runs
//! before the heap exists (it finds `/memory` for it) and because `fdt`
//! panics on malformed blobs; the format's constants and reads are
//! `hv_devtree::fdt_format`'s.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use hv_devtree::fdt_format::token::{BEGIN_NODE, END, END_NODE, NOP, PROP};
use hv_devtree::fdt_format::{be32, cstr, Header};

pub use hv_devtree::fdt_format::total_size;

const MAX_DEPTH: usize = 16;

/// One step of the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    Begin(&'a str),
    Prop(&'a str, &'a [u8]),
    End,
}

/// Iterates over the structure block; stops (returns `None`) at `FDT_END` or
/// at the first thing out of bounds or malformed.
pub struct Walker<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    off: usize,
}

impl<'a> Walker<'a> {
    pub fn new(blob: &'a [u8]) -> Option<Self> {
        let total = total_size(blob)?.min(blob.len());
        let blob = blob.get(..total)?;
        let header = Header::read(blob)?;
        let st_off = header.off_dt_struct as usize;
        let str_off = header.off_dt_strings as usize;
        let str_len = header.size_dt_strings as usize;
        let st_len = header.size_dt_struct as usize;
        let structs = blob.get(st_off..st_off.checked_add(st_len)?)?;
        let strings = blob.get(str_off..str_off.checked_add(str_len)?)?;
        Some(Self {
            structs,
            strings,
            off: 0,
        })
    }
}

impl<'a> Iterator for Walker<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let token = be32(self.structs, self.off)?;
            self.off = self.off.checked_add(4)?;
            match token {
                BEGIN_NODE => {
                    let name = cstr(self.structs, self.off)?;
                    self.off = self.off.checked_add(name.len() + 1)?.checked_next_multiple_of(4)?;
                    return Some(Token::Begin(name));
                }
                PROP => {
                    let len = be32(self.structs, self.off)? as usize;
                    let name_off = be32(self.structs, self.off + 4)? as usize;
                    let start = self.off + 8;
                    let value = self.structs.get(start..start.checked_add(len)?)?;
                    self.off = start.checked_add(len)?.checked_next_multiple_of(4)?;
                    let name = cstr(self.strings, name_off)?;
                    return Some(Token::Prop(name, value));
                }
                END_NODE => return Some(Token::End),
                NOP => continue,
                END => {
                    self.off = self.structs.len();
                    return None;
                }
                _ => {
                    self.off = self.structs.len();
                    return None;
                }
            }
        }
    }
}

/// A big-endian number of 1 or 2 cells.
fn cells(v: &[u8]) -> Option<u64> {
    match v.len() {
        4 => be32(v, 0).map(u64::from),
        8 => Some((u64::from(be32(v, 0)?) << 32) | u64::from(be32(v, 4)?)),
        _ => None,
    }
}

/// `(address, size)` entries of a `reg`-like value with the given cell counts (each 1 or 2; size may be 0).
fn reg_entries(value: &[u8], ac: usize, sc: usize) -> impl Iterator<Item = (u64, u64)> + '_ {
    let entry = (ac + sc) * 4;
    let ok = (1..=2).contains(&ac) && sc <= 2 && entry > 0;
    let chunks = if ok {
        value.chunks_exact(entry)
    } else {
        [].chunks_exact(1)
    };
    chunks.filter_map(move |c| {
        let addr = cells(c.get(..ac * 4)?)?;
        let size = if sc == 0 { 0 } else { cells(c.get(ac * 4..)?)? };
        Some((addr, size))
    })
}

fn cell_prop(v: &[u8]) -> Option<usize> {
    (v.len() == 4).then(|| be32(v, 0).map(|c| c as usize))?
}

fn is_okay(status: Option<&[u8]>) -> bool {
    matches!(status, None | Some(b"okay\0" | b"ok\0" | b"okay" | b"ok"))
}

/// Calls `f(base, size)` for each non-empty `reg` entry of the enabled
/// root-level nodes with `device_type = "memory"`. Allocates nothing, so it
/// runs before the MMU and heap exist. Returns how many entries it reported.
pub fn for_each_memory(blob: &[u8], mut f: impl FnMut(u64, u64)) -> usize {
    let Some(walker) = Walker::new(blob) else {
        return 0;
    };
    let (mut ac, mut sc) = (2, 1);
    let mut depth = 0usize;
    let (mut is_memory, mut reg, mut status): (bool, Option<&[u8]>, Option<&[u8]>) =
        (false, None, None);
    let mut count = 0;
    for token in walker {
        match token {
            Token::Begin(_) => {
                depth += 1;
                if depth == 2 {
                    (is_memory, reg, status) = (false, None, None);
                }
            }
            Token::Prop(name, value) => match (depth, name) {
                (1, "#address-cells") => ac = cell_prop(value).unwrap_or(ac),
                (1, "#size-cells") => sc = cell_prop(value).unwrap_or(sc),
                (2, "device_type") => is_memory = value == b"memory\0" || value == b"memory",
                (2, "reg") => reg = Some(value),
                (2, "status") => status = Some(value),
                _ => {}
            },
            Token::End => {
                if depth == 2 && is_memory && is_okay(status) {
                    for (base, size) in reg_entries(reg.unwrap_or(&[]), ac, sc) {
                        if size > 0 && base.checked_add(size).is_some() {
                            f(base, size);
                            count += 1;
                        }
                    }
                }
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
        }
    }
    count
}

/// `/chosen`'s `linux,initrd-start`..`linux,initrd-end` (1 or 2 cells
/// each) as `(base, size)`, if both are present and end > start. Allocates
/// nothing (the MMU setup maps the initrd, where the hypervisor puts the
/// boot bundle, as Normal memory).
pub fn initrd(blob: &[u8]) -> Option<(u64, u64)> {
    let mut depth = 0usize;
    let mut in_chosen = false;
    let (mut start, mut end) = (None, None);
    for token in Walker::new(blob)? {
        match token {
            Token::Begin(name) => {
                depth += 1;
                in_chosen = depth == 2 && name == "chosen";
            }
            Token::Prop(name, value) if in_chosen && depth == 2 => match name {
                "linux,initrd-start" => start = cells(value),
                "linux,initrd-end" => end = cells(value),
                _ => {}
            },
            Token::Prop(..) => {}
            Token::End => {
                if depth <= 1 {
                    break;
                }
                depth -= 1;
                in_chosen = false;
            }
        }
    }
    let (start, end) = (start?, end?);
    (end > start).then(|| (start, end - start))
}

/// A node of the tree, as much as the device list needs.
#[derive(Debug, Default)]
struct Node<'a> {
    path: String,
    parent: Option<usize>,
    /// `#address-cells` / `#size-cells` for this node's children.
    ac: usize,
    sc: usize,
    reg: Option<&'a [u8]>,
    ranges: Option<&'a [u8]>,
    status: Option<&'a [u8]>,
    compatible: Option<&'a [u8]>,
    device_type: Option<&'a [u8]>,
    /// Every property, for [`Tree::property`].
    props: Vec<(&'a str, &'a [u8])>,
}

/// The nodes of a blob, in tree order (index 0 is the root).
pub struct Tree<'a> {
    nodes: Vec<Node<'a>>,
}

/// A device node with a translated `reg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: String,
    /// First `reg` entry as a CPU physical address, or `None` if a bus on the
    /// way up has no usable `ranges`.
    pub base: Option<u64>,
    pub size: u64,
}

impl<'a> Tree<'a> {
    /// Reads every node; a malformed blob yields the nodes before the damage.
    pub fn new(blob: &'a [u8]) -> Self {
        let mut nodes: Vec<Node<'a>> = Vec::new();
        let mut stack: Vec<usize> = Vec::new();
        for token in Walker::new(blob).into_iter().flatten() {
            match token {
                Token::Begin(name) => {
                    if stack.len() >= MAX_DEPTH {
                        break;
                    }
                    let parent = stack.last().copied();
                    let path = match parent {
                        None => String::from("/"),
                        Some(0) => alloc::format!("/{name}"),
                        Some(p) => alloc::format!("{}/{name}", nodes[p].path),
                    };
                    stack.push(nodes.len());
                    nodes.push(Node {
                        path,
                        parent,
                        ac: 2,
                        sc: 1,
                        ..Node::default()
                    });
                }
                Token::Prop(name, value) => {
                    let Some(n) = stack.last().and_then(|&i| nodes.get_mut(i)) else {
                        break;
                    };
                    n.props.push((name, value));
                    match name {
                        "#address-cells" => n.ac = cell_prop(value).unwrap_or(n.ac),
                        "#size-cells" => n.sc = cell_prop(value).unwrap_or(n.sc),
                        "reg" => n.reg = Some(value),
                        "ranges" => n.ranges = Some(value),
                        "status" => n.status = Some(value),
                        "compatible" => n.compatible = Some(value),
                        "device_type" => n.device_type = Some(value),
                        _ => {}
                    }
                }
                Token::End => {
                    if stack.pop().is_none() || stack.is_empty() {
                        break;
                    }
                }
            }
        }
        Self { nodes }
    }

    fn find(&self, path: &str) -> Option<&Node<'a>> {
        self.nodes.iter().find(|n| n.path == path)
    }

    /// Does node `path` exist, enabled, with `compat` in its `compatible` list?
    pub fn is_compatible(&self, path: &str, compat: &str) -> bool {
        self.find(path).is_some_and(|n| {
            is_okay(n.status)
                && n.compatible
                    .unwrap_or(&[])
                    .split(|&b| b == 0)
                    .any(|s| s == compat.as_bytes())
        })
    }

    /// The value of property `name` of node `path` (an empty slice for a
    /// boolean property such as `broken-cd`).
    pub fn property(&self, path: &str, name: &str) -> Option<&'a [u8]> {
        self.find(path)?.props.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }

    /// Translates `addr` (size `size`) on the bus of node `bus`'s children to a CPU physical address.
    fn translate(&self, mut bus: usize, mut addr: u64, size: u64) -> Option<u64> {
        while let Some(parent) = self.nodes[bus].parent {
            let node = &self.nodes[bus];
            let ranges = node.ranges?;
            if !ranges.is_empty() {
                let (cac, csc, pac) = (node.ac, node.sc, self.nodes[parent].ac);
                let entry = (cac + pac + csc) * 4;
                if !(1..=2).contains(&cac) || !(1..=2).contains(&pac) || !(1..=2).contains(&csc) {
                    return None;
                }
                addr = ranges.chunks_exact(entry).find_map(|c| {
                    let child = cells(c.get(..cac * 4)?)?;
                    let pbase = cells(c.get(cac * 4..(cac + pac) * 4)?)?;
                    let len = cells(c.get((cac + pac) * 4..)?)?;
                    let off = addr.checked_sub(child)?;
                    (off < len && size <= len - off).then(|| pbase.checked_add(off))?
                })?;
            }
            bus = parent;
        }
        Some(addr)
    }

    /// Enabled nodes whose `reg` is an address range (the parent's
    /// `#size-cells` is not 0), other than memory, in tree order.
    pub fn devices(&self) -> Vec<Device> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let (Some(reg), Some(parent)) = (node.reg, node.parent) else {
                continue;
            };
            let bus = &self.nodes[parent];
            let is_memory = matches!(node.device_type, Some(b"memory\0" | b"memory"));
            if bus.sc == 0 || is_memory || !self.ancestors_okay(node) {
                continue;
            }
            let Some((addr, size)) = reg_entries(reg, bus.ac, bus.sc).next() else {
                continue;
            };
            let base = self.translate(parent, addr, size);
            out.push(Device {
                path: node.path.clone(),
                base,
                size,
            });
        }
        out
    }

    fn ancestors_okay(&self, node: &Node<'_>) -> bool {
        let mut at = Some(node);
        while let Some(n) = at {
            if !is_okay(n.status) {
                return false;
            }
            at = n.parent.map(|p| &self.nodes[p]);
        }
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hv_devtree::writer::FdtWriter;

    /// Builds a blob from a nested description, for tests: a chainable
    /// face on `hv_devtree`'s writer (test blobs are well-formed; the walk's
    /// robustness tests damage them afterwards).
    pub struct Builder(FdtWriter);

    impl Builder {
        pub fn new() -> Self {
            Self(FdtWriter::new())
        }
        pub fn begin(&mut self, name: &str) -> &mut Self {
            self.0.begin_node(name).expect("test blob");
            self
        }
        pub fn end(&mut self) -> &mut Self {
            self.0.end_node().expect("test blob");
            self
        }
        pub fn nop(&mut self) -> &mut Self {
            self.0.nop();
            self
        }
        pub fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            self.0.property(name, value).expect("test blob");
            self
        }
        pub fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
            self.0.property_cells(name, cells).expect("test blob");
            self
        }
        pub fn finish(&mut self) -> Vec<u8> {
            core::mem::take(&mut self.0).finish().expect("test blob")
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        b.begin("")
            .cells("#address-cells", &[2])
            .cells("#size-cells", &[2])
            .prop("compatible", b"linux,dummy-virt\0")
            .begin("memory@40000000")
            .prop("device_type", b"memory\0")
            .cells(
                "reg",
                &[0, 0x4000_0000, 0, 0x4000_0000, 1, 0, 0, 0x1000_0000],
            )
            .end()
            .nop()
            .begin("memory@0")
            .prop("device_type", b"memory\0")
            .prop("status", b"disabled\0")
            .cells("reg", &[0, 0, 0, 0x1000])
            .end()
            .begin("hypervisor")
            .prop("compatible", b"other\0rusthv,hypervisor\0")
            .end()
            .begin("pl011@9000000")
            .cells("reg", &[0, 0x900_0000, 0, 0x1000])
            .end()
            .begin("cpus")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[0])
            .begin("cpu@0")
            .cells("reg", &[0])
            .end()
            .end()
            .begin("soc")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .cells("ranges", &[0x7e00_0000, 0, 0xfe00_0000, 0x0180_0000])
            .begin("serial@7e215040")
            .cells("reg", &[0x7e21_5040, 0x40])
            .end()
            .begin("off@7e000000")
            .prop("status", b"disabled\0")
            .cells("reg", &[0x7e00_0000, 0x100])
            .end()
            .begin("outside@10000")
            .cells("reg", &[0x10000, 0x100])
            .end()
            .end()
            .begin("nobus")
            .cells("#address-cells", &[1])
            .cells("#size-cells", &[1])
            .begin("dev@100")
            .cells("reg", &[0x100, 0x10])
            .end()
            .end()
            .end();
        b.finish()
    }

    #[test]
    fn memory_regions_come_from_enabled_memory_nodes_without_allocating() {
        let blob = sample();
        let mut seen = Vec::new();
        let n = for_each_memory(&blob, |b, s| seen.push((b, s)));
        assert_eq!(n, 2);
        assert_eq!(
            seen,
            [(0x4000_0000, 0x4000_0000), (0x1_0000_0000, 0x1000_0000)]
        );
    }

    #[test]
    fn initrd_range_comes_from_chosen() {
        let blob = Builder::new()
            .begin("")
            .begin("memory@0")
            .cells("linux,initrd-start", &[0x1])
            .end()
            .begin("chosen")
            .cells("linux,initrd-start", &[0, 0x4800_0000])
            .cells("linux,initrd-end", &[0x4810_0000])
            .begin("sub")
            .cells("linux,initrd-end", &[0x5000_0000])
            .end()
            .end()
            .end()
            .finish();
        assert_eq!(initrd(&blob), Some((0x4800_0000, 0x10_0000)));
        let none = Builder::new().begin("").begin("chosen").end().end().finish();
        assert_eq!(initrd(&none), None);
        let backwards = Builder::new()
            .begin("")
            .begin("chosen")
            .cells("linux,initrd-start", &[0x2000])
            .cells("linux,initrd-end", &[0x1000])
            .end()
            .end()
            .finish();
        assert_eq!(initrd(&backwards), None);
        assert_eq!(initrd(&[]), None);
    }

    #[test]
    fn devices_are_listed_with_translated_addresses() {
        let blob = sample();
        let tree = Tree::new(&blob);
        let devs = tree.devices();
        let got: Vec<(&str, Option<u64>, u64)> = devs
            .iter()
            .map(|d| (d.path.as_str(), d.base, d.size))
            .collect();
        assert_eq!(
            got,
            [
                ("/pl011@9000000", Some(0x900_0000), 0x1000),
                ("/soc/serial@7e215040", Some(0xfe21_5040), 0x40),
                ("/soc/outside@10000", None, 0x100),
                ("/nobus/dev@100", None, 0x10),
            ]
        );
    }

    #[test]
    fn hypervisor_node_is_found_by_compatible() {
        let blob = sample();
        let tree = Tree::new(&blob);
        assert!(tree.is_compatible("/hypervisor", "rusthv,hypervisor"));
        assert!(!tree.is_compatible("/hypervisor", "rusthv"));
        assert!(!tree.is_compatible("/nothere", "rusthv,hypervisor"));
    }

    #[test]
    fn properties_are_found_by_node_and_name() {
        let blob = sample();
        let tree = Tree::new(&blob);
        assert_eq!(tree.property("/hypervisor", "compatible"), Some(&b"other\0rusthv,hypervisor\0"[..]));
        assert_eq!(tree.property("/soc/off@7e000000", "status"), Some(&b"disabled\0"[..]));
        assert_eq!(tree.property("/soc", "broken-cd"), None);
        assert_eq!(tree.property("/nothere", "reg"), None);
    }

    #[test]
    fn malformed_blobs_end_the_walk_without_panicking() {
        let blob = sample();
        assert_eq!(total_size(&blob), Some(blob.len()));
        for cut in 0..blob.len() {
            let b = &blob[..cut];
            let _ = for_each_memory(b, |_, _| {});
            let _ = Tree::new(b).devices();
        }
        let mut bad = blob.clone();
        for i in 0..bad.len() {
            let saved = bad[i];
            bad[i] = 0xff;
            let _ = for_each_memory(&bad, |_, _| {});
            let _ = Tree::new(&bad).devices();
            bad[i] = saved;
        }
        assert_eq!(for_each_memory(b"not a device tree", |_, _| {}), 0);
        assert!(Tree::new(&[]).devices().is_empty());
    }

    #[test]
    fn the_raspberry_pi_tree_lists_the_mini_uart_at_its_cpu_address() {
        // Optional fixture (scripts/test.sh sets it): QEMU's raspi4b tree.
        let Ok(path) = std::env::var("HV_PI4_DTB") else {
            return;
        };
        let Ok(blob) = std::fs::read(path) else {
            return;
        };
        let devs = Tree::new(&blob).devices();
        assert!(devs
            .iter()
            .any(|d| d.path == "/soc/serial@7e215040" && d.base == Some(0xfe21_5040)));
        let mut mem = 0;
        for_each_memory(&blob, |_, s| mem += s);
        assert!(mem > 0);
    }
}
