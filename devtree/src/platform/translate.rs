//! `reg` decoding and bus-to-CPU address translation through each parent's `ranges`.

use alloc::format;
use alloc::vec::Vec;

use super::error::{ErrorKind, PlatformError};
use super::tree::{cells, Tree};
use super::MemRegion;
use crate::addr::PhysAddr;

/// Splits `value` into entries of the given cell counts; each count must be at most 2.
pub(crate) fn entries<'v, const N: usize>(
    value: &'v [u8],
    counts: [usize; N],
) -> Result<impl Iterator<Item = [u64; N]> + 'v, ErrorKind> {
    if counts.iter().any(|&c| c > 2) {
        return Err(ErrorKind::BadValue("more than 2 address or size cells"));
    }
    let entry = counts.iter().sum::<usize>() * 4;
    if entry == 0 || value.is_empty() || !value.len().is_multiple_of(entry) {
        return Err(ErrorKind::BadLength { len: value.len(), entry });
    }
    Ok(value.chunks_exact(entry).map(move |chunk| {
        let mut out = [0; N];
        let mut rest = chunk;
        for (slot, &count) in out.iter_mut().zip(counts.iter()) {
            let (head, tail) = rest.split_at_checked(count * 4).unwrap_or_default();
            *slot = cells(head).unwrap_or(0);
            rest = tail;
        }
        out
    }))
}

/// The `reg` entries of node `i`, translated to CPU physical addresses.
///
/// Absent `reg` is `Missing`; every region's end must fit in 64 bits.
pub(crate) fn reg(tree: &Tree<'_>, i: usize) -> Result<Vec<MemRegion>, PlatformError> {
    let err = |kind| tree.prop_err(i, "reg", kind);
    let value = tree.prop(i, "reg").ok_or(err(ErrorKind::Missing))?;
    let bus = tree
        .node(i)
        .and_then(|n| n.parent)
        .ok_or(err(ErrorKind::BadValue("reg on the root node")))?;
    let (ac, sc) = tree.cells(bus);
    if ac == 0 {
        return Err(err(ErrorKind::BadValue("#address-cells of the parent is 0")));
    }
    let mut out = Vec::new();
    for [addr, size] in entries(value, [ac, sc]).map_err(err)? {
        let base = translate(tree, bus, addr, size).map_err(|e| e.at(tree.path(i)).prop("reg"))?;
        out.push(MemRegion::checked(base, size).ok_or(err(ErrorKind::Overflow))?);
    }
    Ok(out)
}

/// Translates `[addr, addr + size)` on the bus of node `bus`'s children up to the root.
pub(crate) fn translate(
    tree: &Tree<'_>,
    mut bus: usize,
    mut addr: u64,
    size: u64,
) -> Result<PhysAddr, PlatformError> {
    while let Some(parent) = tree.node(bus).and_then(|n| n.parent) {
        let path = tree.path(bus);
        let Some(ranges) = tree.prop(bus, "ranges") else {
            return Err(ErrorKind::Untranslatable(format!("bus {path} has no \"ranges\"")).into());
        };
        if !ranges.is_empty() {
            let (child_ac, child_sc) = tree.cells(bus);
            let (parent_ac, _) = tree.cells(parent);
            let mut ranges = entries(ranges, [child_ac, parent_ac, child_sc])
                .map_err(|kind| tree.prop_err(bus, "ranges", kind))?;
            let hit = ranges.find_map(|[child, parent_base, len]| {
                let offset = addr.checked_sub(child)?;
                (offset < len && size <= len - offset).then(|| parent_base.checked_add(offset))
            });
            addr = match hit {
                Some(Some(a)) => a,
                Some(None) => return Err(ErrorKind::Overflow.into()),
                None => {
                    let why =
                        format!("{addr:#x} (size {size:#x}) is outside the \"ranges\" of {path}");
                    return Err(ErrorKind::Untranslatable(why).into());
                }
            };
        }
        bus = parent;
    }
    Ok(PhysAddr::new(addr))
}
