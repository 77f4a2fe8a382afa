//! A flattened device tree (FDT, DTB) writer.
//!
//! [`FdtWriter`] is a streaming builder: [`FdtWriter::begin_node`],
//! [`FdtWriter::property`] and [`FdtWriter::end_node`] append to the
//! structure block, property names are deduplicated into the strings block,
//! and [`FdtWriter::finish`] assembles a version 17 blob (last compatible
//! version 16): 40-byte header, memory reservation block (8-byte aligned,
//! terminated by an all-zero entry), structure block, strings block, with the
//! total size padded to a multiple of 8. Misuse (unbalanced nodes, a
//! property after a subnode or outside any node, a second root, names
//! containing NUL or `/`, a blob beyond a size limit) is an [`WriteError`],
//! never a panic.
//!
//! [`Node`] is an owned node-tree value with a chainable builder API, which
//! [`Node::to_fdt`] serialises through the writer.
//!
//! Hand-written because the `fdt` crate only reads; the format's constants
//! are `crate::fdt_format`'s.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::platform::blob;
use crate::platform::tree::Tree;
use crate::platform::PlatformError;
use crate::fdt_format::token::{BEGIN_NODE, END, END_NODE, NOP, PROP};
use crate::fdt_format::{Header, LAST_COMP_VERSION, VERSION};

const HEADER_LEN: usize = Header::LEN;

/// Why a blob cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// [`FdtWriter::end_node`] with no node open.
    EndWithoutBegin,
    /// [`FdtWriter::finish`] while this many nodes are still open.
    UnclosedNodes(usize),
    /// [`FdtWriter::finish`] before any node was written.
    NoRoot,
    /// A node begun after the root node was closed.
    SecondRoot,
    /// The root node's name must be empty.
    RootNamed,
    /// A property outside any node, or after a subnode of the current node.
    MisplacedProperty,
    /// A node or property name is empty (non-root), or contains NUL or `/`.
    BadName,
    /// A property value or the blob is larger than the format or the caller's limit allows.
    TooLarge,
    /// [`FdtWriter::begin_node`] beyond this nesting depth (root = 1).
    TooDeep(usize),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EndWithoutBegin => f.write_str("end_node without an open node"),
            Self::UnclosedNodes(n) => write!(f, "{n} node(s) not closed"),
            Self::NoRoot => f.write_str("no root node"),
            Self::SecondRoot => f.write_str("a second root node"),
            Self::RootNamed => f.write_str("the root node must have an empty name"),
            Self::MisplacedProperty => f.write_str("property outside a node or after a subnode"),
            Self::BadName => f.write_str("empty name, or name contains NUL or '/'"),
            Self::TooLarge => f.write_str("blob too large"),
            Self::TooDeep(d) => write!(f, "nodes nested deeper than {d}"),
        }
    }
}

/// Deepest nesting accepted (root = 1); the same limit the reader enforces.
pub const MAX_DEPTH: usize = 32;

/// A streaming FDT builder. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct FdtWriter {
    reservations: Vec<(u64, u64)>,
    boot_cpuid_phys: u32,
    structure: Vec<u8>,
    strings: Vec<u8>,
    /// `(name, offset)` of every string in `strings`, for deduplication.
    string_offsets: Vec<(String, u32)>,
    depth: usize,
    root_done: bool,
    /// Whether the current node may still take properties.
    props_allowed: bool,
}

fn push32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

impl FdtWriter {
    /// An empty writer: no nodes, no reservations, `boot_cpuid_phys` 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `/memreserve/` entry (written in call order; size 0 entries are
    /// skipped, since an all-zero entry would terminate the map).
    pub fn reserve(&mut self, address: u64, size: u64) {
        if size != 0 {
            self.reservations.push((address, size));
        }
    }

    /// Sets the header's `boot_cpuid_phys` (the boot CPU's `reg`).
    pub fn boot_cpuid_phys(&mut self, id: u32) {
        self.boot_cpuid_phys = id;
    }

    /// Current nesting depth (0 = outside the root).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Opens a node; the first one is the root and must be named "".
    pub fn begin_node(&mut self, name: &str) -> Result<(), WriteError> {
        if self.depth == 0 {
            if self.root_done {
                return Err(WriteError::SecondRoot);
            }
            if !name.is_empty() {
                return Err(WriteError::RootNamed);
            }
        } else if name.is_empty() || name.contains(['\0', '/']) {
            return Err(WriteError::BadName);
        }
        if self.depth >= MAX_DEPTH {
            return Err(WriteError::TooDeep(MAX_DEPTH));
        }
        push32(&mut self.structure, BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        pad4(&mut self.structure);
        self.depth += 1;
        self.props_allowed = true;
        Ok(())
    }

    /// Adds property `name = value` to the open node, before any subnode.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), WriteError> {
        if self.depth == 0 || !self.props_allowed {
            return Err(WriteError::MisplacedProperty);
        }
        if name.is_empty() || name.contains(['\0', '/']) {
            return Err(WriteError::BadName);
        }
        let len = u32::try_from(value.len()).map_err(|_| WriteError::TooLarge)?;
        let off = self.string_offset(name)?;
        push32(&mut self.structure, PROP);
        push32(&mut self.structure, len);
        push32(&mut self.structure, off);
        self.structure.extend_from_slice(value);
        pad4(&mut self.structure);
        Ok(())
    }

    /// A property of one big-endian cell.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), WriteError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A property of big-endian cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), WriteError> {
        self.property(name, &cells_bytes(cells))
    }

    /// A property of one 64-bit number as two cells.
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), WriteError> {
        self.property(name, &value.to_be_bytes())
    }

    /// A NUL-terminated string property.
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), WriteError> {
        self.property(name, &string_list(&[value]))
    }

    /// A string-list property (each entry NUL-terminated).
    pub fn property_strings(&mut self, name: &str, values: &[&str]) -> Result<(), WriteError> {
        self.property(name, &string_list(values))
    }

    /// An empty (boolean) property.
    pub fn property_empty(&mut self, name: &str) -> Result<(), WriteError> {
        self.property(name, &[])
    }

    /// Writes an `FDT_NOP` token (spec-valid anywhere between tokens; readers skip it).
    pub fn nop(&mut self) {
        push32(&mut self.structure, NOP);
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), WriteError> {
        if self.depth == 0 {
            return Err(WriteError::EndWithoutBegin);
        }
        push32(&mut self.structure, END_NODE);
        self.depth -= 1;
        self.props_allowed = false;
        if self.depth == 0 {
            self.root_done = true;
        }
        Ok(())
    }

    /// Bytes [`FdtWriter::finish`] would produce now (with every open node closed).
    pub fn size_estimate(&self) -> usize {
        let rsv = (self.reservations.len() + 1) * 16;
        let end_tokens = (self.depth + 1) * 4;
        (HEADER_LEN.next_multiple_of(8)
            + rsv
            + self.structure.len()
            + end_tokens
            + self.strings.len())
        .next_multiple_of(8)
    }

    /// The finished blob. Every node must be closed.
    pub fn finish(self) -> Result<Vec<u8>, WriteError> {
        self.finish_limited(u32::MAX as usize)
    }

    /// [`FdtWriter::finish`], failing with [`WriteError::TooLarge`] if the blob would exceed `limit` bytes.
    pub fn finish_limited(mut self, limit: usize) -> Result<Vec<u8>, WriteError> {
        if self.depth != 0 {
            return Err(WriteError::UnclosedNodes(self.depth));
        }
        if !self.root_done {
            return Err(WriteError::NoRoot);
        }
        if self.size_estimate() > limit {
            return Err(WriteError::TooLarge);
        }
        push32(&mut self.structure, END);
        let off_rsv = HEADER_LEN.next_multiple_of(8);
        let off_struct = off_rsv + (self.reservations.len() + 1) * 16;
        let off_strings = off_struct + self.structure.len();
        let total = (off_strings + self.strings.len()).next_multiple_of(8);
        let as32 = |v: usize| u32::try_from(v).map_err(|_| WriteError::TooLarge);
        let header = Header {
            totalsize: as32(total)?,
            off_dt_struct: as32(off_struct)?,
            off_dt_strings: as32(off_strings)?,
            off_mem_rsvmap: as32(off_rsv)?,
            version: VERSION,
            last_comp_version: LAST_COMP_VERSION,
            boot_cpuid_phys: self.boot_cpuid_phys,
            size_dt_strings: as32(self.strings.len())?,
            size_dt_struct: as32(self.structure.len())?,
        };
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&header.to_bytes());
        out.resize(off_rsv, 0);
        for &(a, s) in self.reservations.iter().chain([&(0, 0)]) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&self.structure);
        out.extend_from_slice(&self.strings);
        out.resize(total, 0);
        Ok(out)
    }

    /// The offset of `name` in the strings block, adding it if new.
    fn string_offset(&mut self, name: &str) -> Result<u32, WriteError> {
        if let Some(&(_, off)) = self.string_offsets.iter().find(|(s, _)| s == name) {
            return Ok(off);
        }
        let off = u32::try_from(self.strings.len()).map_err(|_| WriteError::TooLarge)?;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.string_offsets.push((name.into(), off));
        Ok(off)
    }
}

/// Big-endian cells as bytes.
pub fn cells_bytes(cells: &[u32]) -> Vec<u8> {
    cells.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// A string list as a property value: each entry followed by NUL.
pub fn string_list(values: &[&str]) -> Vec<u8> {
    values.iter().flat_map(|v| v.bytes().chain([0])).collect()
}

/// An owned device-tree node: name (with unit address), properties in order, children in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Node name; "" for the root.
    pub name: String,
    /// `(name, value)` pairs, in order.
    pub props: Vec<(String, Vec<u8>)>,
    /// Subnodes, in order.
    pub children: Vec<Node>,
}

impl Node {
    /// An empty node called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Sets property `name` (replacing an existing one in place, else appending).
    pub fn prop(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.set(name, value.as_ref().to_vec());
        self
    }

    /// Sets property `name` in place.
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.props.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.props.push((name.into(), value)),
        }
    }

    /// Removes property and child `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.props.retain(|(k, _)| k != name);
        self.children.retain(|k| k.name != name);
        self
    }

    /// Appends a child.
    pub fn child(mut self, kid: Node) -> Self {
        self.children.push(kid);
        self
    }

    /// The value of property `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Replaces the first child called `name` by `f(child)`; unchanged if there is none.
    pub fn edit(mut self, name: &str, f: impl FnOnce(Node) -> Node) -> Self {
        if let Some(kid) = self.children.iter_mut().find(|k| k.name == name) {
            *kid = f(core::mem::take(kid));
        }
        self
    }

    /// Writes this node and its subtree into `w`.
    pub fn write(&self, w: &mut FdtWriter) -> Result<(), WriteError> {
        w.begin_node(&self.name)?;
        for (name, value) in &self.props {
            w.property(name, value)?;
        }
        for kid in &self.children {
            kid.write(w)?;
        }
        w.end_node()
    }

    /// A blob with this node as the root, the given reservations and boot CPU 0.
    pub fn to_fdt(&self, memreserve: &[(u64, u64)]) -> Result<Vec<u8>, WriteError> {
        let mut w = FdtWriter::new();
        memreserve.iter().for_each(|&(a, s)| w.reserve(a, s));
        self.write(&mut w)?;
        w.finish()
    }
}

/// A whole parsed blob as owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fdt {
    /// The root node.
    pub root: Node,
    /// Non-empty `/memreserve/` entries `(address, size)`, in blob order.
    pub memreserve: Vec<(u64, u64)>,
    /// The header's `boot_cpuid_phys`.
    pub boot_cpuid_phys: u32,
}

impl Fdt {
    /// Reads a blob (validated in full first, so malformed input is an error, never a panic).
    pub fn parse(blob: &[u8]) -> Result<Self, PlatformError> {
        let checked = blob::check(blob)?;
        let fdt = checked.fdt()?;
        let tree = Tree::new(&fdt);
        let boot_cpuid_phys = blob::be32(&checked.canonical, 28).unwrap_or(0);
        Ok(Self {
            root: owned(&tree, 0),
            memreserve: checked.memreserve,
            boot_cpuid_phys,
        })
    }

    /// Serialises back to a blob.
    pub fn to_blob(&self) -> Result<Vec<u8>, WriteError> {
        let mut w = FdtWriter::new();
        self.memreserve.iter().for_each(|&(a, s)| w.reserve(a, s));
        w.boot_cpuid_phys(self.boot_cpuid_phys);
        self.root.write(&mut w)?;
        w.finish()
    }
}

/// The last component of a node path ("" for the root).
pub(crate) fn node_name(path: &str) -> &str {
    if path == "/" {
        ""
    } else {
        path.rsplit('/').next().unwrap_or("")
    }
}

/// Node `i` of `tree` and its subtree as owned values.
fn owned(tree: &Tree<'_>, i: usize) -> Node {
    let Some(node) = tree.node(i) else {
        return Node::default();
    };
    Node {
        name: node_name(&node.path).into(),
        props: node
            .props
            .iter()
            .map(|p| (p.name.into(), p.value.to_vec()))
            .collect(),
        children: tree.children(i).map(|c| owned(tree, c)).collect(),
    }
}

#[cfg(test)]
mod tests;
