//! Small named wrappers for the system registers the guests read and write,
//! so a grep shows every place that changes the vCPU's state.

use core::arch::asm;

/// Most vCPUs a guest may have (entry.S has one stack each).
pub const MAX_CPUS: usize = 8;

/// This vCPU's index (TPIDR_EL1, set by entry.S; 0 is the boot vCPU).
pub fn index() -> usize {
    let v: u64;
    // SAFETY: reading TPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, tpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v as usize % MAX_CPUS
}

/// MPIDR_EL1 with the RES1/U/MT bits removed: just Aff3..Aff0.
pub fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v & 0xff_00ff_ffff
}

/// CurrentEL as a number (1 or 2).
pub fn current_el() -> u64 {
    let v: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) v, options(nomem, nostack, preserves_flags)) };
    (v >> 2) & 3
}

/// ID_AA64MMFR0_EL1.PARange decoded to bits.
pub fn pa_bits() -> u32 {
    let v: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) v, options(nomem, nostack, preserves_flags)) };
    match v & 0xf {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// Unmask IRQs (DAIF.I).
pub fn enable_irqs() {
    // SAFETY: handlers are installed (VBAR_EL1 set in entry.S) before any
    // interrupt is enabled at the GIC.
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack)) };
}

/// Mask IRQs and FIQs (DAIF.I, DAIF.F).
pub fn disable_irqs() {
    // SAFETY: masking interrupts only delays them.
    unsafe { asm!("msr daifset, #3", options(nomem, nostack)) };
}

/// Runs `f` with IRQs masked, then puts DAIF back as it was: for a lock
/// the IRQ handler also takes, which this vCPU must not hold when its
/// handler runs (it would spin for ever on its own lock).
pub fn without_irqs<R>(f: impl FnOnce() -> R) -> R {
    let daif: u64;
    // SAFETY: reads PSTATE.DAIF, then masks IRQs, which only delays them.
    unsafe { asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nomem, nostack)) };
    let r = f();
    // SAFETY: restores the mask bits read above.
    unsafe { asm!("msr daif, {}", in(reg) daif, options(nomem, nostack)) };
    r
}

/// Waits for an interrupt (returns even if IRQs are masked at PSTATE).
pub fn wfi() {
    // SAFETY: WFI only waits.
    unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// Waits for an event (returns at once if the event register is set, and
/// may return early at any time).
pub fn wfe() {
    // SAFETY: WFE only waits.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// The virtual counter (CNTVCT_EL0), ordered after earlier instructions.
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: ISB + reading the counter has no side effects.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Counter frequency in Hz (CNTFRQ_EL0).
pub fn counter_hz() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Busy-waits `us` microseconds on the virtual counter.
pub fn delay_us(us: u64) {
    let end = counter() + us * counter_hz() / 1_000_000;
    while counter() < end {
        core::hint::spin_loop();
    }
}

/// Microseconds since `start` (a `counter()` value).
pub fn elapsed_us(start: u64) -> u64 {
    (counter() - start) * 1_000_000 / counter_hz().max(1)
}

/// Turns the MMU and caches off and points VBAR_EL1 at 0: "no vectors".
/// Only the crash guest wants this; nothing may run afterwards but the
/// caller's own instructions.
pub fn forget_vectors_and_mmu() {
    // SAFETY: the identity map makes VA == IPA, so the next instruction
    // fetch after SCTLR_EL1.M = 0 is the same; the data cache is cleaned so
    // memory is current. From here on the caller only executes code.
    unsafe {
        asm!(
            "dsb sy",
            "mrs {t}, sctlr_el1",
            "bic {t}, {t}, #1",
            "bic {t}, {t}, #(1 << 2)",
            "msr sctlr_el1, {t}",
            "isb",
            "msr vbar_el1, xzr",
            "isb",
            t = out(reg) _,
            options(nostack)
        )
    };
}

/// Executes a permanently undefined instruction (`udf #0`).
pub fn undefined_instruction() {
    // SAFETY: UDF traps; whatever handles it decides what happens next.
    unsafe { asm!("udf #0", options(nomem, nostack)) };
}
