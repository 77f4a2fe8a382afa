//! Exceptions from VMs: one dispatch table by exception class. Nothing a VM
//! does can panic the hypervisor: what cannot be emulated is answered with
//! an exception injected into the VM (UNDEF or a synchronous external
//! abort), and logged as the VM's misbehaviour (`warn!`).

use core::sync::atomic::Ordering;

use log::{trace, warn};

use crate::arch::aarch64::exception::TrapFrame;
use crate::arch::aarch64::gic;
use crate::arch::aarch64::{cpu, el2, inject};
use crate::esr::{AccessSize, DataAbort, Esr, ExceptionClass};
use crate::vm::{self, EmulatedDevice, Vcpu, Vm};

/// Entry from the exception vectors for exceptions taken from EL1/EL0.
pub fn handle_lower(frame: &mut TrapFrame, kind: u64) {
    let Some((vm, vcpu)) = vm::current() else {
        crate::arch::aarch64::exception::fatal(frame, kind, "exception from a lower EL with no vCPU running");
    };
    match kind {
        8 => handle_sync(vm, vcpu, frame),
        9 | 10 => handle_irq(vm, vcpu),
        11 => {
            warn!("{}: vcpu{}: SError (ESR {:#x}), injecting an abort", vm.name, vcpu.index, frame.esr);
            inject::abort(frame, false, frame.far);
        }
        _ => {
            warn!("{}: vcpu{}: AArch32 exception, which it cannot be running; UNDEF", vm.name, vcpu.index);
            inject::undefined(frame);
        }
    }
    if vcpu.needs_flush.load(Ordering::Acquire) {
        vm::flush_interrupts(vm, vcpu);
    }
}

/// The trap table: exception class → handler.
fn handle_sync(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) {
    let esr = Esr(frame.esr);
    // The most frequent exit, emulated MMIO, first.
    if esr.class() == ExceptionClass::DataAbortLowerEl {
        return data_abort(vm, vcpu, frame);
    }
    match esr.class() {
        ExceptionClass::Hvc64 => crate::hypercall::handle(vm, vcpu, frame),
        ExceptionClass::Smc64 => {
            // A trapped SMC returns to the SMC itself: step over it.
            frame.elr += 4;
            crate::hypercall::handle_smc(vm, vcpu, frame);
        }
        ExceptionClass::DataAbortLowerEl => data_abort(vm, vcpu, frame),
        ExceptionClass::InstructionAbortLowerEl => {
            let ipa = el2::fault_ipa(frame.far);
            warn!("{}: vcpu{}: instruction fetch from {:#x} (IPA {:#x}) outside its memory; abort", vm.name, vcpu.index, frame.far, ipa);
            inject::abort(frame, true, frame.far);
        }
        ExceptionClass::WfiWfe => {
            frame.elr += 4;
            wait_for_interrupt(vm, vcpu);
        }
        ExceptionClass::SysReg => {
            crate::sysreg_trap::handle(vm, vcpu, frame);
        }
        other => {
            warn!("{}: vcpu{}: unexpected {} at {:#x} (ESR {esr}); UNDEF", vm.name, vcpu.index, other.description(), frame.elr);
            inject::undefined(frame);
        }
    }
}

/// A data abort at stage 2: an emulated device, or an access outside the
/// VM's memory (answered with a synchronous external abort).
fn data_abort(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) {
    let ipa = el2::fault_ipa(frame.far);
    let Some((device, offset)) = vm.emulated_region(ipa) else {
        warn!("{}: vcpu{}: access to IPA {:#x} (VA {:#x}, PC {:#x}) outside its memory; abort", vm.name, vcpu.index, ipa, frame.far, frame.elr);
        inject::abort(frame, false, frame.far);
        return;
    };
    let abort = DataAbort::decode(frame.esr);
    let DataAbort::Emulatable { size, register, write, .. } = abort else {
        warn!("{}: vcpu{}: {:?} access to {:#x} the hypervisor cannot decode (no ISV: load/store pair or writeback?); abort", vm.name, vcpu.index, device, ipa);
        inject::abort(frame, false, frame.far);
        return;
    };
    let result: Result<Option<u64>, crate::vgic::VgicError> = if write {
        let value = if register == 31 { 0 } else { frame.x[register as usize] };
        let value = value & mask(size);
        trace!("{}: vcpu{}: {:?}+{:#x} <- {:#x} ({:?})", vm.name, vcpu.index, device, offset, value, size);
        let result = vm::with_effects(vm, |effects| {
            let mut vgic = vm.vgic.lock();
            match device {
                EmulatedDevice::GicDistributor => vgic.dist_write(vcpu.index, offset, size, value, effects),
                EmulatedDevice::GicRedistributors => vgic.redist_write(vcpu.index, offset, size, value, effects),
            }
        });
        result.map(|()| None)
    } else {
        let mut vgic = vm.vgic.lock();
        let value = match device {
            EmulatedDevice::GicDistributor => vgic.dist_read(vcpu.index, offset, size),
            EmulatedDevice::GicRedistributors => vgic.redist_read(vcpu.index, offset, size),
        };
        value.map(Some)
    };
    match result {
        Ok(Some(value)) => {
            let value = abort.load_value(value);
            trace!("{}: vcpu{}: {:?}+{:#x} -> {:#x}", vm.name, vcpu.index, device, offset, value);
            if register != 31 {
                frame.x[register as usize] = value;
            }
            frame.elr += 4;
        }
        Ok(None) => frame.elr += 4,
        Err(e) => {
            warn!("{}: vcpu{}: bad {:?} access at offset {:#x} ({:?}, write {}): {:?}; abort", vm.name, vcpu.index, device, offset, size, write, e);
            inject::abort(frame, false, frame.far);
        }
    }
}

fn mask(size: AccessSize) -> u64 {
    match size {
        AccessSize::Double => u64::MAX,
        other => (1u64 << (other.bytes() * 8)) - 1,
    }
}

/// A physical interrupt while a vCPU ran (or while it waited).
pub fn handle_irq(vm: &Vm, vcpu: &Vcpu) {
    loop {
        let iar = gic::acknowledge();
        let intid = iar & 0x3ff;
        if intid >= 1020 {
            return;
        }
        gic::priority_drop(iar);
        trace!("{}: vcpu{}: physical interrupt {intid}", vm.name, vcpu.index);
        if intid == gic::SGI_KICK {
            gic::deactivate(iar);
            vcpu.needs_flush.store(true, Ordering::Release);
            continue;
        }
        if Some(intid) == crate::boot::maintenance_intid() {
            gic::deactivate(iar);
            vcpu.needs_flush.store(true, Ordering::Release);
            continue;
        }
        // Hardware-linked: stays active until the VM's EOI deactivates it.
        let delivered = vm::with_effects(vm, |effects| vm.vgic.lock().inject_hw(intid, vcpu.index, effects).is_ok());
        if !delivered {
            warn!("{}: physical interrupt {intid} not owned by the VM; disabling it", vm.name);
            gic::set_enabled(intid, false);
            gic::deactivate(iar);
        }
        vcpu.needs_flush.store(true, Ordering::Release);
    }
}

/// WFI: return at once if the vCPU has an interrupt to take, else wait on
/// this CPU (interrupts masked: a pending physical interrupt still ends the
/// wait, and is handled here) until it has one.
pub fn wait_for_interrupt(vm: &Vm, vcpu: &Vcpu) {
    loop {
        // Fold in what the vCPU did with its list registers (EOIs) before
        // asking whether anything is left for it.
        vm::flush_interrupts(vm, vcpu);
        if vm.vgic.lock().has_work(vcpu.index) {
            return;
        }
        cpu::wait_for_interrupt();
        handle_irq(vm, vcpu);
    }
}
