//! Exceptions from VMs: the exception entry's way into the core, and one
//! dispatch table by exception class. Each handler returns what the vCPU
//! does next ([`Next`]); the scheduler carries that out. Nothing a VM does
//! can panic the hypervisor: what cannot be emulated is answered with an
//! exception injected into the VM (UNDEF, a synchronous external abort, a
//! virtual SError), and logged as the VM's misbehaviour (`warn!`); a VM is
//! stopped only by its own request or by its owner's policy (`fault`).

use crate::arch::{el2, inject, GuestException, TrapFrame};
use crate::esr::{Esr, ExceptionClass};
use crate::sched::{self, Next};
use crate::vm::{vm_warn, Exit, Vcpu, Vm};

/// ESR.ISS of an SError (IDS and ISS, bits [24:0]).
const SERROR_ISS: u64 = 0x01ff_ffff;

/// The exception entry for exceptions taken from a VM (EL1/EL0): handle
/// it, then resume the vCPU or switch to another. Kept out of line: the
/// arch entry calls it from one arm per exception kind.
#[inline(never)]
pub fn handle_lower(frame: &mut TrapFrame, exception: GuestException) {
    let Some((vm, vcpu)) = sched::current() else {
        crate::arch::fatal(frame, "exception from a lower EL with no vCPU running");
    };
    let next = dispatch(vm, vcpu, frame, exception);
    crate::switch::finish_trap(vm, vcpu, frame, next);
}

/// The exception entry for synchronous exceptions from a VM, the hot path
/// (arch gives it its own vector entry): `dispatch` for `Sync`, without
/// the match on the exception kind.
#[inline(always)]
pub fn handle_guest_sync(frame: &mut TrapFrame) {
    let Some((vm, vcpu)) = sched::current() else {
        crate::arch::fatal(frame, "exception from a lower EL with no vCPU running");
    };
    let next = handle_sync(vm, vcpu, frame);
    crate::switch::finish_trap(vm, vcpu, frame, next);
}

/// Handles `exception`, taken while `vcpu` of `vm` ran with registers
/// `frame`, and says what the vCPU does next.
#[inline(always)]
pub fn dispatch(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, exception: GuestException) -> Next {
    match exception {
        GuestException::Sync => handle_sync(vm, vcpu, frame),
        GuestException::Irq | GuestException::Fiq => {
            vcpu.count_exit(Exit::Irq);
            crate::irq::handle_irqs(Some((vm, vcpu)));
            Next::Resume
        }
        GuestException::SError => {
            // A physical SError while the VM ran (HCR_EL2.AMO routes it
            // here): the architecture's answer is an asynchronous one, a
            // virtual SError the VM takes when it unmasks them, with the
            // physical syndrome (ISS: IDS, AET, EA, DFSC) as its own.
            vm_warn!(vm, "{}: vcpu{}: SError (ESR {:#x}); virtual SError injected", vm.name, vcpu.index, frame.esr);
            vcpu.count_exit(Exit::Other);
            inject::serror(frame.esr & SERROR_ISS);
            Next::Resume
        }
        GuestException::AArch32 => {
            vm_warn!(vm, "{}: vcpu{}: AArch32 exception, which it cannot be running; UNDEF", vm.name, vcpu.index);
            inject::undefined(frame);
            Next::Resume
        }
    }
}

/// The trap table: exception class → handler.
#[inline(always)]
fn handle_sync(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) -> Next {
    let esr = Esr(frame.esr);
    // The most frequent exit, emulated MMIO, first.
    if esr.class() == ExceptionClass::DataAbortLowerEl {
        return crate::emulate::data_abort(vm, vcpu, frame);
    }
    match esr.class() {
        ExceptionClass::Hvc64 => {
            vcpu.count_exit(Exit::Hvc);
            crate::hypercall::handle(vm, vcpu, frame)
        }
        ExceptionClass::Smc64 => {
            vcpu.count_exit(Exit::Smc);
            // A trapped SMC returns to the SMC itself: step over it.
            frame.elr += 4;
            crate::hypercall::handle_smc(vm, vcpu, frame)
        }
        ExceptionClass::InstructionAbortLowerEl => {
            // Guest RAM is mapped executable at stage 2, so a fetch (or its
            // table walk) faults only where there is nothing to execute.
            let ipa = el2::fault_ipa(frame.far);
            crate::fault::unbacked(vm, vcpu, frame, ipa)
        }
        ExceptionClass::WfiWfe => {
            vcpu.count_exit(Exit::Wfi);
            frame.elr += 4;
            if esr.is_wfe() {
                sched::wait_for_event()
            } else {
                crate::interrupts::wait_for_interrupt(vm, vcpu)
            }
        }
        ExceptionClass::SysReg => {
            vcpu.count_exit(Exit::SysReg);
            crate::sysreg_trap::handle(vm, vcpu, frame);
            Next::Resume
        }
        other => {
            vcpu.count_exit(Exit::Other);
            vm_warn!(vm, "{}: vcpu{}: unexpected {} at {:#x} (ESR {esr}); UNDEF", vm.name, vcpu.index, other.description(), frame.elr);
            inject::undefined(frame);
            Next::Resume
        }
    }
}
