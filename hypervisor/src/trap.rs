//! Exceptions from VMs: the exception entry's way into the core, and one
//! dispatch table by exception class. Each handler returns what the vCPU
//! does next ([`Next`]); the scheduler carries that out. Nothing a VM does
//! can panic the hypervisor: what cannot be emulated is answered with an
//! exception injected into the VM (UNDEF, a synchronous external abort, a
//! virtual SError), and logged as the VM's misbehaviour (`warn!`); a VM is
//! stopped only by its own request or by its owner's policy (`fault`).

use crate::arch::{el2, inject, GuestException, TrapFrame};
use crate::esr::{Esr, ExceptionClass, EC_DATA_ABORT_LOWER_EL, EC_HVC64, EC_SYSREG};
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

/// The exception entry for synchronous exceptions from a VM when the frame
/// is complete: `handle_lower` for `Sync`, without the match on the kind.
#[inline(never)]
pub fn handle_guest_sync(frame: &mut TrapFrame) {
    let Some((vm, vcpu)) = sched::current() else {
        crate::arch::fatal(frame, "exception from a lower EL with no vCPU running");
    };
    let Some(next) = handle_sync::<true>(vm, vcpu, frame) else {
        unreachable!("the full trap table handles every exit");
    };
    crate::switch::finish_trap(vm, vcpu, frame, next);
}

/// What a fast entry (`guest_sync_fast`, `guest_irq_fast`) tells the
/// exception entry, which saved only the registers a call may clobber
/// (`arch::fast_frame_has`) and keeps the rest live in the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fast {
    /// Handled: back to the vCPU, the frame as it is.
    Resume,
    /// Not handled: the exit needs the whole frame (a register the fast
    /// frame lacks, a crash report); complete it and take the full entry
    /// (`handle_guest_sync`, `handle_lower`). Nothing was done yet.
    Full,
    /// Handled, but the CPU may go to another vCPU: complete the frame
    /// (a switch saves all of it) and carry this out with `finish`.
    Finish(Next),
}

/// The hot path of synchronous exits (hypercalls, emulated MMIO, trapped
/// system registers, WFI): handled without the registers the fast frame
/// lacks, or left to the full entry untouched.
#[inline(always)]
pub fn guest_sync_fast(frame: &mut TrapFrame) -> Fast {
    let Some((vm, vcpu)) = sched::current() else {
        return Fast::Full;
    };
    match handle_sync::<false>(vm, vcpu, frame) {
        Some(next) => fast_finish(vm, vcpu, next),
        None => Fast::Full,
    }
}

/// A physical IRQ while a VM ran: handled with the fast frame (interrupt
/// handling never touches the VM's registers).
#[inline(always)]
pub fn guest_irq_fast() -> Fast {
    let Some((vm, vcpu)) = sched::current() else {
        return Fast::Full;
    };
    vcpu.count_exit(Exit::Irq);
    crate::irq::handle_irqs(Some((vm, vcpu)));
    fast_finish(vm, vcpu, Next::Resume)
}

#[inline(always)]
fn fast_finish(vm: &Vm, vcpu: &Vcpu, next: Next) -> Fast {
    match next {
        Next::Resume if crate::switch::prepare_resume(vm, vcpu) => Fast::Resume,
        next => Fast::Finish(next),
    }
}

/// The rest of a fast exit that said `Fast::Finish(next)`, the frame now
/// complete: back to the vCPU or to another.
#[inline(never)]
pub fn finish(frame: &mut TrapFrame, next: Next) {
    let Some((vm, vcpu)) = sched::current() else {
        crate::arch::fatal(frame, "exception from a lower EL with no vCPU running");
    };
    crate::switch::finish_trap(vm, vcpu, frame, next);
}

/// Handles `exception`, taken while `vcpu` of `vm` ran with registers
/// `frame`, and says what the vCPU does next.
#[inline(always)]
pub fn dispatch(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, exception: GuestException) -> Next {
    match exception {
        GuestException::Sync => handle_sync::<true>(vm, vcpu, frame).unwrap_or(Next::Resume),
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

/// The trap table: exception class → handler, the three hottest exits
/// (emulated MMIO, hypercalls, system registers) tested first, the rest
/// out of line. With
/// `FULL` false (the fast frame) an exit that needs a register the fast
/// frame lacks, or may report the VM's registers (a crash), is left alone:
/// `None`, nothing done.
#[inline(always)]
fn handle_sync<const FULL: bool>(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) -> Option<Next> {
    let esr = Esr(frame.esr);
    match esr.ec() {
        EC_DATA_ABORT_LOWER_EL if !FULL && !fast_frame_has_register(esr) => None,
        EC_DATA_ABORT_LOWER_EL => match crate::emulate::data_abort(vm, vcpu, frame) {
            Some(next) => Some(next),
            None if FULL => Some(crate::fault::unbacked(vm, vcpu, frame, el2::fault_ipa(frame.far))),
            None => None,
        },
        EC_HVC64 => {
            vcpu.count_exit(Exit::Hvc);
            Some(crate::hypercall::handle(vm, vcpu, frame))
        }
        // Trapped system registers (a guest's SGIs on GICv3) here too: an
        // SGI write often names one of x19-x29, so its fast entry hands it
        // to the full one, which should not pay the table below as well.
        EC_SYSREG if !FULL && !fast_frame_has_register(esr) => None,
        EC_SYSREG => {
            vcpu.count_exit(Exit::SysReg);
            crate::sysreg_trap::handle(vm, vcpu, frame);
            Some(Next::Resume)
        }
        _ => handle_other::<FULL>(vm, vcpu, frame, esr),
    }
}

/// Whether the fast frame holds the register the trapped instruction
/// transfers, if it transfers one.
#[inline(always)]
fn fast_frame_has_register(esr: Esr) -> bool {
    esr.transfer_register().map_or(true, crate::arch::fast_frame_has)
}

#[inline(never)]
fn handle_other<const FULL: bool>(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, esr: Esr) -> Option<Next> {
    Some(match esr.class() {
        ExceptionClass::Smc64 => {
            vcpu.count_exit(Exit::Smc);
            // A trapped SMC returns to the SMC itself: step over it.
            frame.elr += 4;
            crate::hypercall::handle_smc(vm, vcpu, frame)
        }
        ExceptionClass::InstructionAbortLowerEl if FULL => {
            // Guest RAM is mapped executable at stage 2, so a fetch (or its
            // table walk) faults only where there is nothing to execute.
            let ipa = el2::fault_ipa(frame.far);
            crate::fault::unbacked(vm, vcpu, frame, ipa)
        }
        ExceptionClass::InstructionAbortLowerEl => return None,
        ExceptionClass::WfiWfe => {
            vcpu.count_exit(Exit::Wfi);
            frame.elr += 4;
            if esr.is_wfe() {
                sched::wait_for_event()
            } else {
                crate::interrupts::wait_for_interrupt(vm, vcpu)
            }
        }
        other => {
            vcpu.count_exit(Exit::Other);
            vm_warn!(vm, "{}: vcpu{}: unexpected {} at {:#x} (ESR {esr}); UNDEF", vm.name, vcpu.index, other.description(), frame.elr);
            inject::undefined(frame);
            Next::Resume
        }
    })
}
