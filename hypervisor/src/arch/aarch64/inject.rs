//! Injecting synchronous exceptions into the running vCPU's EL1, as the
//! hardware would take them (Arm ARM D1.3 "Exception entry").

use super::exception::TrapFrame;
use aarch64_cpu::registers::{Readable, Writeable, ELR_EL1, ESR_EL1, FAR_EL1, SPSR_EL1, VBAR_EL1};

/// PSTATE for EL1 exception entry: EL1h, D, A, I, F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
const IL: u64 = 1 << 25;
/// Fault status code "synchronous external abort, not on a table walk".
const FSC_SYNC_EXTERNAL: u64 = 0x10;

fn from_el0(spsr: u64) -> bool {
    spsr & 0xf == 0
}

fn inject(frame: &mut TrapFrame, esr: u64, far: Option<u64>) {
    let offset = match frame.spsr & 0xf {
        0b0100 => 0x000, // EL1t: current EL with SP_EL0
        0b0000 => 0x400, // EL0t: lower EL, AArch64
        _ => 0x200,      // EL1h: current EL with SP_EL1
    };
    ELR_EL1.set(frame.elr);
    SPSR_EL1.set(frame.spsr);
    ESR_EL1.set(esr);
    if let Some(far) = far {
        FAR_EL1.set(far);
    }
    frame.elr = VBAR_EL1.get() + offset;
    frame.spsr = SPSR_EL1H_MASKED;
}

/// UNDEFINED instruction (EC 0).
pub fn undefined(frame: &mut TrapFrame) {
    inject(frame, IL, None);
}

/// Synchronous external abort on a data access or instruction fetch at
/// virtual address `far`.
pub fn abort(frame: &mut TrapFrame, instruction: bool, far: u64) {
    let ec: u64 = match (instruction, from_el0(frame.spsr)) {
        (false, true) => 0x24,
        (false, false) => 0x25,
        (true, true) => 0x20,
        (true, false) => 0x21,
    };
    let wnr = if instruction { 0 } else { frame.esr & (1 << 6) };
    inject(frame, (ec << 26) | IL | wnr | FSC_SYNC_EXTERNAL, Some(far));
}
