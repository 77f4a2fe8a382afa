//! The identity map every vCPU runs under (built once by the boot vCPU with
//! the MMU still off, see entry.S). 1 GiB blocks over the whole IPA space
//! the CPU reports (PARange, at most 48 bits): the GiB at the RAM base is
//! Normal write-back memory, everything else Device-nGnRnE and never
//! executable. Whether an address is really backed is left to the layer
//! below (the hypervisor's stage 2, or QEMU's bus), which is what the
//! isolation guest probes.

use core::cell::UnsafeCell;

use hv_abi::hypercall::guest;

use super::cpu;

const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;

const VALID_BLOCK: u64 = 0b01;
const VALID_TABLE: u64 = 0b11;
const ATTR_DEVICE: u64 = 0 << 2; // MAIR index 0
const ATTR_NORMAL: u64 = 1 << 2; // MAIR index 1
const INNER_SHAREABLE: u64 = 3 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; ENTRIES]>);

// SAFETY: written by `testkit_build_page_tables`, on the boot vCPU before
// any other vCPU runs or the MMU is on, and afterwards only by
// `with_l1_entry`, one entry at a time (see there).
unsafe impl Sync for Table {}

#[no_mangle]
static testkit_l0_table: Table = Table(UnsafeCell::new([0; ENTRIES]));
/// VA [0, 512 GiB).
static LOW: Table = Table(UnsafeCell::new([0; ENTRIES]));
/// VA [128 TiB, 128 TiB + 512 GiB), only with a 48-bit PARange.
static HIGH: Table = Table(UnsafeCell::new([0; ENTRIES]));

fn block(addr: u64) -> u64 {
    if addr / GIB == guest::RAM_BASE / GIB {
        addr | VALID_BLOCK | ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG
    } else {
        addr | VALID_BLOCK | ATTR_DEVICE | ACCESS_FLAG | PXN | UXN
    }
}

/// Called from entry.S on the boot vCPU, MMU off, before anything else.
#[no_mangle]
extern "C" fn testkit_build_page_tables() {
    let limit = 1u64 << cpu::pa_bits().min(48);
    // SAFETY: see `impl Sync for Table`: no one else can hold a reference yet.
    let (l0, low, high) =
        unsafe { (&mut *testkit_l0_table.0.get(), &mut *LOW.0.get(), &mut *HIGH.0.get()) };
    for (i, e) in low.iter_mut().enumerate() {
        let addr = i as u64 * GIB;
        *e = if addr < limit { block(addr) } else { 0 };
    }
    l0[0] = low.as_ptr() as u64 | VALID_TABLE;
    let high_base = 256 * ENTRIES as u64 * GIB;
    if high_base < limit {
        for (i, e) in high.iter_mut().enumerate() {
            *e = block(high_base + i as u64 * GIB);
        }
        l0[256] = high.as_ptr() as u64 | VALID_TABLE;
    }
}

/// A 1 GiB block at `addr` that may be executed (Normal memory): for
/// fetching from an address with nothing behind it.
pub fn executable_block(addr: u64) -> u64 {
    (addr & !(GIB - 1)) | VALID_BLOCK | ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG
}

/// A level-1 table descriptor whose level-2 table is at `addr`: for a table
/// walk that reads from an address with nothing behind it.
pub fn table_descriptor(addr: u64) -> u64 {
    (addr & !0xfff) | VALID_TABLE
}

/// Runs `f` with the level-1 entry for VA `[index GiB, index+1 GiB)` set to
/// `desc`, then puts the identity block back. Only for GiBs 2 and 3, which
/// no test guest's RAM or devices use, and from one vCPU at a time.
pub fn with_l1_entry<R>(index: usize, desc: u64, f: impl FnOnce() -> R) -> R {
    assert!((2..4).contains(&index), "with_l1_entry: GiB {index} may be in use");
    let set = |value: u64| {
        // SAFETY: one aligned 64-bit store into this GiB's entry, which no
        // other code reads or writes meanwhile (see above); the TLB
        // maintenance after it makes the walker see it.
        unsafe {
            core::ptr::write_volatile((LOW.0.get() as *mut u64).add(index), value);
            core::arch::asm!("dsb ishst", "tlbi vmalle1", "dsb ish", "isb", options(nostack));
        }
    };
    set(desc);
    let result = f();
    set(block(index as u64 * GIB));
    result
}
