use super::*;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

const GIB: u64 = 1 << 30;
const MIB2: u64 = 2 << 20;
const PAGE: u64 = PAGE_SIZE;

/// Fake table memory. "PAs" start at 0x8000_0000 and have nothing to do with
/// the host addresses of the backing boxes, so a PA used as a pointer (or the
/// reverse) cannot work by accident. Slots are never reused, so touching a
/// freed table panics.
struct FakeTables {
    slots: Vec<Option<Box<[u64; ENTRIES_PER_TABLE]>>>,
    budget: usize,
    live: usize,
}

const FAKE_BASE: u64 = 0x8000_0000;

impl FakeTables {
    fn new() -> Self {
        Self::with_budget(usize::MAX)
    }

    /// At most `budget` tables live at once.
    fn with_budget(budget: usize) -> Self {
        Self { slots: Vec::new(), budget, live: 0 }
    }

    fn slot(&self, pa: PhysAddr) -> usize {
        let raw = pa.as_u64();
        assert!(raw >= FAKE_BASE && raw.is_multiple_of(PAGE), "bad table PA {pa:?}");
        let index = ((raw - FAKE_BASE) / PAGE) as usize;
        assert!(self.slots.get(index).is_some_and(|s| s.is_some()), "table {pa:?} not live");
        index
    }

    /// Contents of every live table, by PA.
    fn snapshot(&self) -> BTreeMap<u64, Vec<u64>> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|t| (FAKE_BASE + i as u64 * PAGE, t.to_vec())))
            .collect()
    }

    fn live_set(&self) -> BTreeSet<u64> {
        self.snapshot().keys().copied().collect()
    }
}

// SAFETY: test-only fake, never given to hardware; every access is bounds
// and liveness checked, and the tables are zeroed on allocation.
unsafe impl TableMemory for FakeTables {
    fn alloc_zeroed_table(&mut self) -> Option<PhysAddr> {
        if self.live >= self.budget {
            return None;
        }
        self.live += 1;
        self.slots.push(Some(Box::new([0; ENTRIES_PER_TABLE])));
        Some(PhysAddr::new(FAKE_BASE + (self.slots.len() as u64 - 1) * PAGE))
    }

    fn free_table(&mut self, table: PhysAddr) {
        let index = self.slot(table);
        self.slots[index] = None;
        self.live -= 1;
    }

    fn read_descriptor(&self, table: PhysAddr, index: usize) -> u64 {
        self.slots[self.slot(table)].as_ref().unwrap()[index]
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: usize, value: u64) {
        let slot = self.slot(table);
        self.slots[slot].as_mut().unwrap()[index] = value;
    }
}

type S1 = PageTable<FakeTables, Stage1El2>;
type S2 = PageTable<FakeTables, Stage2>;

fn s1(input_bits: u32, start_level: u8) -> S1 {
    PageTable::new(FakeTables::new(), Stage1El2, input_bits, start_level).unwrap()
}

fn s2(input_bits: u32, start_level: u8) -> S2 {
    PageTable::new(FakeTables::new(), Stage2, input_bits, start_level).unwrap()
}

fn va(raw: u64) -> VirtAddr {
    VirtAddr::new(raw)
}

fn pa(raw: u64) -> PhysAddr {
    PhysAddr::new(raw)
}

fn no_tlbi() -> impl FnMut(VirtAddr, u8) {
    |a, l| panic!("unexpected invalidation of {a:?} at level {l}")
}

/// Tables reachable from the root, checking that no non-root table is empty.
fn reachable<R: Regime>(pt: &PageTable<FakeTables, R>) -> BTreeSet<u64> {
    fn walk(mem: &FakeTables, table: PhysAddr, level: u8, is_root: bool, out: &mut BTreeSet<u64>) {
        assert!(out.insert(table.as_u64()), "table {table:?} linked twice");
        let mut any = false;
        for i in 0..ENTRIES_PER_TABLE {
            let desc = mem.read_descriptor(table, i);
            any |= desc != 0;
            if descriptor::is_table(desc, level) {
                walk(mem, descriptor::address(desc), level + 1, false, out);
            }
        }
        assert!(is_root || any, "empty non-root table {table:?}");
    }
    let mut out = BTreeSet::new();
    walk(pt.memory(), pt.root(), pt.start_level(), true, &mut out);
    out
}

/// Every live table is linked, exactly once; no leaks.
fn assert_consistent<R: Regime>(pt: &PageTable<FakeTables, R>) {
    assert_eq!(reachable(pt), pt.memory().live_set());
}

// --- geometry ---------------------------------------------------------------

#[test]
fn geometry_must_match_start_level() {
    let ok = |bits, level| PageTable::new(FakeTables::new(), Stage1El2, bits, level).is_ok();
    assert!(ok(48, 0) && ok(40, 0) && ok(39, 1) && ok(31, 1) && ok(30, 2) && ok(25, 2));
    assert!(!ok(39, 0), "level 0 root would have one entry: start at level 1");
    assert!(!ok(40, 1), "needs concatenated level-1 roots");
    assert!(!ok(49, 0) && !ok(24, 2) && !ok(25, 3) && !ok(48, 4));
    let err = PageTable::new(FakeTables::with_budget(0), Stage2, 40, 0).err();
    assert_eq!(err, Some(MapError::NoMemory));
}

// --- block vs page selection -----------------------------------------------

#[test]
fn gib_aligned_range_becomes_one_level1_block() {
    let mut pt = s1(39, 1);
    pt.map(va(GIB), pa(3 * GIB), GIB, Attributes::RW_DATA).unwrap();
    assert_eq!(pt.memory().live, 1, "only the root table");
    let (desc, level) = pt.leaf_descriptor(va(GIB + 12345 * PAGE)).unwrap();
    assert_eq!(level, 1);
    assert_eq!(desc & 0b11, 0b01, "block descriptor");
    assert_eq!(descriptor::address(desc), pa(3 * GIB));

    // Same with a level-0 root: one extra level-1 table, still one block.
    let mut pt = s1(48, 0);
    pt.map(va(5 * GIB), pa(GIB), GIB, Attributes::RW_DATA).unwrap();
    assert_eq!(pt.memory().live, 2);
    assert_eq!(pt.translate(va(5 * GIB + 8)), Some((pa(GIB + 8), Attributes::RW_DATA, 1)));
    assert_consistent(&pt);
}

#[test]
fn two_mib_plus_page_gives_one_level2_block_and_one_page() {
    let mut pt = s1(39, 1);
    pt.map(va(4 * MIB2), pa(GIB + 6 * MIB2), MIB2 + PAGE, Attributes::RW_DATA).unwrap();
    assert_eq!(pt.memory().live, 3, "root + one level-2 + one level-3 table");
    assert_eq!(pt.leaf_descriptor(va(4 * MIB2)).unwrap().1, 2);
    assert_eq!(pt.leaf_descriptor(va(5 * MIB2)).unwrap().1, 3);
    assert_eq!(pt.translate(va(5 * MIB2 + 0x10)).unwrap().0, pa(GIB + 7 * MIB2 + 0x10));
    assert_eq!(pt.translate(va(5 * MIB2 + PAGE)), None);
    // Exactly one valid page in the level-3 table.
    let snap = pt.memory().snapshot();
    let valid: usize = snap.values().map(|t| t.iter().filter(|&&e| e & 1 != 0).count()).sum();
    assert_eq!(valid, 1 /* root→L2 */ + 2 /* block + L2→L3 */ + 1 /* page */);
    assert_consistent(&pt);
}

#[test]
fn unaligned_pa_forces_pages() {
    let mut pt = s1(39, 1);
    // VA is 1 GiB aligned, PA only page aligned.
    pt.map(va(GIB), pa(GIB + PAGE), MIB2 * 2, Attributes::RW_DATA).unwrap();
    assert_eq!(pt.memory().live, 1 + 1 + 2);
    for i in 0..1024 {
        let (out, _, level) = pt.translate(va(GIB + i * PAGE)).unwrap();
        assert_eq!((out, level), (pa(GIB + PAGE + i * PAGE), 3));
    }
    // PA 2 MiB but not 1 GiB aligned: 512 level-2 blocks for 1 GiB.
    let mut pt = s1(39, 1);
    pt.map(va(GIB), pa(MIB2), GIB, Attributes::RW_DATA).unwrap();
    assert_eq!(pt.memory().live, 2);
    assert_eq!(pt.translate(va(2 * GIB - 1)).unwrap(), (pa(MIB2 + GIB - 1), Attributes::RW_DATA, 2));
    assert_consistent(&pt);
}

// --- attribute encodings ----------------------------------------------------

#[test]
fn stage1_el2_descriptor_bits() {
    let mut pt = s1(39, 1);
    let cases = [
        // AttrIndx[4:2] | AP[7:6] | SH[9:8] | AF | XN(54)
        (Attributes::RW_DATA, /* AttrIndx 0 */ 0b01 << 6 | 0b11 << 8 | 1 << 10 | 1 << 54),
        (Attributes::RO_DATA, /* AttrIndx 0 */ 0b11 << 6 | 0b11 << 8 | 1 << 10 | 1 << 54),
        (Attributes::RX_CODE, /* AttrIndx 0 */ 0b11 << 6 | 0b11 << 8 | 1 << 10),
        (Attributes::RWX, 0b01 << 6 | 0b11 << 8 | 1 << 10),
        (Attributes::DEVICE, 0b001 << 2 | 0b01 << 6 | 1 << 10 | 1 << 54),
        (Attributes::RW_NON_CACHEABLE, 0b010 << 2 | 0b01 << 6 | 0b11 << 8 | 1 << 10 | 1 << 54),
    ];
    for (i, (attrs, bits)) in cases.into_iter().enumerate() {
        let i = i as u64;
        // A page ...
        let page_va = 0x100_0000 * (i + 1);
        pt.map(va(page_va), pa(0x4000_0000 + i * PAGE), PAGE, attrs).unwrap();
        let (desc, level) = pt.leaf_descriptor(va(page_va)).unwrap();
        assert_eq!(level, 3);
        assert_eq!(desc, (0x4000_0000 + i * PAGE) | bits | 0b11, "{attrs:?}");
        assert_eq!(pt.translate(va(page_va)).unwrap().1, attrs);
        // ... and a 2 MiB block.
        let block_va = GIB * (i + 1);
        pt.map(va(block_va), pa(0x1_0000_0000 + i * MIB2), MIB2, attrs).unwrap();
        let (desc, level) = pt.leaf_descriptor(va(block_va)).unwrap();
        assert_eq!(level, 2);
        assert_eq!(desc, (0x1_0000_0000 + i * MIB2) | bits | 0b01, "{attrs:?}");
    }
    assert_eq!(MAIR_EL2_VALUE, 0x44_04_ff);
}

#[test]
fn stage2_descriptor_bits() {
    let mut pt = s2(40, 0);
    let ipa = Ipa::new;
    let cases = [
        // MemAttr[5:2] | S2AP[7:6] | SH[9:8] | AF | XN[54:53]
        (Attributes::RWX, 0b1111 << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10),
        (Attributes::RW_DATA, 0b1111 << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10 | 0b10 << 53),
        (Attributes::RO_DATA, 0b1111 << 2 | 0b01 << 6 | 0b11 << 8 | 1 << 10 | 0b10 << 53),
        (Attributes::RX_CODE, 0b1111 << 2 | 0b01 << 6 | 0b11 << 8 | 1 << 10),
        (Attributes::DEVICE, 0b0001 << 2 | 0b11 << 6 | 1 << 10 | 0b10 << 53),
        (Attributes::RW_NON_CACHEABLE, 0b0101 << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10 | 0b10 << 53),
    ];
    for (i, (attrs, bits)) in cases.into_iter().enumerate() {
        let i = i as u64;
        pt.map(ipa(PAGE * (i + 1)), pa(0x9000_0000 + i * PAGE), PAGE, attrs).unwrap();
        let (desc, level) = pt.leaf_descriptor(ipa(PAGE * (i + 1))).unwrap();
        assert_eq!((desc, level), ((0x9000_0000 + i * PAGE) | bits | 0b11, 3), "{attrs:?}");
        assert_eq!(pt.translate(ipa(PAGE * (i + 1))).unwrap().1, attrs);

        pt.map(ipa(GIB * (i + 1)), pa(GIB * (i + 8)), GIB, attrs).unwrap();
        let (desc, level) = pt.leaf_descriptor(ipa(GIB * (i + 1) + PAGE)).unwrap();
        assert_eq!((desc, level), ((GIB * (i + 8)) | bits | 0b01, 1), "{attrs:?}");
    }
}

// --- refusals -----------------------------------------------------------------

#[test]
fn overlapping_map_refused_with_tables_unchanged() {
    let mut pt = s1(48, 0);
    pt.map(va(GIB), pa(GIB), GIB, Attributes::RW_DATA).unwrap(); // L1 block
    pt.map(va(4 * GIB), pa(0x1234_5000), 3 * PAGE, Attributes::RO_DATA).unwrap(); // pages
    let before = pt.memory().snapshot();
    let attempts = [
        (GIB, GIB, GIB),                               // exact overlap
        (GIB + 7 * PAGE, 0, PAGE),                     // slot inside a block
        (GIB - MIB2, 0, 2 * MIB2),                     // runs into the block
        (2 * GIB - PAGE, 0, 2 * PAGE),                 // tail of the block
        (4 * GIB - 5 * MIB2, 0x10_0000, 5 * MIB2 + 2 * PAGE), // would need tables first
        (4 * GIB + 2 * PAGE, 0, PAGE),                 // last page
    ];
    for (v, p, size) in attempts {
        let err = pt.map(va(v), pa(p), size, Attributes::RWX).unwrap_err();
        let expected_at = v.max(if v < 3 * GIB { GIB } else { 4 * GIB });
        assert_eq!(err, MapError::AlreadyMapped { at: expected_at }, "{v:#x}+{size:#x}");
        assert_eq!(pt.memory().snapshot(), before, "tables changed by refused map at {v:#x}");
    }
    // Adjacent ranges are fine.
    pt.map(va(4 * GIB + 3 * PAGE), pa(0), PAGE, Attributes::RWX).unwrap();
    pt.map(va(2 * GIB), pa(0), PAGE, Attributes::RWX).unwrap();
    assert_consistent(&pt);
}

#[test]
fn map_beyond_input_bits_refused() {
    let mut pt = s1(39, 1);
    let top = 1u64 << 39;
    assert_eq!(pt.map(va(top - PAGE), pa(0), 2 * PAGE, Attributes::RW_DATA), Err(MapError::OutOfRange));
    assert_eq!(pt.map(va(top), pa(0), PAGE, Attributes::RW_DATA), Err(MapError::OutOfRange));
    assert_eq!(pt.map(va(u64::MAX - PAGE + 1), pa(0), PAGE, Attributes::RW_DATA), Err(MapError::OutOfRange));
    assert_eq!(pt.map(va(0), pa(u64::MAX - PAGE + 1), 2 * PAGE, Attributes::RW_DATA), Err(MapError::OutOfRange));
    assert_eq!(pt.map(va(0), pa(1 << 48), PAGE, Attributes::RW_DATA), Err(MapError::OutOfRange));
    let mut noop = no_tlbi();
    assert_eq!(pt.unmap(va(top), PAGE, &mut noop), Err(MapError::OutOfRange));
    assert_eq!(pt.translate(va(top)), None);
    // The very last page is fine.
    pt.map(va(top - PAGE), pa((1 << 48) - PAGE), PAGE, Attributes::RW_DATA).unwrap();
    assert_eq!(pt.translate(va(top - 1)).unwrap().0, pa((1 << 48) - 1));
    assert_eq!(pt.memory().live, 3);
}

#[test]
fn unaligned_or_invalid_arguments_refused() {
    let mut pt = s1(39, 1);
    let a = Attributes::RW_DATA;
    assert_eq!(pt.map(va(0x800), pa(0), PAGE, a), Err(MapError::Misaligned));
    assert_eq!(pt.map(va(0), pa(0x800), PAGE, a), Err(MapError::Misaligned));
    assert_eq!(pt.map(va(0), pa(0), 0x800, a), Err(MapError::Misaligned));
    assert_eq!(pt.map(va(0), pa(0), 0, a), Err(MapError::EmptyRange));
    let write_only = Attributes { read: false, ..a };
    assert_eq!(pt.map(va(0), pa(0), PAGE, write_only), Err(MapError::InvalidAttributes));
    let exec_device = Attributes { execute: true, ..Attributes::DEVICE };
    assert_eq!(pt.map(va(0), pa(0), PAGE, exec_device), Err(MapError::InvalidAttributes));
    let mut noop = no_tlbi();
    assert_eq!(pt.unmap(va(0x10), PAGE, &mut noop), Err(MapError::Misaligned));
    assert_eq!(pt.unmap(va(0), 0, &mut noop), Err(MapError::EmptyRange));
    assert_eq!(pt.memory().live, 1);
}

// --- unmap ------------------------------------------------------------------

#[test]
fn unmap_part_of_block_splits_it_and_remainder_keeps_attrs() {
    let mut pt = s1(39, 1);
    pt.map(va(GIB), pa(4 * GIB), GIB, Attributes::RX_CODE).unwrap();
    let (block_desc, _) = pt.leaf_descriptor(va(GIB)).unwrap();
    let hole = GIB + 3 * MIB2 + 5 * PAGE;
    let mut calls = Vec::new();
    pt.unmap(va(hole), 2 * PAGE, &mut |a, l| calls.push((a, l))).unwrap();
    assert_eq!(calls, [(va(GIB), 1)], "one break-before-make of the block");
    assert_eq!(pt.memory().live, 3, "root + new level-2 + new level-3 table");

    for offset in [0, MIB2, 3 * MIB2, hole - GIB - PAGE, hole - GIB + 2 * PAGE, 4 * MIB2, GIB - PAGE] {
        let (out, attrs, level) = pt.translate(va(GIB + offset)).unwrap();
        assert_eq!((out, attrs), (pa(4 * GIB + offset), Attributes::RX_CODE), "offset {offset:#x}");
        let expected_level = if offset / MIB2 == 3 { 3 } else { 2 };
        assert_eq!(level, expected_level);
        let (desc, _) = pt.leaf_descriptor(va(GIB + offset)).unwrap();
        assert_eq!(desc & descriptor::ATTRS, block_desc & descriptor::ATTRS);
    }
    assert_eq!(pt.translate(va(hole)), None);
    assert_eq!(pt.translate(va(hole + PAGE)), None);
    assert_consistent(&pt);

    // Unmapping the rest frees everything but the root.
    let mut count = 0;
    pt.unmap(va(GIB), hole - GIB, &mut |_, _| count += 1).unwrap();
    pt.unmap(va(hole + 2 * PAGE), 2 * GIB - hole - 2 * PAGE, &mut |_, _| count += 1).unwrap();
    assert!(count > 0);
    assert_eq!(pt.memory().live, 1);
    assert!(pt.memory().snapshot().values().all(|t| t.iter().all(|&e| e == 0)));
}

#[test]
fn unmap_across_two_gib_blocks_needs_at_most_max_split_tables() {
    let mut pt = PageTable::new(FakeTables::with_budget(1 + MAX_SPLIT_TABLES), Stage1El2, 39, 1).unwrap();
    pt.map(va(GIB), pa(GIB), 2 * GIB, Attributes::RW_DATA).unwrap();
    let (start, end) = (GIB + GIB / 2 + PAGE, 2 * GIB + MIB2 + PAGE);
    let mut calls = Vec::new();
    pt.unmap(va(start), end - start, &mut |a, l| calls.push((a, l))).unwrap();
    assert_eq!(calls, [(va(GIB), 1), (va(2 * GIB), 1)]);
    assert_eq!(pt.memory().live, 1 + MAX_SPLIT_TABLES);
    assert_eq!(pt.translate(va(start - PAGE)).unwrap().0, pa(start - PAGE));
    assert_eq!(pt.translate(va(start)), None);
    assert_eq!(pt.translate(va(end - PAGE)), None);
    assert_eq!(pt.translate(va(end)).unwrap().0, pa(end));
    assert_consistent(&pt);
}

#[test]
fn unmap_of_unmapped_region_errors_without_change() {
    let mut pt = s1(39, 1);
    pt.map(va(0x40_0000), pa(0x40_0000), 2 * PAGE, Attributes::RW_DATA).unwrap();
    pt.map(va(0x40_0000 + 3 * PAGE), pa(0), PAGE, Attributes::RW_DATA).unwrap();
    pt.map(va(GIB), pa(GIB), GIB, Attributes::RW_DATA).unwrap();
    let before = pt.memory().snapshot();
    let mut noop = no_tlbi();
    // Hole in the middle of the range.
    let err = pt.unmap(va(0x40_0000), 4 * PAGE, &mut noop);
    assert_eq!(err, Err(MapError::NotMapped { at: 0x40_0000 + 2 * PAGE }));
    // Range running off the end of a block (would need a split first).
    let err = pt.unmap(va(2 * GIB - PAGE), 2 * PAGE, &mut noop);
    assert_eq!(err, Err(MapError::NotMapped { at: 2 * GIB }));
    // Nothing mapped at all there.
    let err = pt.unmap(va(5 * GIB), GIB, &mut noop);
    assert_eq!(err, Err(MapError::NotMapped { at: 5 * GIB }));
    assert_eq!(pt.memory().snapshot(), before);
}

#[test]
fn unmap_reports_every_removed_entry_and_frees_empty_tables() {
    let mut pt = s1(48, 0);
    pt.map(va(GIB - 2 * PAGE), pa(0x10_0000), 2 * PAGE + MIB2, Attributes::RW_DATA).unwrap();
    assert_eq!(pt.memory().live, 6, "root, L1, 2 x L2, 2 x L3");
    let mut calls = Vec::new();
    pt.unmap(va(GIB - 2 * PAGE), 2 * PAGE + MIB2, &mut |a, l| calls.push((a, l))).unwrap();
    // Pages then their (now empty) table, level by level; 0x10_0000 is not
    // 2 MiB aligned so the 2 MiB after GIB is pages too.
    assert_eq!(calls.len(), 2 + 1 + 1 + 512 + 1 + 1 + 1);
    assert_eq!(calls[0], (va(GIB - 2 * PAGE), 3));
    assert_eq!(calls[1], (va(GIB - PAGE), 3));
    assert_eq!(calls[2], (va(GIB - MIB2), 2), "then the emptied level-3 table");
    assert_eq!(calls[3], (va(0), 1), "then the emptied level-2 table");
    assert_eq!(calls[4], (va(GIB), 3));
    assert!(calls.contains(&(va(0), 1)) && calls.contains(&(va(GIB), 1)) && calls.contains(&(va(0), 0)));
    assert_eq!(*calls.last().unwrap(), (va(0), 0));
    assert_eq!(pt.memory().live, 1);
    assert_consistent(&pt);
}

// --- memory exhaustion ------------------------------------------------------------

#[test]
fn no_memory_leaves_no_partial_state() {
    // Needs root + L1 + 2 L2 + 2 L3 tables (crosses a 1 GiB boundary with
    // pages at both ends).
    let (v, p, size) = (GIB - MIB2 - PAGE, 0x20_0000 - PAGE, 2 * MIB2 + 2 * PAGE);
    for budget in 1..6 {
        let mut pt = PageTable::new(FakeTables::with_budget(budget), Stage1El2, 48, 0).unwrap();
        let before = pt.memory().snapshot();
        assert_eq!(pt.map(va(v), pa(p), size, Attributes::RW_DATA), Err(MapError::NoMemory));
        assert_eq!(pt.memory().snapshot(), before, "budget {budget}");
        assert_eq!(pt.memory().live, 1);
    }
    let mut pt = PageTable::new(FakeTables::with_budget(6), Stage1El2, 48, 0).unwrap();
    pt.map(va(v), pa(p), size, Attributes::RW_DATA).unwrap();
    assert_consistent(&pt);

    // Unmap that needs a split with no table left: refused, unchanged.
    let mut pt = PageTable::new(FakeTables::with_budget(2), Stage1El2, 39, 1).unwrap();
    pt.map(va(GIB), pa(GIB), GIB, Attributes::RW_DATA).unwrap();
    pt.map(va(2 * GIB), pa(GIB), PAGE, Attributes::RW_DATA).unwrap_err();
    let before = pt.memory().snapshot();
    let mut noop = no_tlbi();
    assert_eq!(pt.unmap(va(GIB + PAGE), PAGE, &mut noop), Err(MapError::NoMemory));
    assert_eq!(pt.memory().snapshot(), before);
    // With the tables available it works (budget of 2 left: L2 + L3).
    let mut pt = PageTable::new(FakeTables::with_budget(3), Stage1El2, 39, 1).unwrap();
    pt.map(va(GIB), pa(GIB), GIB, Attributes::RW_DATA).unwrap();
    pt.unmap(va(GIB + PAGE), PAGE, &mut |_, _| {}).unwrap();
    assert_consistent(&pt);
}

// --- randomised round trip -----------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug)]
struct Mapping {
    start: u64,
    end: u64,
    pa: u64,
    attrs: Attributes,
}

fn random_attrs(rng: &mut XorShift) -> Attributes {
    [Attributes::RW_DATA, Attributes::RO_DATA, Attributes::RX_CODE, Attributes::DEVICE, Attributes::RWX]
        [rng.below(5) as usize]
}

fn random_range(rng: &mut XorShift, input_bits: u32) -> (u64, u64, u64) {
    // Alignment of VA and PA (jointly or not) picks blocks vs pages.
    let (mut align, mut size) = match rng.below(6) {
        0 => (GIB, GIB * (1 + rng.below(2))),
        1 | 2 => (MIB2, MIB2 * (1 + rng.below(4)) + PAGE * rng.below(3)),
        _ => (PAGE, PAGE * (1 + rng.below(40))),
    };
    if size * 4 > 1u64 << input_bits {
        (align, size) = (PAGE, PAGE * (1 + rng.below(40)));
    }
    let limit = (1u64 << input_bits) - size;
    let v = rng.below(limit / align + 1) * align;
    let p_align = if rng.below(4) == 0 { PAGE } else { align };
    let p = rng.below((1u64 << 40) / p_align) * p_align;
    (v, p, size)
}

fn check_against_model<R: Regime>(pt: &PageTable<FakeTables, R>, model: &[Mapping], rng: &mut XorShift) {
    for m in model {
        for addr in [m.start, m.end - 1, m.start + rng.below(m.end - m.start)] {
            let (out, attrs, _) = pt.translate(R::addr_from_u64(addr)).expect("mapped address");
            assert_eq!((out.as_u64(), attrs), (m.pa + (addr - m.start), m.attrs), "at {addr:#x}");
        }
        // Just outside, unless a neighbour is mapped there.
        for addr in [m.start.wrapping_sub(1), m.end] {
            let inside = model.iter().any(|n| n.start <= addr && addr < n.end);
            if !inside && addr >> pt.input_bits() == 0 {
                assert_eq!(pt.translate(R::addr_from_u64(addr)), None, "at {addr:#x}");
            }
        }
    }
}

fn random_round_trip<R: Regime>(regime: R, input_bits: u32, start_level: u8, seed: u64) {
    let mut rng = XorShift(seed);
    let mut pt = PageTable::new(FakeTables::new(), regime, input_bits, start_level).unwrap();
    let mut model: Vec<Mapping> = Vec::new();
    for round in 0..300 {
        let (v, p, size) = random_range(&mut rng, input_bits);
        let attrs = random_attrs(&mut rng);
        let overlaps = model.iter().find(|m| m.start < v + size && v < m.end).copied();
        let before = pt.memory().snapshot();
        match pt.map(R::addr_from_u64(v), pa(p), size, attrs) {
            Ok(()) => {
                assert!(overlaps.is_none(), "mapped over {overlaps:?}");
                model.push(Mapping { start: v, end: v + size, pa: p, attrs });
            }
            Err(MapError::AlreadyMapped { at }) => {
                let first = model.iter().filter(|m| m.start < v + size && v < m.end).map(|m| m.start.max(v)).min();
                assert_eq!(Some(at), first);
                assert_eq!(pt.memory().snapshot(), before);
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        // Now and then unmap a random page-aligned piece of a mapping.
        if round % 3 == 0 && !model.is_empty() {
            let i = rng.below(model.len() as u64) as usize;
            let m = model[i];
            let pages = (m.end - m.start) / PAGE;
            let first = rng.below(pages);
            let count = 1 + rng.below(pages - first);
            let (us, ue) = (m.start + first * PAGE, m.start + (first + count) * PAGE);
            let mut last_level = 0;
            pt.unmap(R::addr_from_u64(us), ue - us, &mut |_, l| last_level = l).unwrap();
            assert!(last_level >= start_level);
            model.remove(i);
            if us > m.start {
                model.push(Mapping { end: us, ..m });
            }
            if ue < m.end {
                model.push(Mapping { start: ue, pa: m.pa + (ue - m.start), ..m });
            }
            assert_eq!(pt.translate(R::addr_from_u64(us)), None);
        }
        check_against_model(&pt, &model, &mut rng);
    }
    assert_consistent(&pt);
    // Tear everything down: only the root is left.
    for m in core::mem::take(&mut model) {
        pt.unmap(R::addr_from_u64(m.start), m.end - m.start, &mut |_, _| {}).unwrap();
    }
    assert_eq!(pt.memory().live, 1);
}

#[test]
fn translate_round_trips_on_random_ranges_stage1() {
    random_round_trip(Stage1El2, 48, 0, 0x9e37_79b9_7f4a_7c15);
    random_round_trip(Stage1El2, 39, 1, 0x1234_5678_9abc_def1);
}

#[test]
fn translate_round_trips_on_random_ranges_stage2() {
    random_round_trip(Stage2, 40, 0, 0xdead_beef_cafe_f00d);
    random_round_trip(Stage2, 33, 1, 0x0bad_c0de_5eed_1234);
    random_round_trip(Stage2, 30, 2, 0x0123_4567_89ab_cdef);
}
