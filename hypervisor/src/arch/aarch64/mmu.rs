//! The EL2 stage-1 translation regime: an identity map (VA = PA) of the
//! image by section, the device tree, RAM and the devices the hypervisor
//! drives. Tables come from a pool inside the image, so the first map can be
//! built while the MMU is still off.

use core::cell::UnsafeCell;
use core::ptr::addr_of;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ReadWriteable, Readable, Writeable, ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2};
use crate::sync::Mutex;

use crate::addr::{PhysAddr, VirtAddr, PAGE_SIZE};
use crate::mm::pagetable::{Attributes, MapError, PageTable, Stage1El2, TableMemory, MAIR_EL2_VALUE};

/// EL2 virtual address size: 48 bits, walks start at level 0.
const VA_BITS: u32 = 48;
const START_LEVEL: u8 = 0;
const POOL_TABLES: usize = 64;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u64; 512]; POOL_TABLES]>);

// SAFETY: tables in the pool are handed out once each by `PoolMemory`, which
// exists once (inside `EL2_TABLES`, or on the boot CPU's stack before that).
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([[0; 512]; POOL_TABLES]));

/// Translation tables carved from `POOL`. The EL2 map is an identity map, so
/// a table's physical address is also a pointer to it.
struct PoolMemory {
    next: usize,
}

// SAFETY: pool slots are 4 KiB aligned (the pool is), zeroed when handed
// out and handed out once; the accessors touch exactly the descriptor asked
// for, with one aligned volatile 64-bit access.
unsafe impl TableMemory for PoolMemory {
    fn alloc_zeroed_table(&mut self) -> Option<PhysAddr> {
        if self.next == POOL_TABLES {
            return None;
        }
        let table = POOL.0.get().cast::<[u64; 512]>().wrapping_add(self.next);
        self.next += 1;
        // SAFETY: each pool slot is handed out at most once, so nothing else
        // refers to it; it lies inside the image and is mapped (or the MMU is
        // off).
        unsafe { table.write([0; 512]) };
        Some(PhysAddr::new(table as u64))
    }

    fn free_table(&mut self, _pa: PhysAddr) {
        // EL2 tables are never torn down; a freed slot is simply not reused.
    }

    fn read_descriptor(&self, table: PhysAddr, index: usize) -> u64 {
        // SAFETY: `table` came from `alloc_zeroed_table` (a pool slot, valid
        // as a pointer under the identity map) and `index` < 512.
        unsafe { (table.as_u64() as *const u64).add(index).read_volatile() }
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: usize, value: u64) {
        // SAFETY: as in `read_descriptor`; `&mut self` serialises writers.
        unsafe { (table.as_u64() as *mut u64).add(index).write_volatile(value) }
    }
}

static EL2_TABLES: Mutex<Option<PageTable<PoolMemory, Stage1El2>>> = Mutex::new(None);

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

/// Where the loader put the image, by section.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub start: PhysAddr,
    pub text_end: PhysAddr,
    pub rodata_end: PhysAddr,
    pub end: PhysAddr,
}

pub fn image_layout() -> ImageLayout {
    let at = |p: *const u8| PhysAddr::new(p as u64);
    ImageLayout {
        start: at(addr_of!(__image_start)),
        text_end: at(addr_of!(__text_end)),
        rodata_end: at(addr_of!(__rodata_end)),
        end: at(addr_of!(__image_end)),
    }
}

/// Builds the first EL2 map (the image by section and the device tree's
/// pages read-only) and turns the MMU and caches on. Runs with the MMU off,
/// on the boot CPU, before anything else uses memory attributes: no locks,
/// no heap.
pub fn enable(dtb: PhysAddr, dtb_size: u64) -> Result<(), MapError> {
    let image = image_layout();
    let mut table = PageTable::new(PoolMemory { next: 0 }, Stage1El2, VA_BITS, START_LEVEL)?;
    let span = |a: PhysAddr, b: PhysAddr| b.as_u64() - a.as_u64();
    let mut identity = |pa: PhysAddr, len: u64, attrs| table.map(VirtAddr::new(pa.as_u64()), pa, len, attrs);
    identity(image.start, span(image.start, image.text_end), Attributes::RX_CODE)?;
    identity(image.text_end, span(image.text_end, image.rodata_end), Attributes::RO_DATA)?;
    identity(image.rodata_end, span(image.rodata_end, image.end), Attributes::RW_DATA)?;
    let (dtb_start, dtb_len) = page_span(dtb, dtb_size);
    identity(dtb_start, dtb_len, Attributes::RO_DATA)?;

    // Nothing may sit stale in the caches for memory written with the MMU off.
    invalidate_dcache_range(image.start.as_u64() as usize, span(image.start, image.end) as usize);
    set_translation_registers(table.root());
    enable_mmu_and_caches();
    *EL2_TABLES.lock() = Some(table);
    Ok(())
}

/// The values a secondary CPU loads before turning its MMU on:
/// (MAIR_EL2, TCR_EL2, TTBR0_EL2, SCTLR_EL2).
pub fn secondary_registers() -> [u64; 4] {
    [MAIR_EL2.get(), TCR_EL2.get(), TTBR0_EL2.get(), SCTLR_EL2.get()]
}

/// The page-aligned span covering `[base, base+size)`.
fn page_span(base: PhysAddr, size: u64) -> (PhysAddr, u64) {
    let start = base.align_down(PAGE_SIZE);
    let end = base.checked_add(size).and_then(|e| e.align_up(PAGE_SIZE)).unwrap_or(start);
    (start, end.as_u64() - start.as_u64())
}

/// Maps `[base, base+size)` identity, read-write, execute-never, as normal
/// cacheable memory (RAM) or device-nGnRE memory (MMIO). Pages already mapped
/// (the image, the device tree, a device sharing a page) are left as they are.
pub fn map_identity(base: PhysAddr, size: u64, device: bool) -> Result<(), MapError> {
    let attrs = if device { Attributes::DEVICE } else { Attributes::RW_DATA };
    map_identity_with(base, size, attrs)
}

/// Maps `[base, base+size)` identity, read-only (e.g. the boot bundle).
pub fn map_identity_read_only(base: PhysAddr, size: u64) -> Result<(), MapError> {
    map_identity_with(base, size, Attributes::RO_DATA)
}

fn map_identity_with(base: PhysAddr, size: u64, attrs: Attributes) -> Result<(), MapError> {
    let (start, len) = page_span(base, size);
    let mut guard = EL2_TABLES.lock();
    let table = guard.as_mut().ok_or(MapError::NoMemory)?;
    // Map the free stretches between pages that are already mapped.
    let end = start.as_u64() + len;
    let mut page = start.as_u64();
    while page < end {
        match table.map(VirtAddr::new(page), PhysAddr::new(page), end - page, attrs) {
            Ok(()) => break,
            Err(MapError::AlreadyMapped { at }) => {
                if at > page {
                    table.map(VirtAddr::new(page), PhysAddr::new(page), at - page, attrs)?;
                }
                page = at;
                while page < end && table.translate(VirtAddr::new(page)).is_some() {
                    page += PAGE_SIZE;
                }
            }
            Err(e) => return Err(e),
        }
    }
    // New entries replace invalid ones only: no TLB maintenance needed, just
    // make the table writes visible to the walker before they are used.
    barrier::dsb(barrier::ISHST);
    barrier::isb(barrier::SY);
    Ok(())
}

fn set_translation_registers(root: PhysAddr) {
    MAIR_EL2.set(MAIR_EL2_VALUE);
    let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange);
    TCR_EL2.write(
        TCR_EL2::T0SZ.val(64 - VA_BITS as u64)
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::SH0::Inner
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::PS.val(pa_range.min(5)),
    );
    TTBR0_EL2.set(root.as_u64());
}

fn enable_mmu_and_caches() {
    barrier::isb(barrier::SY);
    // SAFETY: TLB and instruction-cache invalidation only drop cached
    // translations and instructions; nothing architectural changes.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", "ic iallu", "dsb nsh", "isb", options(nostack)) };
    SCTLR_EL2.modify(
        SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable + SCTLR_EL2::SA::Enable + SCTLR_EL2::WXN::Enable,
    );
    barrier::isb(barrier::SY);
}

/// Invalidates (without writing back) the data cache lines covering a
/// range, for memory written with the MMU and caches off.
fn invalidate_dcache_range(addr: usize, len: usize) {
    let line_size = super::cpu::dcache_line_size();
    let mut line = addr & !(line_size - 1);
    while line < addr + len {
        // SAFETY: DC IVAC discards cached copies of memory that, at this
        // point of boot, was only written with the caches off; memory
        // itself holds the current values.
        unsafe { core::arch::asm!("dc ivac, {}", in(reg) line, options(nostack)) };
        line += line_size;
    }
    barrier::dsb(barrier::SY);
}
