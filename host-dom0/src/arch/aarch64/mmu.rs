//! The EL1 stage-1 MMU: an identity map (TTBR0_EL1, 4 KiB granule, 39-bit
//! addresses) built from the device tree's `/memory` before anything else
//! runs; policy and descriptor layout are in `crate::pagetable`. Caches on.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1};

use super::cpu;
use crate::fdt_scan;
use crate::pagetable::{self, ENTRIES, MAIR_VALUE, VA_BITS};

/// Level-2 tables available for GiBs that memory covers only partly.
const L2_TABLES: usize = 8;
/// Memory regions taken from the device tree; more are ignored (mapped Device).
const MAX_REGIONS: usize = 16;
/// Largest device tree accepted.
const MAX_DTB: usize = 2 << 20;

#[repr(C, align(4096))]
struct Tables {
    l1: [u64; ENTRIES],
    l2: [[u64; ENTRIES]; L2_TABLES],
}

struct TableStore(UnsafeCell<Tables>);

// SAFETY: written only by the boot CPU in `init`, before any other CPU runs
// and before the MMU walks it, and in `map_normal_gibs` (boot CPU, before
// the secondaries start, break-before-make); read-only (by the MMU) otherwise.
unsafe impl Sync for TableStore {}

static TABLES: TableStore = TableStore(UnsafeCell::new(Tables {
    l1: [0; ENTRIES],
    l2: [[0; ENTRIES]; L2_TABLES],
}));

/// The register values the secondary CPUs load (see smp.rs / boot.S).
pub struct MmuRegs {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub sctlr: u64,
}

static TCR: AtomicU64 = AtomicU64::new(0);
static SCTLR: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Outcome of `init`, for the boot log once the console exists.
pub struct MapReport {
    pub regions: usize,
    pub l2_tables: Result<usize, usize>,
}

/// Builds the identity map from the tree at `dtb` and turns the MMU and
/// caches on. Returns the device tree (empty if there is none) and a report.
/// Runs first, with the MMU off: it allocates nothing and uses no atomics
/// that need cacheable memory (plain stores only, until the MMU is on).
pub fn init(dtb: usize) -> (&'static [u8], MapReport) {
    let blob = device_tree(dtb);
    let mut regions = [(0u64, 0u64); MAX_REGIONS];
    let mut n = 0;
    fdt_scan::for_each_memory(blob, |base, size| {
        if n < MAX_REGIONS {
            regions[n] = (base, size);
            n += 1;
        }
    });
    if n == 0 {
        // No usable /memory: at least our own GiB must be cacheable RAM.
        let image = core::ptr::addr_of!(__image_start) as u64;
        regions[0] = (image & !(pagetable::L1_BLOCK - 1), pagetable::L1_BLOCK);
        n = 1;
    }
    // The initrd (under the hypervisor: the boot bundle, mapped read-only
    // at stage 2 outside dom0's /memory) is read as ordinary memory: map it
    // Normal, or unaligned loads from it would fault as Device accesses.
    if let Some(initrd) = fdt_scan::initrd(blob) {
        if n < MAX_REGIONS {
            regions[n] = initrd;
            n += 1;
        }
    }
    let tables = TABLES.0.get();
    // SAFETY: see `TableStore`: nothing else accesses TABLES now.
    let tables = unsafe { &mut *tables };
    let l2_base = core::ptr::addr_of!(tables.l2) as u64;
    let l2_tables = pagetable::build(&regions[..n], &mut tables.l1, &mut tables.l2, |i| {
        l2_base + (i * ENTRIES * 8) as u64
    });
    // Everything written so far (relocations, BSS, tables) went to memory
    // with the MMU off; drop any stale cache lines for the image.
    let start = core::ptr::addr_of!(__image_start) as usize;
    let end = core::ptr::addr_of!(__image_end) as usize;
    invalidate_dcache_range(start, end - start);

    // IPS: the CPU's physical address size, at most 48 bits (4 KiB granule).
    let ips = ID_AA64MMFR0_EL1.get() & 0xf;
    let ips = ips.min(5);
    let tcr = (64 - u64::from(VA_BITS))    // T0SZ
        | (0b01 << 8)                      // IRGN0: write-back, write-allocate
        | (0b01 << 10)                     // ORGN0: write-back, write-allocate
        | (0b11 << 12)                     // SH0: inner shareable (TG0 = 0: 4 KiB)
        | (1 << 23)                        // EPD1: no TTBR1 walks
        | (ips << 32); // IPS
    let sctlr = 0x30d0_0800 | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 12); // M, C, SA, I
    let ttbr0 = core::ptr::addr_of!(tables.l1) as u64;
    // SAFETY: the tables identity-map all of RAM (including this code, its
    // stack and data) as Normal memory and the rest as Device, so every
    // address in use means the same before and after the MMU is enabled.
    unsafe {
        core::arch::asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) MAIR_VALUE,
            tcr = in(reg) tcr,
            ttbr0 = in(reg) ttbr0,
            sctlr = in(reg) sctlr,
            options(nostack),
        );
    }
    TCR.store(tcr, Ordering::Relaxed);
    SCTLR.store(sctlr, Ordering::Relaxed);
    (
        blob,
        MapReport {
            regions: n,
            l2_tables,
        },
    )
}

/// Maps the GiBs of `[base, base + size)` (GiB-aligned, inside the 39-bit
/// map, with no memory in them, so Device blocks until now, never touched)
/// as Normal memory: the area where the hypervisor maps guests' RAM for
/// dom0's backends (`crate::guestwin`). Boot CPU only, before the secondary
/// CPUs start.
pub fn map_normal_gibs(base: u64, size: u64) {
    use pagetable::{block, Attr, L1_BLOCK};
    let first = (base / L1_BLOCK) as usize;
    let last = (base.saturating_add(size) / L1_BLOCK).min(ENTRIES as u64) as usize;
    for i in first..last {
        let va = i as u64 * L1_BLOCK;
        // SAFETY: `TABLES` is the live map (see `TableStore`): this CPU is
        // the only one running and the only writer, and the entry is one
        // aligned u64 of the static level-1 table. Break before make: the
        // old block is made invalid and its TLB entries invalidated (on
        // every CPU, inner shareable) before the new one is written; no
        // code, stack or data of ours is in these GiBs.
        unsafe {
            let entry = core::ptr::addr_of_mut!((*TABLES.0.get()).l1[i]);
            entry.write_volatile(0);
            core::arch::asm!("dsb ishst", "tlbi vae1is, {}", "dsb ish", in(reg) va >> 12, options(nostack));
            entry.write_volatile(block(va, Attr::Normal));
        }
    }
    barrier::dsb(barrier::ISHST);
    barrier::isb(barrier::SY);
}

/// What a secondary CPU loads to share this map.
pub fn regs() -> MmuRegs {
    MmuRegs {
        mair: MAIR_VALUE,
        tcr: TCR.load(Ordering::Relaxed),
        // SAFETY: only the address of the static is taken.
        ttbr0: unsafe { core::ptr::addr_of!((*TABLES.0.get()).l1) } as u64,
        sctlr: SCTLR.load(Ordering::Relaxed),
    }
}

/// The device tree blob at `dtb`, bounded by its header's `totalsize`, or an
/// empty slice if there is no valid header there.
fn device_tree(dtb: usize) -> &'static [u8] {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return &[];
    }
    // SAFETY: the boot protocol (booting.rst) says x0 holds the physical
    // address of a device tree in RAM, 8-byte aligned, which the loader keeps
    // for us and nothing writes; the header is 40 bytes. With the MMU off,
    // physical = virtual.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 40) };
    let Some(total) = fdt_scan::total_size(header).filter(|&t| (40..=MAX_DTB).contains(&t)) else {
        return &[];
    };
    // SAFETY: as above; `totalsize` bytes belong to the tree.
    unsafe { core::slice::from_raw_parts(dtb as *const u8, total) }
}

fn invalidate_dcache_range(start: usize, len: usize) {
    let line = cpu::dcache_line();
    let mut at = start & !(line - 1);
    while at < start + len {
        // SAFETY: with the MMU off, memory holds the current data for the
        // image; discarding cache lines loses nothing (the loader cleaned the
        // image to the point of coherency, so none is dirty).
        unsafe { core::arch::asm!("dc ivac, {}", in(reg) at, options(nostack, preserves_flags)) };
        at += line;
    }
    barrier::dsb(barrier::SY);
}
