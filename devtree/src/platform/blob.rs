//! Up-front validation of a raw blob, so the `fdt` crate only ever sees a well-formed one.
//!
//! `fdt` 0.1.5 panics on many malformed inputs (slicing past the end for bad
//! header offsets or property lengths, `expect` on bad string offsets and
//! names, `assert` when a property follows a subnode or a `FDT_NOP` sits
//! between properties, overflowing its 64-entry parent stack, short
//! `#address-cells`), and `Fdt::find_node` recurses forever on an alias that
//! names itself. So [`check`] walks the whole structure block token by token,
//! rejects anything the spec does not allow, and re-emits a canonical blob
//! (no `FDT_NOP`s, empty reservation map, v17 header) for `fdt` to parse. The
//! reservation map is parsed here instead. The format's constants and
//! reads are `crate::fdt_format`'s.

use alloc::vec::Vec;

use super::error::{ErrorKind, PlatformError};
use crate::fdt_format::token::{BEGIN_NODE, END, END_NODE, NOP, PROP};
use crate::fdt_format::{be64, cstr, Header, LAST_COMP_VERSION, MAGIC, VERSION};

const HEADER_LEN: usize = Header::LEN;
/// Deepest node nesting accepted (root = 1); `fdt`'s own limit is 63.
const MAX_DEPTH: usize = 32;

/// A validated blob: the canonical copy for `fdt` and the `/memreserve/` entries.
pub(crate) struct Checked {
    pub canonical: Vec<u8>,
    /// `(address, size)` of each non-empty reservation map entry.
    pub memreserve: Vec<(u64, u64)>,
}

impl Checked {
    /// The `fdt` crate's view of the canonical blob (which it can always
    /// read: `check` built it).
    pub fn fdt(&self) -> Result<fdt::Fdt<'_>, PlatformError> {
        fdt::Fdt::new(&self.canonical).map_err(|_| {
            PlatformError::new(ErrorKind::BadStructure { offset: 0, problem: "rejected by the fdt parser" })
        })
    }
}

pub(crate) use crate::fdt_format::be32;

fn header_err(field: &'static str, value: u32, problem: &'static str) -> PlatformError {
    ErrorKind::BadHeader { field, value, problem }.into()
}

fn structure_err(offset: usize, problem: &'static str) -> PlatformError {
    ErrorKind::BadStructure { offset, problem }.into()
}

/// `[off, off + len)` as a range inside `total`, or a header error.
fn block(
    field: &'static str,
    off: u32,
    len: u32,
    total: usize,
) -> Result<(usize, usize), PlatformError> {
    let start = off as usize;
    match start.checked_add(len as usize) {
        Some(end) if start >= HEADER_LEN && end <= total => Ok((start, end)),
        _ => Err(header_err(field, off, "block lies outside the blob")),
    }
}

/// Rounds `n` up to a multiple of 4.
fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// Validates `blob` and returns its canonical form and reservations.
pub(crate) fn check(blob: &[u8]) -> Result<Checked, PlatformError> {
    let magic = be32(blob, 0).ok_or(ErrorKind::TooShort { have: blob.len() })?;
    if magic != MAGIC {
        return Err(ErrorKind::BadMagic(magic).into());
    }
    if blob.len() < HEADER_LEN {
        return Err(ErrorKind::TooShort { have: blob.len() }.into());
    }
    let header = Header::read(blob).ok_or(ErrorKind::TooShort { have: blob.len() })?;
    let totalsize = header.totalsize;
    let blob = blob
        .get(..totalsize as usize)
        .ok_or(ErrorKind::Truncated { totalsize, have: blob.len() })?;
    let total = blob.len();
    if total < HEADER_LEN {
        return Err(header_err("totalsize", totalsize, "smaller than the header"));
    }
    let (off_struct, off_strings, off_rsv) = (header.off_dt_struct, header.off_dt_strings, header.off_mem_rsvmap);
    let (version, last_comp) = (header.version, header.last_comp_version);
    if version < 16 {
        return Err(header_err("version", version, "unsupported (need 16 or later)"));
    }
    if last_comp > VERSION {
        return Err(header_err("last_comp_version", last_comp, "unsupported (need 17 or earlier)"));
    }
    if !off_struct.is_multiple_of(4) {
        return Err(header_err("off_dt_struct", off_struct, "not 4-byte aligned"));
    }
    if !off_rsv.is_multiple_of(8) {
        return Err(header_err("off_mem_rsvmap", off_rsv, "not 8-byte aligned"));
    }
    // Version 16 has no size_dt_struct: the block may run to the end.
    let size_struct =
        if version >= 17 { header.size_dt_struct } else { (total as u32).saturating_sub(off_struct) };
    let (s_start, s_end) = block("off_dt_struct", off_struct, size_struct, total)?;
    let (t_start, t_end) = block("off_dt_strings", off_strings, header.size_dt_strings, total)?;
    block("off_mem_rsvmap", off_rsv, 0, total)?;

    let memreserve = reservations(blob, off_rsv as usize)?;
    let strings = blob.get(t_start..t_end).unwrap_or_default();
    let structure = walk(blob.get(s_start..s_end).unwrap_or_default(), s_start, strings)?;

    let canonical = assemble(&structure, strings, header.boot_cpuid_phys).ok_or(header_err(
        "totalsize",
        totalsize,
        "too large",
    ))?;
    Ok(Checked { canonical, memreserve })
}

/// Parses the reservation map at `off`, up to its all-zero terminator.
fn reservations(blob: &[u8], mut off: usize) -> Result<Vec<(u64, u64)>, PlatformError> {
    let mut out = Vec::new();
    loop {
        let entry = be64(blob, off).zip(off.checked_add(8).and_then(|o| be64(blob, o)));
        match entry {
            None => return Err(structure_err(off, "reservation map has no terminating entry")),
            Some((0, 0)) => return Ok(out),
            Some((_, 0)) => {}
            Some(e) => out.push(e),
        }
        off = off.checked_add(16).ok_or(structure_err(off, "reservation map too long"))?;
    }
}

/// Checks the structure block `s` (at blob offset `base`) and returns it without `FDT_NOP`s.
fn walk(s: &[u8], base: usize, strings: &[u8]) -> Result<Vec<u8>, PlatformError> {
    let mut out = Vec::with_capacity(s.len());
    let mut pos = 0usize;
    let mut depth = 0usize;
    let mut seen_root = false;
    // Properties must come before a node's subnodes.
    let mut props_allowed = false;
    loop {
        let bad = |problem| structure_err(base.saturating_add(pos), problem);
        let token = be32(s, pos).ok_or(bad("structure block ends without FDT_END"))?;
        let next = match token {
            NOP => pos.checked_add(4),
            BEGIN_NODE => {
                if seen_root && depth == 0 {
                    return Err(bad("more than one root node"));
                }
                let name_at = pos.checked_add(4).ok_or(bad("overflow"))?;
                let name = cstr(s, name_at).ok_or(bad("node name unterminated or not UTF-8"))?;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(bad("nodes nested too deeply"));
                }
                seen_root = true;
                props_allowed = true;
                name_at.checked_add(name.len() + 1).and_then(align4)
            }
            END_NODE => {
                if depth == 0 {
                    return Err(bad("FDT_END_NODE without a node"));
                }
                depth -= 1;
                props_allowed = false;
                pos.checked_add(4)
            }
            PROP => {
                if !props_allowed {
                    return Err(bad("property outside a node or after a subnode"));
                }
                let len = be32(s, pos.saturating_add(4)).ok_or(bad("truncated property"))?;
                let name_off = be32(s, pos.saturating_add(8)).ok_or(bad("truncated property"))?;
                let name = cstr(strings, name_off as usize)
                    .ok_or(bad("property name offset outside strings block or not UTF-8"))?;
                let end = pos.checked_add(12).and_then(|v| v.checked_add(len as usize));
                let end = end
                    .filter(|&e| e <= s.len())
                    .ok_or(bad("property value runs past the block"))?;
                if matches!(name, "#address-cells" | "#size-cells") && len != 4 {
                    return Err(bad("#address-cells or #size-cells is not one cell"));
                }
                align4(end)
            }
            END => {
                if depth != 0 || !seen_root {
                    return Err(bad("FDT_END before the root node is closed"));
                }
                out.extend_from_slice(&END.to_be_bytes());
                return Ok(out);
            }
            _ => return Err(bad("unknown token")),
        };
        let next = next.ok_or(bad("overflow"))?;
        if token != NOP {
            let chunk = s.get(pos..next).ok_or(bad("structure block ends without FDT_END"))?;
            out.extend_from_slice(chunk);
        }
        pos = next;
    }
}

/// A v17 blob: header, empty reservation map, `structure`, `strings`.
fn assemble(structure: &[u8], strings: &[u8], boot_cpuid: u32) -> Option<Vec<u8>> {
    let off_struct = HEADER_LEN + 16;
    let off_strings = off_struct.checked_add(structure.len())?;
    let total = off_strings.checked_add(strings.len())?;
    let header = Header {
        totalsize: u32::try_from(total).ok()?,
        off_dt_struct: off_struct as u32,
        off_dt_strings: u32::try_from(off_strings).ok()?,
        off_mem_rsvmap: HEADER_LEN as u32,
        version: VERSION,
        last_comp_version: LAST_COMP_VERSION,
        boot_cpuid_phys: boot_cpuid,
        size_dt_strings: u32::try_from(strings.len()).ok()?,
        size_dt_struct: u32::try_from(structure.len()).ok()?,
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header.to_bytes());
    out.resize(off_struct, 0);
    out.extend_from_slice(structure);
    out.extend_from_slice(strings);
    Some(out)
}
