//! The guest's own stage-1 translation, walked in software for one purpose:
//! when the guest's MMU walks its tables into an IPA with nothing behind it
//! (a stage-2 fault with ESR_EL2.ISS.S1PTW set), the architecture's answer
//! is a synchronous external abort *on translation table walk*, whose
//! fault status names the stage-1 lookup level (Arm ARM D8.2 "Translation
//! table walk", and the DFSC/IFSC encodings 0b0101LL). ESR_EL2 tells only
//! the stage-2 level, so the stage-1 level is found by redoing the walk up
//! to the descriptor that lies in the faulting page.
//!
//! Pure: the guest's registers and a reader of its RAM are passed in.
//! AArch64 translation regimes with the 4, 16 and 64 KiB granules and up to
//! 48-bit VAs (no FEAT_LPA2 level -1); anything else gives `None`, and the
//! caller reports a plain external abort.
#![forbid(unsafe_code)]

/// The EL1 registers that define the guest's stage-1 regime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stage1Regs {
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub tcr: u64,
}

/// TTBRn_EL1.BADDR (bits [47:1]; bit 0 is CnP).
const TTBR_BADDR: u64 = 0x0000_ffff_ffff_fffe;
/// Output address of a table descriptor (bits [47:12], further masked to
/// the granule).
const DESC_ADDR: u64 = 0x0000_ffff_ffff_f000;
const DESC_VALID: u64 = 1 << 0;
const DESC_TABLE: u64 = 1 << 1;

/// The translation-granule size, as log2 bytes, from TCR_EL1.TG0 (bits
/// [15:14]) or TG1 (bits [31:30]), whose encodings differ.
fn granule_bits(tcr: u64, upper: bool) -> Option<u32> {
    if upper {
        match (tcr >> 30) & 3 {
            1 => Some(14),
            2 => Some(12),
            3 => Some(16),
            _ => None,
        }
    } else {
        match (tcr >> 14) & 3 {
            0 => Some(12),
            1 => Some(16),
            2 => Some(14),
            _ => None,
        }
    }
}

/// The stage-1 lookup level (0..=3) whose descriptor read is the access to
/// the page of `fault_ipa`, walking the tables of `regs` for `va`; `read`
/// returns the 64-bit word at an IPA of guest RAM (None: not RAM). `None`
/// if the walk does not touch that page (the guest changed its tables
/// meanwhile) or the regime is one this walker does not model.
pub fn fault_level(va: u64, regs: Stage1Regs, fault_ipa: u64, mut read: impl FnMut(u64) -> Option<u64>) -> Option<u8> {
    let upper = va >> 55 & 1 == 1;
    let (ttbr, txsz) = if upper { (regs.ttbr1, (regs.tcr >> 16) & 0x3f) } else { (regs.ttbr0, regs.tcr & 0x3f) };
    let granule = granule_bits(regs.tcr, upper)?;
    let va_bits = 64u32.checked_sub(txsz as u32).filter(|b| (25..=48).contains(b))?;
    let stride = granule - 3;
    let levels = (va_bits - granule).div_ceil(stride);
    let start = 4u32.checked_sub(levels)?;
    let fault_page = fault_ipa >> 12;
    let mut table = ttbr & TTBR_BADDR;
    for level in start..=3 {
        let shift = granule + (3 - level) * stride;
        let bits = if level == start { va_bits - shift } else { stride };
        let index = (va >> shift) & ((1u64 << bits) - 1);
        let desc_ipa = table + index * 8;
        if desc_ipa >> 12 == fault_page {
            return Some(level as u8);
        }
        let desc = read(desc_ipa)?;
        if desc & DESC_VALID == 0 || desc & DESC_TABLE == 0 || level == 3 {
            return None; // a fault, a block or a page: the walk ends here
        }
        table = desc & DESC_ADDR & !((1u64 << granule) - 1);
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;

    /// TCR_EL1 for a 48-bit VA, 4 KiB granule regime on both halves.
    const TCR_4K_48: u64 = 16 | (16 << 16) | (2 << 30);

    #[test]
    fn the_level_whose_descriptor_lies_in_the_faulting_page_is_reported() {
        // L0 at 0x4000_0000; its entry 0 points to L1 at 0x4000_1000, whose
        // entry 1 (VA 1 GiB) points to an L2 table at 0x9000_0000, a hole.
        let mem: BTreeMap<u64, u64> = [(0x4000_0000, 0x4000_1003), (0x4000_1008, 0x9000_0003)].into();
        let regs = Stage1Regs { ttbr0: 0x4000_0000, ttbr1: 0, tcr: TCR_4K_48 };
        let va = (1 << 30) + (5 << 21) + 0x123;
        assert_eq!(fault_level(va, regs, 0x9000_0000 + 5 * 8, |a| mem.get(&a).copied()), Some(2));
        // The L1 table itself in a hole: level 1.
        let mem: BTreeMap<u64, u64> = [(0x4000_0000, 0x7000_0003)].into();
        assert_eq!(fault_level(va, regs, 0x7000_0008, |a| mem.get(&a).copied()), Some(1));
        // The root table in a hole: level 0.
        let regs_hole = Stage1Regs { ttbr0: 0x7000_0000, ..regs };
        assert_eq!(fault_level(va, regs_hole, 0x7000_0000, |_| None), Some(0));
    }

    #[test]
    fn a_39_bit_regime_starts_at_level_1_and_the_upper_half_uses_ttbr1() {
        // T1SZ = 25 (39 bits), TG1 = 4 KiB: the walk starts at level 1.
        let tcr = 16 | (25 << 16) | (2 << 30);
        let regs = Stage1Regs { ttbr0: 0, ttbr1: 0x4000_0000 | 1, tcr };
        let va = 0xffff_ff80_0000_0000 | (3 << 30);
        let mem: BTreeMap<u64, u64> = [(0x4000_0000 + 3 * 8, 0x8000_0003)].into();
        assert_eq!(fault_level(va, regs, 0x8000_0000, |a| mem.get(&a).copied()), Some(2));
        assert_eq!(fault_level(va, regs, 0x4000_0000, |a| mem.get(&a).copied()), Some(1));
    }

    #[test]
    fn a_64k_granule_walk_masks_table_addresses_to_the_granule() {
        // TG0 = 64 KiB, T0SZ = 22 (42 bits): levels 2 and 3.
        let tcr = 22 | (1 << 14) | (2 << 30);
        let regs = Stage1Regs { ttbr0: 0x4001_0000, ttbr1: 0, tcr };
        let va = 7u64 << 29;
        let mem: BTreeMap<u64, u64> = [(0x4001_0000 + 7 * 8, 0x6000_0000 | 0x3 | 0xf000)].into();
        assert_eq!(fault_level(va, regs, 0x6000_0000, |a| mem.get(&a).copied()), Some(3));
    }

    #[test]
    fn a_walk_that_never_reaches_the_page_or_an_odd_regime_gives_none() {
        let regs = Stage1Regs { ttbr0: 0x4000_0000, ttbr1: 0, tcr: TCR_4K_48 };
        // A block at level 1: the walk ends before the faulting page.
        let mem: BTreeMap<u64, u64> = [(0x4000_0000, 0x4000_1003), (0x4000_1000, 0x4000_0001)].into();
        assert_eq!(fault_level(0x1000, regs, 0x9000_0000, |a| mem.get(&a).copied()), None);
        // Unreadable descriptor not in the faulting page.
        assert_eq!(fault_level(0x1000, regs, 0x9000_0000, |_| None), None);
        // TG0 = 0b11 is reserved; T0SZ = 0 is out of range.
        assert_eq!(fault_level(0x1000, Stage1Regs { tcr: 16 | (3 << 14), ..regs }, 0x4000_0000, |_| None), None);
        assert_eq!(fault_level(0x1000, Stage1Regs { tcr: 0, ..regs }, 0x4000_0000, |_| None), None);
    }
}
