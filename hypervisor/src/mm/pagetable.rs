//! VMSAv8-64 translation table builder, 4 KiB granule, 48-bit output
//! addresses (no FEAT_LPA/LPA2).
//!
//! Used for the EL2 stage-1 identity map (also while the MMU is still off)
//! and for per-VM stage-2 tables. The builder therefore never allocates from
//! the heap, takes no locks, uses no atomics and never formats; all table
//! memory goes through [`TableMemory`].
//!
//! # Operations and their guarantees
//!
//! * [`PageTable::map`] first walks the range without writing (checks for
//!   overlaps and counts the tables it needs), then reserves all those tables
//!   from [`TableMemory`] (chained through their first word, so no heap is
//!   needed), and only then writes. An error therefore leaves the tables
//!   exactly as they were, and nothing valid is ever removed, so `map` needs
//!   no TLB maintenance. It uses 1 GiB (level 1) and 2 MiB (level 2) blocks
//!   whenever the input address, the output address and the remaining size
//!   allow, else 4 KiB pages (level 3).
//! * [`PageTable::unmap`] likewise checks first (the whole range must be
//!   mapped, else [`MapError::NotMapped`] and no change), reserves the at
//!   most [`MAX_SPLIT_TABLES`] tables needed to split partially covered
//!   blocks, then writes. See [`PageTable::unmap`] for the break-before-make
//!   protocol with the caller's TLB maintenance callback.
//!
//! Invariant kept by every operation: no table other than the root is ever
//! left with all entries invalid (empty tables are freed by `unmap`).

use core::marker::PhantomData;

use crate::addr::{Ipa, PhysAddr, VirtAddr, PAGE_SIZE};

/// Descriptors per 4 KiB translation table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Output addresses are limited to 48 bits (descriptor OA field bits[47:12]).
pub const MAX_OUTPUT_BITS: u32 = 48;

/// Upper bound on the number of new tables one `unmap` can need: each of the
/// two range edges can split at most one level-1 block (needing one level-2
/// table) and one level-2 block (needing one level-3 table).
pub const MAX_SPLIT_TABLES: usize = 4;

// ---------------------------------------------------------------------------
// MAIR_EL2 layout used by the Stage1El2 regime.
// ---------------------------------------------------------------------------

/// MAIR attribute encoding: Normal, Inner/Outer Write-Back Non-transient,
/// Read-Allocate, Write-Allocate.
pub const MAIR_ATTR_NORMAL_WB: u8 = 0xff;
/// MAIR attribute encoding: Device-nGnRE.
pub const MAIR_ATTR_DEVICE_NGNRE: u8 = 0x04;
/// MAIR attribute encoding: Normal, Inner/Outer Non-cacheable.
pub const MAIR_ATTR_NORMAL_NC: u8 = 0x44;
/// AttrIndx of [`MemType::Normal`].
pub const MAIR_IDX_NORMAL: u64 = 0;
/// AttrIndx of [`MemType::Device`].
pub const MAIR_IDX_DEVICE: u64 = 1;
/// AttrIndx of [`MemType::NormalNonCacheable`].
pub const MAIR_IDX_NORMAL_NC: u64 = 2;
/// The value to program into MAIR_EL2 for descriptors built here.
pub const MAIR_EL2_VALUE: u64 = (MAIR_ATTR_NORMAL_WB as u64) << (8 * MAIR_IDX_NORMAL)
    | (MAIR_ATTR_DEVICE_NGNRE as u64) << (8 * MAIR_IDX_DEVICE)
    | (MAIR_ATTR_NORMAL_NC as u64) << (8 * MAIR_IDX_NORMAL_NC);

// ---------------------------------------------------------------------------
// Table memory.
// ---------------------------------------------------------------------------

/// Backing store for translation tables, addressed by physical address.
///
/// On the target the tables are identity mapped (or the MMU is off), so an
/// implementation turns the PA into a pointer and uses volatile accesses.
/// Host tests use a fake whose "PAs" are unrelated to the host pointers.
///
/// # Safety
///
/// The page table hands [`PageTable::root`] (and, through descriptors, every
/// table PA) to the hardware walker, so implementors must guarantee:
///
/// * `alloc_zeroed_table` returns the PA of a 4 KiB-aligned, 4 KiB,
///   all-zero region that nothing else uses until it is passed back to
///   `free_table`;
/// * `read_descriptor(t, i)` / `write_descriptor(t, i, v)` access exactly the
///   8 bytes the hardware reads at PA `t + 8 * i`, for every `t` obtained
///   from `alloc_zeroed_table` and not yet freed (`i < 512`);
/// * `write_descriptor` is a single aligned 64-bit store that the compiler
///   may neither elide, merge, split nor reorder with other descriptor
///   writes (on the target: `core::ptr::write_volatile` of a `u64`), so a
///   concurrent hardware walk never sees a torn descriptor and the
///   break-before-make sequence in [`PageTable::unmap`] is preserved.
pub unsafe trait TableMemory {
    /// Allocates one zero-filled, 4 KiB-aligned table; `None` when exhausted.
    fn alloc_zeroed_table(&mut self) -> Option<PhysAddr>;
    /// Returns a table obtained from `alloc_zeroed_table`. Its content is
    /// unspecified (not necessarily zero).
    fn free_table(&mut self, table: PhysAddr);
    /// Reads descriptor `index` (< 512) of `table`.
    fn read_descriptor(&self, table: PhysAddr, index: usize) -> u64;
    /// Writes descriptor `index` (< 512) of `table` with one 64-bit store.
    fn write_descriptor(&mut self, table: PhysAddr, index: usize, value: u64);
}

// SAFETY: every method forwards to `T`, which upholds the contract.
unsafe impl<T: TableMemory + ?Sized> TableMemory for &mut T {
    fn alloc_zeroed_table(&mut self) -> Option<PhysAddr> {
        (**self).alloc_zeroed_table()
    }
    fn free_table(&mut self, table: PhysAddr) {
        (**self).free_table(table)
    }
    fn read_descriptor(&self, table: PhysAddr, index: usize) -> u64 {
        (**self).read_descriptor(table, index)
    }
    fn write_descriptor(&mut self, table: PhysAddr, index: usize, value: u64) {
        (**self).write_descriptor(table, index, value)
    }
}

// ---------------------------------------------------------------------------
// Attributes and regimes.
// ---------------------------------------------------------------------------

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal, Write-Back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE. Never executable.
    Device,
    /// Normal, Non-cacheable.
    NormalNonCacheable,
}

/// Regime-independent permissions and memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// Must be true: write-only / no-access mappings are not supported.
    pub read: bool,
    pub write: bool,
    pub execute: bool,
    pub mem: MemType,
}

impl Attributes {
    /// Normal memory, read/write, never executable.
    pub const RW_DATA: Self = Self { read: true, write: true, execute: false, mem: MemType::Normal };
    /// Normal memory, read-only, never executable.
    pub const RO_DATA: Self = Self { read: true, write: false, execute: false, mem: MemType::Normal };
    /// Normal memory, read-only, executable.
    pub const RX_CODE: Self = Self { read: true, write: false, execute: true, mem: MemType::Normal };
    /// Normal memory, read/write/execute (e.g. guest RAM at stage 2).
    pub const RWX: Self = Self { read: true, write: true, execute: true, mem: MemType::Normal };
    /// Device-nGnRE, read/write, never executable.
    pub const DEVICE: Self = Self { read: true, write: true, execute: false, mem: MemType::Device };
    /// Normal non-cacheable, read/write, never executable.
    pub const RW_NON_CACHEABLE: Self =
        Self { read: true, write: true, execute: false, mem: MemType::NormalNonCacheable };

    /// Whether these attributes can be encoded: readable, and not executable
    /// device memory.
    pub const fn is_valid(self) -> bool {
        self.read && !(self.execute && matches!(self.mem, MemType::Device))
    }
}

/// A translation regime: the input address type and the encoding of the
/// leaf (block/page) descriptor attribute fields.
pub trait Regime {
    /// The input address space of the regime.
    type Addr: Copy;
    /// The raw value of an input address.
    fn addr_to_u64(addr: Self::Addr) -> u64;
    /// Builds an input address from its raw value.
    fn addr_from_u64(raw: u64) -> Self::Addr;
    /// Lower (bits[11:2]) and upper (bits[63:50]) attribute bits of a leaf
    /// descriptor. `attrs` has been checked with [`Attributes::is_valid`].
    fn encode_attrs(attrs: Attributes) -> u64;
    /// Inverse of `encode_attrs`; `None` for encodings this module never
    /// produces.
    fn decode_attrs(desc: u64) -> Option<Attributes>;
}

/// Stage 1 of the EL2 translation regime with a single VA range
/// (HCR_EL2.E2H == 0), attributes through MAIR_EL2 ([`MAIR_EL2_VALUE`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stage1El2;

/// Stage 2 (IPA → PA) of the EL1&0 regime, without FEAT_S2FWB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stage2;

/// Descriptor field encodings, as pure functions.
///
/// References are to the Arm Architecture Reference Manual for A-profile
/// (DDI 0487), chapter D8 "The AArch64 Virtual Memory System Architecture":
/// "Translation table descriptor formats" (table / block / page descriptor
/// layout, 4 KB granule), "Memory attribute fields in the VMSAv8-64
/// translation table format descriptors" (stage 1 AttrIndx, AP, SH, AF, XN;
/// stage 2 MemAttr, S2AP, XN) and "Stage 2 memory type and Cacheability
/// attributes when FEAT_S2FWB is disabled".
pub mod descriptor {
    use crate::addr::PhysAddr;

    /// Bit 0: the descriptor is valid.
    pub const VALID: u64 = 1 << 0;
    /// Bit 1: table (levels 0-2) or page (level 3); clear for a block.
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    /// Output / next-level table address field, bits[47:12] (4 KB granule,
    /// 48-bit OA).
    pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
    /// Lower attributes of block and page descriptors, bits[11:2].
    pub const LOWER_ATTRS: u64 = 0xffc;
    /// Upper attributes of block and page descriptors, bits[63:50].
    pub const UPPER_ATTRS: u64 = 0xfffc_0000_0000_0000;
    /// All attribute bits of a block or page descriptor.
    pub const ATTRS: u64 = LOWER_ATTRS | UPPER_ATTRS;

    /// AF, bit[10]: Access flag. Always set (no hardware AF management).
    pub const AF: u64 = 1 << 10;
    /// SH, bits[9:8] = 0b11: Inner Shareable.
    pub const SH_INNER: u64 = 0b11 << 8;

    /// Stage 1 AttrIndx, bits[4:2]: index into MAIR_ELx.
    pub const fn s1_attr_index(index: u64) -> u64 {
        (index & 0b111) << 2
    }
    /// Stage 1 AP[2:1], bits[7:6], regime with one privilege level (EL2
    /// without E2H): AP[2] = 1 is read-only. "For a stage 1 translation that
    /// supports one Exception level, AP[1] is RES1" (D8.4.1.2.1 "Stage 1 data
    /// accesses using Direct permissions", DDI 0487K.a), so read/write is
    /// 0b01 and read-only is 0b11 (as Linux's nVHE hyp).
    pub const S1_AP_RW: u64 = 0b01 << 6;
    /// See [`S1_AP_RW`].
    pub const S1_AP_RO: u64 = 0b11 << 6;
    /// AP[2], bit[7]: read-only.
    pub const S1_AP_RO_BIT: u64 = 1 << 7;
    /// Stage 1 XN, bit[54], for a regime with one VA range (bit 53 is RES0).
    pub const S1_XN: u64 = 1 << 54;

    /// Stage 2 MemAttr, bits[5:2] (FEAT_S2FWB disabled).
    pub const fn s2_mem_attr(mem_attr: u64) -> u64 {
        (mem_attr & 0b1111) << 2
    }
    /// MemAttr: Normal, Outer WB, Inner WB.
    pub const S2_MEMATTR_NORMAL_WB: u64 = 0b1111;
    /// MemAttr: Device-nGnRE.
    pub const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001;
    /// MemAttr: Normal, Outer NC, Inner NC.
    pub const S2_MEMATTR_NORMAL_NC: u64 = 0b0101;
    /// S2AP[0], bit[6]: read access.
    pub const S2AP_READ: u64 = 1 << 6;
    /// S2AP[1], bit[7]: write access.
    pub const S2AP_WRITE: u64 = 1 << 7;
    /// Stage 2 XN[1:0], bits[54:53] = 0b10: not executable at EL1 or EL0
    /// (also correct without FEAT_XNX, where bit 54 is XN and 53 is RES0).
    pub const S2_XN: u64 = 0b10 << 53;
    /// Stage 2 XN field mask, bits[54:53].
    pub const S2_XN_MASK: u64 = 0b11 << 53;

    /// Table descriptor (levels 0-2) pointing at the next-level table.
    pub const fn table(next: PhysAddr) -> u64 {
        (next.as_u64() & OA_MASK) | TABLE_OR_PAGE | VALID
    }

    /// Block (levels 1-2) or page (level 3) descriptor for output address
    /// `oa` with attribute bits `attrs` (masked with [`ATTRS`]).
    pub const fn leaf(level: u8, oa: PhysAddr, attrs: u64) -> u64 {
        let ty = if level == 3 { TABLE_OR_PAGE | VALID } else { VALID };
        (oa.as_u64() & OA_MASK) | (attrs & ATTRS) | ty
    }

    /// The output address (leaf) or next-level table address (table).
    /// For a block the low bits of the field are RES0 and zero here.
    pub const fn address(desc: u64) -> PhysAddr {
        PhysAddr::new(desc & OA_MASK)
    }

    /// Is the descriptor valid?
    pub const fn is_valid(desc: u64) -> bool {
        desc & VALID != 0
    }

    /// Is `desc`, read from a table at `level`, a table descriptor?
    pub const fn is_table(desc: u64, level: u8) -> bool {
        level < 3 && desc & (VALID | TABLE_OR_PAGE) == (VALID | TABLE_OR_PAGE)
    }

    /// Is `desc`, read from a table at `level`, a block or page descriptor?
    /// (A block at level 0 and 0b01 at level 3 are not: with a 4 KB granule
    /// and 48-bit OA they are invalid encodings.)
    pub const fn is_leaf(desc: u64, level: u8) -> bool {
        match level {
            1 | 2 => desc & (VALID | TABLE_OR_PAGE) == VALID,
            3 => desc & (VALID | TABLE_OR_PAGE) == (VALID | TABLE_OR_PAGE),
            _ => false,
        }
    }
}

use descriptor as d;

impl Regime for Stage1El2 {
    type Addr = VirtAddr;

    fn addr_to_u64(addr: VirtAddr) -> u64 {
        addr.as_u64()
    }

    fn addr_from_u64(raw: u64) -> VirtAddr {
        VirtAddr::new(raw)
    }

    fn encode_attrs(a: Attributes) -> u64 {
        let (index, sh) = match a.mem {
            MemType::Normal => (MAIR_IDX_NORMAL, d::SH_INNER),
            // Device memory is always Outer Shareable; SH is ignored.
            MemType::Device => (MAIR_IDX_DEVICE, 0),
            MemType::NormalNonCacheable => (MAIR_IDX_NORMAL_NC, d::SH_INNER),
        };
        let ap = if a.write { d::S1_AP_RW } else { d::S1_AP_RO };
        let xn = if a.execute { 0 } else { d::S1_XN };
        d::s1_attr_index(index) | ap | sh | d::AF | xn
    }

    fn decode_attrs(desc: u64) -> Option<Attributes> {
        let mem = match (desc >> 2) & 0b111 {
            MAIR_IDX_NORMAL => MemType::Normal,
            MAIR_IDX_DEVICE => MemType::Device,
            MAIR_IDX_NORMAL_NC => MemType::NormalNonCacheable,
            _ => return None,
        };
        Some(Attributes {
            read: true,
            write: desc & d::S1_AP_RO_BIT == 0,
            execute: desc & d::S1_XN == 0,
            mem,
        })
    }
}

impl Regime for Stage2 {
    type Addr = Ipa;

    fn addr_to_u64(addr: Ipa) -> u64 {
        addr.as_u64()
    }

    fn addr_from_u64(raw: u64) -> Ipa {
        Ipa::new(raw)
    }

    fn encode_attrs(a: Attributes) -> u64 {
        let (mem_attr, sh) = match a.mem {
            MemType::Normal => (d::S2_MEMATTR_NORMAL_WB, d::SH_INNER),
            MemType::Device => (d::S2_MEMATTR_DEVICE_NGNRE, 0),
            MemType::NormalNonCacheable => (d::S2_MEMATTR_NORMAL_NC, d::SH_INNER),
        };
        let mut bits = d::s2_mem_attr(mem_attr) | sh | d::AF;
        if a.read {
            bits |= d::S2AP_READ;
        }
        if a.write {
            bits |= d::S2AP_WRITE;
        }
        if !a.execute {
            bits |= d::S2_XN;
        }
        bits
    }

    fn decode_attrs(desc: u64) -> Option<Attributes> {
        let mem = match (desc >> 2) & 0b1111 {
            d::S2_MEMATTR_NORMAL_WB => MemType::Normal,
            d::S2_MEMATTR_DEVICE_NGNRE => MemType::Device,
            d::S2_MEMATTR_NORMAL_NC => MemType::NormalNonCacheable,
            _ => return None,
        };
        Some(Attributes {
            read: desc & d::S2AP_READ != 0,
            write: desc & d::S2AP_WRITE != 0,
            execute: desc & d::S2_XN_MASK == 0,
            mem,
        })
    }
}

// ---------------------------------------------------------------------------
// Errors and geometry.
// ---------------------------------------------------------------------------

/// Why a page table operation was refused. Every error leaves the tables
/// unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or the size is not a multiple of [`PAGE_SIZE`].
    Misaligned,
    /// `size` is zero.
    EmptyRange,
    /// The input range exceeds `input_bits`, or the output range exceeds
    /// [`MAX_OUTPUT_BITS`], or an addition overflowed.
    OutOfRange,
    /// Part of the input range is already mapped; `at` is the lowest input
    /// address of the range that is.
    AlreadyMapped { at: u64 },
    /// Part of the input range is not mapped; `at` is the lowest input
    /// address of the range that is not.
    NotMapped { at: u64 },
    /// [`TableMemory`] could not provide a table.
    NoMemory,
    /// `read` is false, or executable device memory was requested.
    InvalidAttributes,
    /// `input_bits` / `start_level` unsupported or inconsistent.
    BadGeometry,
}

/// log2 of the size of the region one descriptor at `level` maps.
pub const fn level_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// Size of the region one descriptor at `level` maps: 512 GiB, 1 GiB,
/// 2 MiB, 4 KiB for levels 0-3.
pub const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

const fn table_index(addr: u64, level: u8) -> usize {
    ((addr >> level_shift(level)) & (ENTRIES_PER_TABLE as u64 - 1)) as usize
}

/// Walks the entries of one table at `level` that intersect `[start, end)`
/// (which lies inside that table's span): yields
/// `(index, entry_base, sub_start, sub_end)`.
fn entries(level: u8, start: u64, end: u64) -> impl Iterator<Item = (usize, u64, u64, u64)> {
    let size = level_size(level);
    let mut addr = start;
    core::iter::from_fn(move || {
        if addr >= end {
            return None;
        }
        let base = addr & !(size - 1);
        let sub_end = if end - base > size { base + size } else { end };
        let item = (table_index(addr, level), base, addr, sub_end);
        addr = sub_end;
        Some(item)
    })
}

/// Can `[sub_start, sub_end)` be mapped by one leaf at `level`, given the
/// entry starts at `base` and the output address is `input + delta`?
const fn fits_leaf(level: u8, base: u64, sub_start: u64, sub_end: u64, delta: u64) -> bool {
    let size = level_size(level);
    level >= 1
        && sub_start == base
        && sub_end - sub_start == size
        && sub_start.wrapping_add(delta).is_multiple_of(size)
}

// ---------------------------------------------------------------------------
// Reserved tables, chained through word 0 of each (no heap).
// ---------------------------------------------------------------------------

struct Reserve {
    head: Option<PhysAddr>,
}

impl Reserve {
    /// Allocates `count` tables up front; on failure frees what it got.
    fn fill<M: TableMemory>(mem: &mut M, count: usize) -> Result<Self, MapError> {
        let mut reserve = Self { head: None };
        for _ in 0..count {
            match mem.alloc_zeroed_table() {
                Some(table) => {
                    // Link word: next table's PA | 1, or 0 for the end.
                    let link = match reserve.head {
                        Some(next) => next.as_u64() | 1,
                        None => 0,
                    };
                    mem.write_descriptor(table, 0, link);
                    reserve.head = Some(table);
                }
                None => {
                    reserve.release(mem);
                    return Err(MapError::NoMemory);
                }
            }
        }
        Ok(reserve)
    }

    /// Takes one zeroed table from the reserve (falling back to `mem`, which
    /// only happens if the planning pass under-counted).
    fn take<M: TableMemory>(&mut self, mem: &mut M) -> Result<PhysAddr, MapError> {
        match self.head {
            Some(table) => {
                let link = mem.read_descriptor(table, 0);
                mem.write_descriptor(table, 0, 0);
                self.head = if link & 1 != 0 { Some(PhysAddr::new(link & !1)) } else { None };
                Ok(table)
            }
            None => {
                debug_assert!(false, "page table reserve under-counted");
                mem.alloc_zeroed_table().ok_or(MapError::NoMemory)
            }
        }
    }

    fn release<M: TableMemory>(&mut self, mem: &mut M) {
        while self.head.is_some() {
            if let Ok(table) = self.take(mem) {
                mem.free_table(table);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The page table.
// ---------------------------------------------------------------------------

/// A translation table tree for regime `R` with a single root table.
pub struct PageTable<M: TableMemory, R: Regime> {
    mem: M,
    root: PhysAddr,
    input_bits: u32,
    start_level: u8,
    _regime: PhantomData<R>,
}

impl<M: TableMemory, R: Regime> PageTable<M, R> {
    /// Creates an empty tree translating `input_bits`-bit input addresses,
    /// starting the walk at `start_level`.
    ///
    /// The single root table must cover exactly `input_bits`: a level-0 root
    /// covers 40..=48 bits, level 1 31..=39, level 2 25..=30 (the lower
    /// bound of `input_bits` is 25). Larger inputs would need concatenated
    /// root tables (stage 2) and are refused, as is level 3.
    ///
    /// For the hardware: TCR_EL2.T0SZ / VTCR_EL2.T0SZ = 64 - `input_bits`;
    /// the start level follows from T0SZ at stage 1 and must be programmed
    /// in VTCR_EL2.SL0 at stage 2.
    pub fn new(mut mem: M, _regime: R, input_bits: u32, start_level: u8) -> Result<Self, MapError> {
        if !(25..=48).contains(&input_bits) || start_level > 3 {
            return Err(MapError::BadGeometry);
        }
        let shift = level_shift(start_level);
        if input_bits <= shift || input_bits > shift + 9 {
            return Err(MapError::BadGeometry);
        }
        let root = mem.alloc_zeroed_table().ok_or(MapError::NoMemory)?;
        Ok(Self { mem, root, input_bits, start_level, _regime: PhantomData })
    }

    /// PA of the root table (for TTBR0_EL2 / VTTBR_EL2.BADDR).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    pub fn input_bits(&self) -> u32 {
        self.input_bits
    }

    pub fn start_level(&self) -> u8 {
        self.start_level
    }

    /// The table memory (e.g. for statistics).
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Gives the table memory back without freeing any table (the tables may
    /// still be in use by the hardware).
    pub fn into_memory(self) -> M {
        self.mem
    }

    fn check_input(&self, addr: u64, size: u64) -> Result<u64, MapError> {
        if !addr.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        if size == 0 {
            return Err(MapError::EmptyRange);
        }
        let end = addr.checked_add(size).ok_or(MapError::OutOfRange)?;
        if end > 1u64 << self.input_bits {
            return Err(MapError::OutOfRange);
        }
        Ok(end)
    }

    /// Maps `[addr, addr + size)` to `[pa, pa + size)` with `attrs`.
    ///
    /// Uses the largest blocks the alignment of `addr` and `pa` allows.
    /// Refuses (with no change) to map over anything already mapped,
    /// including a free slot inside an existing block. Never removes or
    /// changes a valid descriptor, so no TLB maintenance is needed; before
    /// the new mappings are used on a live regime the caller must make the
    /// writes visible to the walker (`DSB ISHST`, then `ISB` for stage 1).
    pub fn map(&mut self, addr: R::Addr, pa: PhysAddr, size: u64, attrs: Attributes) -> Result<(), MapError> {
        let start = R::addr_to_u64(addr);
        let end = self.check_input(start, size)?;
        if !pa.is_aligned(PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        match pa.checked_add(size) {
            Some(pa_end) if pa_end.as_u64() <= 1u64 << MAX_OUTPUT_BITS => {}
            _ => return Err(MapError::OutOfRange),
        }
        if !attrs.is_valid() {
            return Err(MapError::InvalidAttributes);
        }
        let delta = pa.as_u64().wrapping_sub(start);
        let needed = self.plan_map(self.root, self.start_level, start, end, delta)?;
        let mut reserve = Reserve::fill(&mut self.mem, needed)?;
        let bits = R::encode_attrs(attrs);
        let result = self.write_map(self.root, self.start_level, start, end, delta, bits, &mut reserve);
        reserve.release(&mut self.mem);
        debug_assert!(result.is_ok());
        result
    }

    /// Checks `[start, end)` is unmapped below `table` and counts the new
    /// tables `write_map` will need.
    fn plan_map(&self, table: PhysAddr, level: u8, start: u64, end: u64, delta: u64) -> Result<usize, MapError> {
        let mut needed = 0;
        for (index, base, s, e) in entries(level, start, end) {
            let desc = self.mem.read_descriptor(table, index);
            if !d::is_valid(desc) {
                if !fits_leaf(level, base, s, e, delta) {
                    needed += 1 + count_fresh(level + 1, s, e, delta);
                }
            } else if d::is_table(desc, level) {
                needed += self.plan_map(d::address(desc), level + 1, s, e, delta)?;
            } else {
                return Err(MapError::AlreadyMapped { at: s });
            }
        }
        Ok(needed)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_map(
        &mut self,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        delta: u64,
        bits: u64,
        reserve: &mut Reserve,
    ) -> Result<(), MapError> {
        for (index, base, s, e) in entries(level, start, end) {
            let desc = self.mem.read_descriptor(table, index);
            let next = if !d::is_valid(desc) {
                if fits_leaf(level, base, s, e, delta) {
                    let leaf = d::leaf(level, PhysAddr::new(s.wrapping_add(delta)), bits);
                    self.mem.write_descriptor(table, index, leaf);
                    continue;
                }
                let child = reserve.take(&mut self.mem)?;
                self.mem.write_descriptor(table, index, d::table(child));
                child
            } else if d::is_table(desc, level) {
                d::address(desc)
            } else {
                return Err(MapError::AlreadyMapped { at: s });
            };
            self.write_map(next, level + 1, s, e, delta, bits, reserve)?;
        }
        Ok(())
    }

    /// Removes every mapping in `[addr, addr + size)`.
    ///
    /// The whole range must be mapped; otherwise returns
    /// [`MapError::NotMapped`] with the lowest unmapped address and changes
    /// nothing. A block only partly inside the range is split: its remainder
    /// is rebuilt, with the same attributes and output addresses, in a new
    /// next-level table (recursively, down to pages). Tables that become
    /// empty are freed. May fail with [`MapError::NoMemory`] (no change) when
    /// a split needs tables (at most [`MAX_SPLIT_TABLES`]).
    ///
    /// # TLB maintenance protocol
    ///
    /// `invalidate(addr, level)` is called once for every valid descriptor
    /// this operation replaces or removes: the descriptor at `level` whose
    /// region starts at `addr` (size [`level_size`]`(level)`). For each one
    /// the order is:
    ///
    /// 1. the descriptor is overwritten with 0 (invalid);
    /// 2. `invalidate` runs and must, before returning, complete the
    ///    invalidation: `DSB ISHST; TLBI VAE2IS, addr >> 12; DSB ISH` at
    ///    stage 1 EL2, or `DSB ISHST; TLBI IPAS2E1IS, ipa >> 12; DSB ISH`
    ///    at stage 2 (with the VM's VMID in VTTBR_EL2) — and for stage 2 a
    ///    `TLBI VMALLE1IS; DSB ISH` once after `unmap` returns, since
    ///    IPA-based invalidation does not remove combined stage 1+2 entries.
    ///    Use the non-last-level TLBI forms: the callback is also made for a
    ///    removed *table* descriptor (after all leaves below it were removed
    ///    and invalidated one by one), to drop walk-cache entries;
    /// 3. only then is the replacement written: for a split block, the table
    ///    descriptor of the new, fully populated next-level table (its
    ///    contents are written before step 1, so the DSB of step 2 publishes
    ///    them); for a removed table, the old table is passed to
    ///    [`TableMemory::free_table`].
    ///
    /// Between steps 1 and 3 the rest of a split block is unmapped (break
    /// before make), so never split a block that the running code, its
    /// stack or these tables live in, and expect (and retry) stage-2 faults
    /// from running vCPUs in that window. Finish with `ISB` at stage 1.
    pub fn unmap(
        &mut self,
        addr: R::Addr,
        size: u64,
        invalidate: &mut dyn FnMut(R::Addr, u8),
    ) -> Result<(), MapError> {
        let start = R::addr_to_u64(addr);
        let end = self.check_input(start, size)?;
        let needed = self.plan_unmap(self.root, self.start_level, start, end)?;
        if needed > MAX_SPLIT_TABLES {
            // Cannot happen (see MAX_SPLIT_TABLES); refuse rather than panic.
            return Err(MapError::NoMemory);
        }
        let mut reserve = Reserve::fill(&mut self.mem, needed)?;
        let result = self.write_unmap(self.root, self.start_level, start, end, &mut reserve, invalidate);
        reserve.release(&mut self.mem);
        debug_assert!(result.is_ok());
        result
    }

    fn plan_unmap(&self, table: PhysAddr, level: u8, start: u64, end: u64) -> Result<usize, MapError> {
        let mut needed = 0;
        for (index, _, s, e) in entries(level, start, end) {
            let desc = self.mem.read_descriptor(table, index);
            if d::is_table(desc, level) {
                needed += self.plan_unmap(d::address(desc), level + 1, s, e)?;
            } else if d::is_leaf(desc, level) {
                if e - s != level_size(level) {
                    needed += count_split(level, s, e);
                }
            } else {
                return Err(MapError::NotMapped { at: s });
            }
        }
        Ok(needed)
    }

    fn write_unmap(
        &mut self,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        reserve: &mut Reserve,
        invalidate: &mut dyn FnMut(R::Addr, u8),
    ) -> Result<(), MapError> {
        for (index, base, s, e) in entries(level, start, end) {
            let desc = self.mem.read_descriptor(table, index);
            let whole = e - s == level_size(level);
            if d::is_table(desc, level) {
                let child = d::address(desc);
                self.write_unmap(child, level + 1, s, e, reserve, invalidate)?;
                if whole || self.table_is_empty(child) {
                    self.mem.write_descriptor(table, index, 0);
                    invalidate(R::addr_from_u64(base), level);
                    self.mem.free_table(child);
                }
            } else if d::is_leaf(desc, level) {
                if whole {
                    self.mem.write_descriptor(table, index, 0);
                    invalidate(R::addr_from_u64(base), level);
                } else {
                    let new = self.build_split(desc, level, base, s, e, reserve)?;
                    self.mem.write_descriptor(table, index, 0);
                    invalidate(R::addr_from_u64(base), level);
                    self.mem.write_descriptor(table, index, d::table(new));
                }
            } else {
                return Err(MapError::NotMapped { at: s });
            }
        }
        Ok(())
    }

    /// Builds (not yet linked) the next-level table replacing block `desc`
    /// at `level` starting at `base`, without the part `[s, e)`.
    fn build_split(
        &mut self,
        desc: u64,
        level: u8,
        base: u64,
        s: u64,
        e: u64,
        reserve: &mut Reserve,
    ) -> Result<PhysAddr, MapError> {
        let child_level = level + 1;
        let child_size = level_size(child_level);
        let table = reserve.take(&mut self.mem)?;
        let oa = d::address(desc).as_u64();
        for index in 0..ENTRIES_PER_TABLE {
            let offset = index as u64 * child_size;
            let (c_start, c_end) = (base + offset, base + offset + child_size);
            let leaf = d::leaf(child_level, PhysAddr::new(oa + offset), desc);
            let value = if c_end <= s || c_start >= e {
                leaf
            } else if s <= c_start && c_end <= e {
                0
            } else {
                let sub = self.build_split(leaf, child_level, c_start, s.max(c_start), e.min(c_end), reserve)?;
                d::table(sub)
            };
            if value != 0 {
                self.mem.write_descriptor(table, index, value);
            }
        }
        Ok(table)
    }

    fn table_is_empty(&self, table: PhysAddr) -> bool {
        (0..ENTRIES_PER_TABLE).all(|i| self.mem.read_descriptor(table, i) == 0)
    }

    /// Walks the tables for `addr`: the output address, attributes and the
    /// level of the leaf descriptor, or `None` if unmapped.
    pub fn translate(&self, addr: R::Addr) -> Option<(PhysAddr, Attributes, u8)> {
        let raw = R::addr_to_u64(addr);
        if raw >> self.input_bits != 0 {
            return None;
        }
        let mut table = self.root;
        let mut level = self.start_level;
        loop {
            let desc = self.mem.read_descriptor(table, table_index(raw, level));
            if d::is_table(desc, level) {
                table = d::address(desc);
                level += 1;
            } else if d::is_leaf(desc, level) {
                let offset = raw & (level_size(level) - 1);
                let pa = PhysAddr::new(d::address(desc).as_u64() | offset);
                return Some((pa, R::decode_attrs(desc)?, level));
            } else {
                return None;
            }
        }
    }

    /// The raw leaf descriptor mapping `addr` and its level (for tests and
    /// diagnostics).
    pub fn leaf_descriptor(&self, addr: R::Addr) -> Option<(u64, u8)> {
        let raw = R::addr_to_u64(addr);
        if raw >> self.input_bits != 0 {
            return None;
        }
        let mut table = self.root;
        let mut level = self.start_level;
        loop {
            let desc = self.mem.read_descriptor(table, table_index(raw, level));
            if d::is_table(desc, level) {
                table = d::address(desc);
                level += 1;
            } else if d::is_leaf(desc, level) {
                return Some((desc, level));
            } else {
                return None;
            }
        }
    }
}

/// Tables needed to map `[start, end)` below a new, empty table at `level`.
fn count_fresh(level: u8, start: u64, end: u64, delta: u64) -> usize {
    let mut needed = 0;
    for (_, base, s, e) in entries(level, start, end) {
        if !fits_leaf(level, base, s, e, delta) {
            needed += 1 + count_fresh(level + 1, s, e, delta);
        }
    }
    needed
}

/// Tables needed to split a block at `level` when `[s, e)` (a strict,
/// page-aligned part of it) is removed.
fn count_split(level: u8, s: u64, e: u64) -> usize {
    let child_level = level + 1;
    let mut needed = 1;
    for (_, _, cs, ce) in entries(child_level, s, e) {
        if ce - cs != level_size(child_level) {
            needed += count_split(child_level, cs, ce);
        }
    }
    needed
}

#[cfg(test)]
mod tests;
