//! Exceptions from VMs: the exception entry's way into the core, and one
//! dispatch table by exception class. Each handler returns what the vCPU
//! does next ([`Next`]); the scheduler carries that out. Nothing a VM does
//! can panic the hypervisor: what cannot be emulated is answered with an
//! exception injected into the VM (UNDEF or a synchronous external abort),
//! and logged as the VM's misbehaviour (`warn!`); a VM that cannot go on
//! (it executes outside its memory) is stopped and reported.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::{StopReason, VmState};
use log::info;

use crate::arch::{el2, gic, inject, GuestException, TrapFrame};
use crate::esr::{Esr, ExceptionClass};
use crate::sched::{self, Next};
use crate::vm::{self, vm_warn, Exit, StopInfo, Vcpu, Vm, VmKind};

/// The exception entry for exceptions taken from a VM (EL1/EL0): handle
/// it, then resume the vCPU or switch to another.
pub fn handle_lower(frame: &mut TrapFrame, exception: GuestException) {
    let Some((vm, vcpu)) = sched::current() else {
        crate::arch::fatal(frame, "exception from a lower EL with no vCPU running");
    };
    let next = dispatch(vm, vcpu, frame, exception);
    sched::finish_trap(vm, vcpu, frame, next);
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
            vm_warn!(vm, "{}: vcpu{}: SError (ESR {:#x}), injecting an abort", vm.name, vcpu.index, frame.esr);
            vcpu.count_exit(Exit::Other);
            inject::abort(frame, false, frame.far);
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
            // Executing outside its memory: nothing sensible can follow
            // (its vectors may be exactly what is missing), so stop it.
            vcpu.count_exit(Exit::Abort);
            let ipa = el2::fault_ipa(frame.far);
            crash(vm, vcpu, frame, &format_args!("instruction fetch from {:#x} (IPA {ipa:#x}) outside its memory", frame.far))
        }
        ExceptionClass::WfiWfe => {
            vcpu.count_exit(Exit::Wfi);
            frame.elr += 4;
            wait_for_interrupt(vm, vcpu)
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

/// Stops `vm` because of what `vcpu` did; dom0 cannot be stopped without
/// the machine, so a dom0 crash stops the system.
#[inline(never)]
pub fn crash(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame, what: &dyn core::fmt::Display) -> Next {
    vm_warn!(vm, "{}: vcpu{}: {what} at PC {:#x} (ESR {:#x}); the VM is stopped", vm.name, vcpu.index, frame.elr, frame.esr);
    if vm.kind == VmKind::Dom0 {
        crate::arch::fatal(frame, "dom0 crashed");
    }
    stop_vm(vm, StopInfo { reason: StopReason::Crashed, syndrome: frame.esr, address: frame.elr });
    sched::stop(vcpu)
}

/// Marks `vm` stopped for `info` (its vCPUs stop at their next trap) and
/// tells dom0 through the log; ends the run under `hv.until_idle` when it
/// was the last guest.
pub fn stop_vm(vm: &Vm, info: StopInfo) {
    *vm.stop.lock() = info;
    halt_vm(vm);
    info!("{} (VM {}) stopped: {:?}", vm.name, vm.id.0, info.reason);
    crate::runstate::guest_stopped();
}

/// Marks `vm` stopped and makes every CPU running one of its vCPUs drop it.
pub fn halt_vm(vm: &Vm) {
    vm.set_state(VmState::Stopped);
    for v in &vm.vcpus {
        if v.sched.load(Ordering::Acquire) == sched::state::RUNNING && v.pcpu != crate::arch::cpu::index() {
            gic::send_sgi(gic::SGI_KICK, v.pcpu);
        }
    }
}

/// WFI: return at once if the vCPU has an interrupt to take, else block it
/// until it has one.
#[inline(never)]
pub fn wait_for_interrupt(vm: &Vm, vcpu: &Vcpu) -> Next {
    // Fold in what the vCPU did with its list registers (EOIs) before
    // asking whether anything is left for it.
    vm::flush_interrupts(vm, vcpu);
    if vm.vgic.lock().has_work(vcpu.index) {
        return Next::Resume;
    }
    sched::block(vm, vcpu)
}
