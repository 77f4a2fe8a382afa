//! Injecting synchronous exceptions into the running vCPU's EL1, as the
//! hardware would take them (Arm ARM D1.3 "Exception entry").

use super::exception::TrapFrame;
use aarch64_cpu::registers::{Readable, Writeable, ELR_EL1, ESR_EL1, FAR_EL1, SPSR_EL1, VBAR_EL1};

/// PSTATE for EL1 exception entry: EL1h, D, A, I, F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
const IL: u64 = 1 << 25;

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

/// A synchronous abort with syndrome `esr` (ESR_EL1, built by the core:
/// `esr::injected_external_abort`) at virtual address `far`.
pub fn abort(frame: &mut TrapFrame, esr: u64, far: u64) {
    inject(frame, esr, Some(far));
}

/// Makes a virtual SError pending for the running vCPU (HCR_EL2.VSE), with
/// `syndrome` as its ESR_EL1.ISS where the CPU has FEAT_RAS (VSESR_EL2;
/// without RAS the ISS is IMPLEMENTATION DEFINED). It stays pending until
/// the guest takes it (PSTATE.A clear), across vCPU switches (`VcpuArch`
/// saves it), and the hardware clears VSE when it is taken.
pub fn serror(syndrome: u64) {
    super::vcpu::set_pending_serror(Some(syndrome));
}
