//! Small named accessors for the CPU state the hypervisor reads or changes.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{CurrentEL, Readable, Writeable, CNTFRQ_EL0, CNTPCT_EL0, MPIDR_EL1, TPIDR_EL2};

/// Upper bound on physical CPUs the hypervisor manages.
pub const MAX_CPUS: usize = 8;

/// Logical index of the running CPU (0 = boot CPU), kept in TPIDR_EL2.
#[inline]
pub fn index() -> usize {
    TPIDR_EL2.get() as usize
}

/// Sets the running CPU's logical index; done once per CPU at boot.
pub fn set_index(index: usize) {
    TPIDR_EL2.set(index as u64);
}

/// The current exception level (0..=3).
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// The affinity fields of MPIDR_EL1 (Aff3..Aff0), as in the device tree's
/// `/cpus/cpu@*/reg`.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// Generic timer frequency in Hz.
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The physical count, in `counter_frequency()` ticks.
pub fn counter() -> u64 {
    asm::barrier::isb(asm::barrier::SY);
    CNTPCT_EL0.get()
}

pub fn wait_for_event() {
    asm::wfe();
}

pub fn send_event() {
    asm::sev();
}

/// Masks all interrupts on this CPU and waits forever.
pub fn park() -> ! {
    // SAFETY: writing DAIF only masks interrupts for this CPU; `wfe` has no
    // memory effects.
    unsafe { core::arch::asm!("msr daifset, #0xf", options(nomem, nostack)) };
    loop {
        asm::wfe();
    }
}

/// Cleans (writes back) the data cache lines covering `[addr, addr+len)` to
/// the point of coherency, so a CPU with its MMU off reads the new values.
pub fn clean_dcache_range(addr: usize, len: usize) {
    let line_size = dcache_line_size();
    let mut line = addr & !(line_size - 1);
    while line < addr + len {
        // SAFETY: DC CVAC on a mapped address only writes back cache
        // contents; it changes no architectural memory values.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) line, options(nostack)) };
        line += line_size;
    }
    asm::barrier::dsb(asm::barrier::SY);
}

/// Smallest data cache line in bytes (CTR_EL0.DminLine is log2 of words).
pub fn dcache_line_size() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4 << ((ctr >> 16) & 0xf)
}

/// Waits for an interrupt (which ends the wait even while masked). One
/// copy, whose wake-up point is the symbol `el2_idle_wake`: instruction
/// traces (scripts/trace-bench.sh) count an idle CPU's latency from there.
#[inline(never)]
#[allow(named_asm_labels)] // one copy (never inlined), so one label
pub fn wait_for_interrupt() {
    // SAFETY: WFI only waits; the label marks the next instruction.
    unsafe { core::arch::asm!("wfi", ".globl el2_idle_wake", "el2_idle_wake:", options(nomem, nostack, preserves_flags)) };
}

/// Zeroes `[pa, pa+len)` (mapped read-write, `len` a multiple of the
/// DC ZVA block) with DC ZVA, a cache line per instruction.
pub fn zero(pa: crate::addr::PhysAddr, len: u64) {
    let dczid: u64;
    // SAFETY: reading DCZID_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, dczid_el0", out(reg) dczid, options(nomem, nostack)) };
    let block = 4u64 << (dczid & 0xf);
    let start = pa.as_u64();
    if dczid & 0x10 != 0 || !start.is_multiple_of(block) || !len.is_multiple_of(block) {
        // DC ZVA prohibited or the range is odd: plain stores.
        // SAFETY: the caller owns the mapped range.
        unsafe { core::ptr::write_bytes(start as *mut u8, 0, len as usize) };
        return;
    }
    let mut at = start;
    while at < start + len {
        // SAFETY: DC ZVA zeroes one block of the caller's mapped range.
        unsafe { core::arch::asm!("dc zva, {}", in(reg) at, options(nostack)) };
        at += block;
    }
}

/// Reads the AArch64 ID register at op0 3, op1 0, CRn 0, `crm`, `op2`
/// (`idregs::IdReg::encoding`); 0 for any other encoding.
pub fn read_id_register(crm: u8, op2: u8) -> u64 {
    use super::sysreg::read_sysreg;
    match (crm, op2) {
        (4, 0) => read_sysreg!("s3_0_c0_c4_0"), // ID_AA64PFR0_EL1
        (4, 1) => read_sysreg!("s3_0_c0_c4_1"), // ID_AA64PFR1_EL1
        (5, 0) => read_sysreg!("s3_0_c0_c5_0"), // ID_AA64DFR0_EL1
        (6, 0) => read_sysreg!("s3_0_c0_c6_0"), // ID_AA64ISAR0_EL1
        (6, 1) => read_sysreg!("s3_0_c0_c6_1"), // ID_AA64ISAR1_EL1
        (6, 2) => read_sysreg!("s3_0_c0_c6_2"), // ID_AA64ISAR2_EL1 (RAZ before Armv8.7)
        (7, 0) => read_sysreg!("s3_0_c0_c7_0"), // ID_AA64MMFR0_EL1
        (7, 1) => read_sysreg!("s3_0_c0_c7_1"), // ID_AA64MMFR1_EL1
        (7, 2) => read_sysreg!("s3_0_c0_c7_2"), // ID_AA64MMFR2_EL1
        _ => 0,
    }
}
