//! Device-tree errors: what went wrong, on which node and property.

use alloc::string::String;
use core::fmt;

/// What is wrong with the device tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The header's magic number is not `0xd00dfeed`.
    BadMagic(u32),
    /// The blob is too short to hold the 40-byte header.
    TooShort { have: usize },
    /// The header's `totalsize` is larger than the blob.
    Truncated { totalsize: u32, have: usize },
    /// A header field is out of range, misaligned or unsupported.
    BadHeader { field: &'static str, value: u32, problem: &'static str },
    /// The structure block or reservation map is malformed at this blob offset.
    BadStructure { offset: usize, problem: &'static str },
    /// A required node or property is absent.
    Missing,
    /// A property's length is not a whole, non-zero number of `entry`-byte entries.
    BadLength { len: usize, entry: usize },
    /// A property value is malformed or out of range.
    BadValue(&'static str),
    /// An address or size computation overflows 64 bits.
    Overflow,
    /// A bus address cannot be translated to a CPU physical address.
    Untranslatable(String),
    /// No `device_type = "memory"` node has a non-empty `reg`.
    NoMemory,
    /// The console UART cannot be found; the string says why.
    NoUart(String),
    /// The console node's `compatible` is not a supported UART.
    UnknownUart(String),
    /// No interrupt controller at all.
    NoGic,
    /// The interrupt controller's `compatible` is not a supported GIC.
    UnknownGic(String),
    /// No enabled node compatible with `arm,armv8-timer`.
    NoTimer,
    /// No enabled `/cpus` child with `device_type = "cpu"`.
    NoCpus,
    /// A value names a method or mechanism this hypervisor does not support.
    Unsupported(String),
}

/// A device-tree error: its kind, plus the node path and property it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformError {
    /// What is wrong.
    pub kind: ErrorKind,
    /// Path of the offending node, if any.
    pub node: Option<String>,
    /// Name of the offending property, if any.
    pub property: Option<&'static str>,
}

impl PlatformError {
    /// An error not (yet) tied to a node.
    pub fn new(kind: ErrorKind) -> Self {
        Self { kind, node: None, property: None }
    }

    /// Attaches the node path.
    pub fn at(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Attaches the property name.
    pub fn prop(mut self, property: &'static str) -> Self {
        self.property = Some(property);
        self
    }
}

impl From<ErrorKind> for PlatformError {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "bad header: magic {m:#010x} (expected {:#010x})", crate::fdt_format::MAGIC),
            Self::TooShort { have } => {
                write!(f, "truncated: blob has {have} bytes, less than the 40-byte header")
            }
            Self::Truncated { totalsize, have } => {
                write!(f, "truncated: header says {totalsize} bytes, blob has {have}")
            }
            Self::BadHeader { field, value, problem } => {
                write!(f, "bad header: {field} = {value:#x}: {problem}")
            }
            Self::BadStructure { offset, problem } => {
                write!(f, "malformed blob at offset {offset:#x}: {problem}")
            }
            Self::Missing => f.write_str("missing"),
            Self::BadLength { len, entry } => {
                write!(f, "bad length {len}: not a non-zero multiple of {entry} bytes")
            }
            Self::BadValue(why) => write!(f, "bad value: {why}"),
            Self::Overflow => f.write_str("address arithmetic overflows 64 bits"),
            Self::Untranslatable(why) => write!(f, "not translatable: {why}"),
            Self::NoMemory => {
                f.write_str("no memory: no device_type = \"memory\" node with a non-empty reg")
            }
            Self::NoUart(why) => write!(f, "no UART found ({why})"),
            Self::UnknownUart(c) => write!(f, "unknown UART \"{c}\""),
            Self::NoGic => f.write_str("no GIC: no enabled interrupt controller"),
            Self::UnknownGic(c) => write!(f, "unknown GIC \"{c}\""),
            Self::NoTimer => {
                f.write_str("no timer: no enabled node compatible with arm,armv8-timer")
            }
            Self::NoCpus => {
                f.write_str("no CPUs: no enabled /cpus child with device_type = \"cpu\"")
            }
            Self::Unsupported(what) => write!(f, "unsupported \"{what}\""),
        }
    }
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("device tree: ")?;
        if let Some(node) = &self.node {
            write!(f, "{node}: ")?;
        }
        if let Some(property) = self.property {
            write!(f, "property \"{property}\": ")?;
        }
        self.kind.fmt(f)
    }
}
