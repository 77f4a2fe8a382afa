//! A VM touching an IPA with nothing behind it: a load or store outside its
//! RAM and devices, an instruction fetch from such an address, or its own
//! MMU's table walk reading a descriptor there (ESR ISS.S1PTW). The
//! architecture's answer, and the mechanism's default, is a synchronous
//! external abort the guest takes and handles like bare hardware's: a data
//! or prefetch abort with fault status 0x10, or, on a table walk, 0b0101LL
//! with the stage-1 lookup level (found by redoing the guest's walk,
//! `s1walk`). Stopping the VM instead is a policy dom0 chooses per VM
//! (`FaultPolicy::Stop`, `VmConfigure`), which `crash` carries out.

use hv_abi::hypercall::StopReason;

use crate::arch::{inject, vcpu as arch_vcpu, TrapFrame};
use crate::esr::{self, ExceptionClass};
use crate::sched::{self, Next};
use crate::vm::{vm_warn, Exit, StopInfo, Vcpu, Vm, VmKind};

/// `vcpu` of `vm` took a stage-2 abort (instruction or data, `frame.esr`)
/// at `ipa`, where it has nothing: abort it, or stop it if its owner said so.
#[inline(never)]
pub fn unbacked(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, ipa: u64) -> Next {
    vcpu.count_exit(Exit::Abort);
    let walk = esr::is_s1ptw(frame.esr);
    let what = match (walk, ExceptionClass::from_esr(frame.esr)) {
        (true, _) => "table walk reading",
        (false, ExceptionClass::InstructionAbortLowerEl) => "instruction fetch from",
        _ => "access to",
    };
    if vm.kind == VmKind::Guest && vm.stops_on_fault() {
        return crash(vm, vcpu, frame, &format_args!("{what} IPA {ipa:#x} (VA {:#x}) with nothing behind it", frame.far));
    }
    let level = if walk { crate::s1walk::fault_level(frame.far, arch_vcpu::loaded_stage1(), ipa, |a| vm.read_ram_u64(a)) } else { None };
    vm_warn!(vm, "{}: vcpu{}: {what} IPA {ipa:#x} (VA {:#x}, PC {:#x}) outside its memory; external abort", vm.name, vcpu.index, frame.far, frame.elr);
    let syndrome = esr::injected_external_abort(frame.esr, frame.spsr, level);
    inject::abort(frame, syndrome, frame.far);
    Next::Resume
}

/// Stops `vm` because of what `vcpu` did; dom0 cannot be stopped without
/// the machine, so a dom0 crash stops the system.
#[inline(never)]
pub fn crash(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame, what: &dyn core::fmt::Display) -> Next {
    vm_warn!(vm, "{}: vcpu{}: {what} at PC {:#x} (ESR {:#x}); the VM is stopped", vm.name, vcpu.index, frame.elr, frame.esr);
    if vm.kind == VmKind::Dom0 {
        crate::arch::fatal(frame, "dom0 crashed");
    }
    vm.stop(StopInfo { reason: StopReason::Crashed, syndrome: frame.esr, address: frame.elr });
    crate::runstate::guest_stopped();
    sched::stop(vcpu)
}
