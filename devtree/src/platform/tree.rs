//! A flat, parent-linked list of the tree's nodes, read with `fdt`, and typed property access.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use fdt::node::{FdtNode, NodeProperty};
use fdt::Fdt;

use super::blob::be32;
use super::error::{ErrorKind, PlatformError};

/// One node: its full path, its parent's index and its properties.
pub(crate) struct Node<'a> {
    pub path: String,
    pub parent: Option<usize>,
    pub props: Vec<NodeProperty<'a>>,
}

/// All nodes in tree (depth-first) order; index 0 is the root.
pub(crate) struct Tree<'a> {
    pub nodes: Vec<Node<'a>>,
}

impl<'a> Tree<'a> {
    /// Reads every node of a blob that `blob::check` has validated.
    pub fn new(fdt: &Fdt<'a>) -> Self {
        let mut tree = Tree { nodes: Vec::new() };
        if let Some(root) = fdt.all_nodes().next() {
            tree.add(root, String::from("/"), None);
        }
        tree
    }

    fn add(&mut self, node: FdtNode<'_, 'a>, path: String, parent: Option<usize>) {
        let index = self.nodes.len();
        let prefix = if parent.is_none() { String::new() } else { path.clone() };
        self.nodes.push(Node { path, parent, props: node.properties().collect() });
        for child in node.children() {
            self.add(child, format!("{prefix}/{}", child.name), Some(index));
        }
    }

    /// The node at `i` (an index this tree handed out).
    pub fn node(&self, i: usize) -> Option<&Node<'a>> {
        self.nodes.get(i)
    }

    /// The path of node `i`, or "" for a bad index.
    pub fn path(&self, i: usize) -> &str {
        self.node(i).map_or("", |n| n.path.as_str())
    }

    /// An error about node `i`.
    pub fn err(&self, i: usize, kind: ErrorKind) -> PlatformError {
        PlatformError::new(kind).at(self.path(i))
    }

    /// An error about property `prop` of node `i`.
    pub fn prop_err(&self, i: usize, prop: &'static str, kind: ErrorKind) -> PlatformError {
        self.err(i, kind).prop(prop)
    }

    /// The node at `path`; a component without `@` also matches a name with a unit address.
    pub fn find(&self, path: &str) -> Option<usize> {
        let want = path.trim_end_matches('/');
        self.nodes.iter().position(|n| {
            let have = n.path.trim_end_matches('/');
            have.split('/').count() == want.split('/').count()
                && have
                    .split('/')
                    .zip(want.split('/'))
                    .all(|(h, w)| h == w || (!w.contains('@') && h.split('@').next() == Some(w)))
        })
    }

    /// Direct children of node `i`, in tree order.
    pub fn children(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(move |&c| self.nodes.get(c).and_then(|n| n.parent) == Some(i))
    }

    /// Raw value of property `name` of node `i`.
    pub fn prop(&self, i: usize, name: &str) -> Option<&'a [u8]> {
        self.node(i)?.props.iter().find(|p| p.name == name).map(|p| p.value)
    }

    /// Property `name` as a string (up to the first NUL).
    pub fn string(&self, i: usize, name: &'static str) -> Result<Option<&'a str>, PlatformError> {
        self.string_dyn(i, name).map_err(|e| e.prop(name))
    }

    /// [`Tree::string`] for a property name not known statically (error lacks the name).
    pub fn string_dyn(&self, i: usize, name: &str) -> Result<Option<&'a str>, PlatformError> {
        let Some(value) = self.prop(i, name) else { return Ok(None) };
        let text = value.split(|&b| b == 0).next().unwrap_or_default();
        core::str::from_utf8(text)
            .map(Some)
            .map_err(|_| self.err(i, ErrorKind::BadValue("not a UTF-8 string")))
    }

    /// Property `name` as a string list; entries that are not UTF-8 are skipped.
    pub fn strings(&self, i: usize, name: &str) -> impl Iterator<Item = &'a str> {
        self.prop(i, name)
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .filter_map(|s| core::str::from_utf8(s).ok())
    }

    /// Whether `compatible` of node `i` contains any of `with`.
    pub fn compatible(&self, i: usize, with: &[&str]) -> bool {
        self.strings(i, "compatible").any(|c| with.contains(&c))
    }

    /// Property `name` as one cell; absent is `Ok(None)`.
    pub fn u32(&self, i: usize, name: &'static str) -> Result<Option<u32>, PlatformError> {
        match self.prop(i, name) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(be32(v, 0)),
            Some(v) => Err(self.prop_err(i, name, ErrorKind::BadLength { len: v.len(), entry: 4 })),
        }
    }

    /// Property `name` as one or two cells (a 32- or 64-bit number); absent is `Ok(None)`.
    pub fn u32_or_u64(&self, i: usize, name: &'static str) -> Result<Option<u64>, PlatformError> {
        match self.prop(i, name) {
            None => Ok(None),
            Some(v) if v.len() == 4 || v.len() == 8 => Ok(cells(v)),
            Some(v) => Err(self.prop_err(i, name, ErrorKind::BadLength { len: v.len(), entry: 4 })),
        }
    }

    /// `#address-cells` and `#size-cells` of node `i` (for its children), default 2 and 1.
    pub fn cells(&self, i: usize) -> (usize, usize) {
        let get = |name, default| {
            self.prop(i, name).and_then(|v| be32(v, 0)).map_or(default, |c| c as usize)
        };
        (get("#address-cells", 2), get("#size-cells", 1))
    }

    /// Whether node `i` is enabled: `status` absent, "okay" or "ok".
    pub fn enabled(&self, i: usize) -> bool {
        matches!(self.string_dyn(i, "status"), Ok(None | Some("okay" | "ok")))
    }

    /// The node whose `phandle` is `phandle`.
    pub fn by_phandle(&self, phandle: u32) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            ["phandle", "linux,phandle"].iter().any(|p| {
                self.prop(i, p).filter(|v| v.len() == 4).and_then(|v| be32(v, 0)) == Some(phandle)
            })
        })
    }

    /// The interrupt parent of node `i`: its own or nearest ancestor's `interrupt-parent`.
    pub fn interrupt_parent(&self, i: usize) -> Option<usize> {
        let mut at = Some(i);
        while let Some(n) = at {
            if let Some(v) = self.prop(n, "interrupt-parent") {
                return be32(v, 0).and_then(|p| self.by_phandle(p));
            }
            at = self.node(n)?.parent;
        }
        None
    }
}

/// A big-endian number of 0, 1 or 2 cells; `None` for other lengths.
pub(crate) fn cells(v: &[u8]) -> Option<u64> {
    match v.len() {
        0 => Some(0),
        4 => be32(v, 0).map(u64::from),
        8 => Some((u64::from(be32(v, 0)?) << 32) | u64::from(be32(v, 4)?)),
        _ => None,
    }
}
