//! The identity map's translation tables (VMSAv8-64, 4 KiB granule), built as
//! plain data so the layout is tested on the host.
//!
//! Policy: one level-1 table covers the 39-bit address space (T0SZ = 25,
//! 512 entries of 1 GiB). A GiB wholly inside `/memory` is one Normal
//! write-back cacheable block; a GiB with no memory is one Device-nGnRE,
//! execute-never block. A GiB that memory covers only partly (the Raspberry
//! Pi's top GiB holds both RAM and the peripherals) points to a level-2 table
//! of 2 MiB blocks, classified the same way, where a 2 MiB block overlapping
//! memory at all counts as memory. All blocks are EL1 read-write; nothing is
//! mapped at EL0.
#![forbid(unsafe_code)]

/// Entries per table.
pub const ENTRIES: usize = 512;
pub const L1_BLOCK: u64 = 1 << 30;
pub const L2_BLOCK: u64 = 1 << 21;
/// Input address bits: 64 - T0SZ.
pub const VA_BITS: u32 = 39;

/// MAIR_EL1 index 0: Normal, inner/outer write-back non-transient, read/write-allocate.
pub const MAIR_NORMAL_INDEX: u64 = 0;
/// MAIR_EL1 index 1: Device-nGnRE.
pub const MAIR_DEVICE_INDEX: u64 = 1;
/// The MAIR_EL1 value matching the two indices above.
pub const MAIR_VALUE: u64 = 0xff | (0x04 << 8);

const VALID: u64 = 1 << 0;
const TABLE: u64 = 1 << 1;
const ATTR_SHIFT: u64 = 2;
const SH_INNER: u64 = 0b11 << 8;
const AF: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Memory type of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Normal,
    Device,
}

/// A level-1 or level-2 block descriptor for `pa` (aligned to the block size).
pub const fn block(pa: u64, attr: Attr) -> u64 {
    let common = VALID | AF | (pa & ADDR_MASK);
    match attr {
        Attr::Normal => common | (MAIR_NORMAL_INDEX << ATTR_SHIFT) | SH_INNER | UXN,
        Attr::Device => common | (MAIR_DEVICE_INDEX << ATTR_SHIFT) | PXN | UXN,
    }
}

/// A table descriptor pointing at the next-level table at `pa`.
pub const fn table(pa: u64) -> u64 {
    VALID | TABLE | (pa & ADDR_MASK)
}

/// How much of `[start, start + len)` the regions cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    None,
    Partial,
    Full,
}

/// Coverage of `[start, start + len)` by `regions` (`(base, size)`, possibly overlapping).
pub fn coverage(start: u64, len: u64, regions: &[(u64, u64)]) -> Coverage {
    let end = start.saturating_add(len);
    let mut covered = 0u64;
    let mut any = false;
    for &(base, size) in regions {
        let (lo, hi) = (base.max(start), base.saturating_add(size).min(end));
        if lo < hi {
            any = true;
            covered = covered.saturating_add(hi - lo);
        }
    }
    // Overlapping regions could overcount; a hole check settles "full".
    if !any {
        Coverage::None
    } else if covered >= len && fully_covered(start, end, regions) {
        Coverage::Full
    } else {
        Coverage::Partial
    }
}

fn fully_covered(start: u64, end: u64, regions: &[(u64, u64)]) -> bool {
    let mut at = start;
    'outer: while at < end {
        for &(base, size) in regions {
            let top = base.saturating_add(size);
            if base <= at && at < top {
                at = top;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// Fills `l1` (and as many of `l2` as needed, whose physical addresses
/// `l2_pa` gives) with the identity map of `memory`. Returns how many level-2
/// tables were used, or `Err(n)` with the number of partly-covered GiBs that
/// found no free level-2 table (those are mapped Normal whole).
pub fn build(
    memory: &[(u64, u64)],
    l1: &mut [u64; ENTRIES],
    l2: &mut [[u64; ENTRIES]],
    l2_pa: impl Fn(usize) -> u64,
) -> Result<usize, usize> {
    let mut used = 0;
    let mut missing = 0;
    for (i, entry) in l1.iter_mut().enumerate() {
        let base = i as u64 * L1_BLOCK;
        *entry = match coverage(base, L1_BLOCK, memory) {
            Coverage::None => block(base, Attr::Device),
            Coverage::Full => block(base, Attr::Normal),
            Coverage::Partial => match l2.get_mut(used) {
                Some(t) => {
                    for (j, e) in t.iter_mut().enumerate() {
                        let pa = base + j as u64 * L2_BLOCK;
                        let attr = match coverage(pa, L2_BLOCK, memory) {
                            Coverage::None => Attr::Device,
                            _ => Attr::Normal,
                        };
                        *e = block(pa, attr);
                    }
                    used += 1;
                    table(l2_pa(used - 1))
                }
                None => {
                    missing += 1;
                    block(base, Attr::Normal)
                }
            },
        };
    }
    if missing == 0 {
        Ok(used)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = L1_BLOCK;

    fn attr_of(desc: u64) -> Option<Attr> {
        if desc & 0b11 != 0b01 {
            return None;
        }
        match (desc >> ATTR_SHIFT) & 0b111 {
            MAIR_NORMAL_INDEX => Some(Attr::Normal),
            MAIR_DEVICE_INDEX => Some(Attr::Device),
            _ => None,
        }
    }

    #[test]
    fn descriptors_have_the_architected_bits() {
        let n = block(0x4000_0000, Attr::Normal);
        assert_eq!(n & 0b11, 0b01, "block");
        assert_ne!(n & AF, 0, "access flag set, or the first access faults");
        assert_eq!(n & (0b11 << 6), 0, "AP = EL1 read-write");
        assert_eq!(n & PXN, 0, "RAM is executable at EL1");
        assert_eq!(n & ADDR_MASK, 0x4000_0000);
        let d = block(0x0800_0000 & !(L2_BLOCK - 1), Attr::Device);
        assert_ne!(d & PXN, 0, "devices are execute-never");
        assert_eq!(table(0x4010_3000), 0x4010_3003);
    }

    #[test]
    fn qemu_virt_ram_gib_is_normal_and_the_rest_device() {
        let mut l1 = [0; ENTRIES];
        let mut l2 = [[0; ENTRIES]; 2];
        assert_eq!(
            build(&[(0x4000_0000, GIB)], &mut l1, &mut l2, |i| 0x1000
                * i as u64),
            Ok(0)
        );
        assert_eq!(attr_of(l1[0]), Some(Attr::Device), "GIC and UART");
        assert_eq!(attr_of(l1[1]), Some(Attr::Normal));
        assert_eq!(attr_of(l1[2]), Some(Attr::Device));
        assert_eq!(attr_of(l1[511]), Some(Attr::Device));
        assert_eq!(l1[3] & ADDR_MASK, 3 * GIB);
    }

    #[test]
    fn a_gib_shared_by_ram_and_devices_is_split_into_2mib_blocks() {
        // Raspberry Pi 4 (2 GiB): RAM up to 0xfc00_0000, peripherals above.
        let mem = [(0, 0x3b40_0000), (0x4000_0000, 0xbc00_0000)];
        let mut l1 = [0; ENTRIES];
        let mut l2 = [[0; ENTRIES]; 4];
        assert_eq!(
            build(&mem, &mut l1, &mut l2, |i| 0x8000_0000 + 0x1000 * i as u64),
            Ok(2)
        );
        assert_eq!(l1[0], table(0x8000_0000));
        assert_eq!(attr_of(l1[1]), Some(Attr::Normal));
        assert_eq!(attr_of(l1[2]), Some(Attr::Normal));
        assert_eq!(l1[3], table(0x8000_1000));
        let top = &l2[1];
        assert_eq!(attr_of(top[0]), Some(Attr::Normal));
        let uart = ((0xfe21_5040 - 3 * GIB) / L2_BLOCK) as usize;
        assert_eq!(attr_of(top[uart]), Some(Attr::Device));
        assert_eq!(top[uart] & ADDR_MASK, 0xfe20_0000);
        let last_ram = ((0xfc00_0000 - 3 * GIB) / L2_BLOCK) as usize - 1;
        assert_eq!(attr_of(top[last_ram]), Some(Attr::Normal));
        assert_eq!(attr_of(top[last_ram + 1]), Some(Attr::Device));
        assert_eq!(
            attr_of(l2[0][0x3b40_0000 / L2_BLOCK as usize]),
            Some(Attr::Device)
        );
    }

    #[test]
    fn running_out_of_level2_tables_is_reported() {
        let mem = [(0x100_0000, 0x100_0000), (GIB + 0x100_0000, 0x100_0000)];
        let mut l1 = [0; ENTRIES];
        let mut l2 = [[0; ENTRIES]; 1];
        assert_eq!(build(&mem, &mut l1, &mut l2, |_| 0), Err(1));
        assert_eq!(attr_of(l1[1]), Some(Attr::Normal));
    }

    #[test]
    fn coverage_handles_overlaps_and_holes() {
        assert_eq!(coverage(0, 100, &[(0, 60), (40, 60)]), Coverage::Full);
        assert_eq!(coverage(0, 100, &[(0, 60), (0, 60)]), Coverage::Partial);
        assert_eq!(coverage(0, 100, &[(200, 60)]), Coverage::None);
        assert_eq!(
            coverage(u64::MAX - 10, 100, &[(u64::MAX - 5, 5)]),
            Coverage::Partial
        );
    }
}
