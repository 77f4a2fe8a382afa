//! Small named operations on the running CPU: identity, counter, interrupt masking, waiting.

use aarch64_cpu::asm;
use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTVCT_EL0, MPIDR_EL1, TPIDR_EL1};

/// Most CPUs dom0 brings up (stacks and per-CPU state are sized by it).
pub const MAX_CPUS: usize = 8;

/// This CPU's index (0 = boot CPU), as boot.S put it in TPIDR_EL1.
pub fn index() -> usize {
    (TPIDR_EL1.get() as usize).min(MAX_CPUS - 1)
}

/// This CPU's affinity (Aff3..Aff0 of MPIDR_EL1), as the device tree's `cpu` `reg` gives it.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// The virtual counter (CNTVCT_EL0).
pub fn counter() -> u64 {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTVCT_EL0.get()
}

/// Counter frequency in Hz (CNTFRQ_EL0, set by firmware).
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Masks IRQs and returns the previous DAIF, for [`restore_irqs`].
pub fn save_and_mask_irqs() -> u64 {
    let daif: u64;
    // SAFETY: reading DAIF and masking IRQs has no memory effects; the
    // caller restores the mask with `restore_irqs`.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nomem, nostack, preserves_flags)) };
    daif
}

/// Puts back the interrupt mask [`save_and_mask_irqs`] returned.
pub fn restore_irqs(daif: u64) {
    // SAFETY: writes back a DAIF value read from this CPU.
    unsafe { core::arch::asm!("msr daif, {}", in(reg) daif, options(nostack, preserves_flags)) };
}

/// Masks IRQs on this CPU.
pub fn mask_irqs() {
    // SAFETY: only changes PSTATE.I; no memory is touched.
    unsafe { core::arch::asm!("msr daifset, #2", options(nomem, nostack, preserves_flags)) };
}

/// Unmasks IRQs on this CPU (pending ones are taken right away).
pub fn unmask_irqs() {
    // SAFETY: the vectors are installed and every IRQ source has a handler or
    // is disabled; `memory` keeps accesses from moving across the unmask.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nostack, preserves_flags)) };
}

/// Sleeps in WFI with interrupts enabled until `done()` is true. `done` is
/// checked with IRQs masked and WFI entered before unmasking, so an
/// interrupt arriving between the check and the WFI still wakes the CPU.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    loop {
        mask_irqs();
        if done() {
            unmask_irqs();
            return;
        }
        asm::wfi();
        unmask_irqs();
    }
}

/// Waits in WFI with interrupts enabled, forever (CPUs with nothing to do).
pub fn idle() -> ! {
    unmask_irqs();
    loop {
        asm::wfi();
    }
}

/// Stops this CPU for good.
pub fn park() -> ! {
    mask_irqs();
    loop {
        asm::wfe();
    }
}

/// Cleans the data cache lines holding `[start, start + len)` to the point of
/// coherency, for readers with the MMU off (secondary CPUs, spin-table firmware).
pub fn clean_dcache_range(start: usize, len: usize) {
    let line = dcache_line();
    let mut at = start & !(line - 1);
    while at < start + len {
        // SAFETY: DC CVAC only writes back a cache line; it changes no data.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) at, options(nostack, preserves_flags)) };
        at += line;
    }
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}

/// Smallest data cache line (CTR_EL0.DminLine).
pub fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reads an ID register.
    unsafe {
        core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags))
    };
    4 << ((ctr >> 16) & 0xf)
}
