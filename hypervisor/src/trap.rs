//! Exceptions from VMs: one dispatch table by exception class. Nothing a VM
//! does can panic the hypervisor: what cannot be emulated is answered with
//! an exception injected into the VM (UNDEF or a synchronous external
//! abort), and logged as the VM's misbehaviour (`warn!`); a VM that cannot
//! go on (it executes outside its memory) is stopped and reported.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::StopReason;
use log::{info, trace, warn};

use crate::vm::vm_warn;
use crate::arch::aarch64::exception::TrapFrame;
use crate::arch::aarch64::{el2, gic, inject};
use crate::esr::{AccessSize, DataAbort, Esr, ExceptionClass};
use crate::sched;
use crate::vm::{self, EmulatedDevice, Exit, StopInfo, Vcpu, Vm, VmKind};

/// Entry from the exception vectors for exceptions taken from EL1/EL0.
pub fn handle_lower(frame: &mut TrapFrame, kind: u64) {
    let Some((vm, vcpu)) = sched::current() else {
        crate::arch::aarch64::exception::fatal(frame, kind, "exception from a lower EL with no vCPU running");
    };
    match kind {
        8 => handle_sync(vm, vcpu, frame),
        9 | 10 => {
            vcpu.count_exit(Exit::Irq);
            handle_irqs(Some((vm, vcpu)));
        }
        11 => {
            vm_warn!(vm, "{}: vcpu{}: SError (ESR {:#x}), injecting an abort", vm.name, vcpu.index, frame.esr);
            vcpu.count_exit(Exit::Other);
            inject::abort(frame, false, frame.far);
        }
        _ => {
            vm_warn!(vm, "{}: vcpu{}: AArch32 exception, which it cannot be running; UNDEF", vm.name, vcpu.index);
            inject::undefined(frame);
        }
    }
    if vcpu.needs_flush.load(Ordering::Acquire) {
        vm::flush_interrupts(vm, vcpu);
    }
    sched::maybe_switch(vm, frame);
}

/// The trap table: exception class → handler.
#[inline(always)]
fn handle_sync(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) {
    let esr = Esr(frame.esr);
    // The most frequent exit, emulated MMIO, first.
    if esr.class() == ExceptionClass::DataAbortLowerEl {
        return data_abort(vm, vcpu, frame);
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
            crate::hypercall::handle_smc(vm, vcpu, frame);
        }
        ExceptionClass::InstructionAbortLowerEl => {
            // Executing outside its memory: nothing sensible can follow
            // (its vectors may be exactly what is missing), so stop it.
            vcpu.count_exit(Exit::Abort);
            let ipa = el2::fault_ipa(frame.far);
            crash(vm, vcpu, frame, &format_args!("instruction fetch from {:#x} (IPA {ipa:#x}) outside its memory", frame.far));
        }
        ExceptionClass::WfiWfe => {
            vcpu.count_exit(Exit::Wfi);
            frame.elr += 4;
            wait_for_interrupt(vm, vcpu, frame);
        }
        ExceptionClass::SysReg => {
            vcpu.count_exit(Exit::SysReg);
            crate::sysreg_trap::handle(vm, vcpu, frame);
        }
        other => {
            vcpu.count_exit(Exit::Other);
            vm_warn!(vm, "{}: vcpu{}: unexpected {} at {:#x} (ESR {esr}); UNDEF", vm.name, vcpu.index, other.description(), frame.elr);
            inject::undefined(frame);
        }
    }
}

/// Stops `vm` because of what `vcpu` did; dom0 cannot be stopped without
/// the machine, so a dom0 crash stops the system.
#[inline(never)]
pub fn crash(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame, what: &dyn core::fmt::Display) -> ! {
    vm_warn!(vm, "{}: vcpu{}: {what} at PC {:#x} (ESR {:#x}); the VM is stopped", vm.name, vcpu.index, frame.elr, frame.esr);
    if vm.kind == VmKind::Dom0 {
        crate::arch::aarch64::exception::fatal(frame, 8, "dom0 crashed");
    }
    stop_vm(vm, StopInfo { reason: StopReason::Crashed, syndrome: frame.esr, address: frame.elr });
    sched::stop_current(frame)
}

/// Marks `vm` stopped for `info` (its vCPUs stop at their next trap) and
/// tells dom0 through the log; ends the run under `hv.until_idle` when it
/// was the last guest.
pub fn stop_vm(vm: &Vm, info: StopInfo) {
    *vm.stop.lock() = info;
    halt_vm(vm);
    info!("{} (VM {}) stopped: {:?}", vm.name, vm.id.0, info.reason);
    crate::boot::guest_stopped();
}

/// Marks `vm` stopped and makes every CPU running one of its vCPUs drop it.
pub fn halt_vm(vm: &Vm) {
    vm.set_state(hv_abi::hypercall::VmState::Stopped);
    for v in &vm.vcpus {
        if v.sched.load(Ordering::Acquire) == sched::state::RUNNING && v.pcpu != crate::arch::aarch64::cpu::index() {
            gic::send_sgi(gic::SGI_KICK, v.pcpu);
        }
    }
}

/// A data abort at stage 2: an emulated device, or an access outside the
/// VM's memory (answered with a synchronous external abort). Kept out of
/// line so the other exits do not pay for its stack frame; the hot case, a
/// guest reading a GIC register, is answered here with few registers live,
/// everything else in `data_abort_slow`.
#[inline(never)]
fn data_abort(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) {
    let ipa = el2::fault_ipa(frame.far);
    if let Some((device @ (EmulatedDevice::GicDistributor | EmulatedDevice::GicRedistributors), offset)) = vm.emulated_region(ipa) {
        let abort = DataAbort::decode(frame.esr);
        if let DataAbort::Emulatable { size, register, write: false, .. } = abort {
            let value = match device {
                EmulatedDevice::GicDistributor => vm.vgic.lock().dist_read(vcpu.index, offset, size),
                _ => vm.vgic.lock().redist_read(vcpu.index, offset, size),
            };
            if let Ok(value) = value {
                vcpu.count_exit(Exit::Mmio);
                if register != 31 {
                    frame.x[register as usize] = abort.load_value(value);
                }
                frame.elr += 4;
                return;
            }
        }
    }
    data_abort_slow(vm, vcpu, frame, ipa)
}

/// Every other data abort (see `data_abort`).
#[inline(never)]
fn data_abort_slow(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, ipa: u64) {
    // The GIC (the hot path) needs no look at dom0's windows; the console
    // UART is the hypervisor's only until dom0 takes it over.
    let emulated = vm.emulated_region(ipa);
    let window = match emulated {
        Some((d, _)) if d != EmulatedDevice::ConsoleUart => None,
        _ => vm.forwarded_at(ipa),
    };
    let Some((device, offset)) = emulated.filter(|_| window.is_none()) else {
        if let Some(window) = window {
            vcpu.count_exit(Exit::Mmio);
            if crate::io::forward(vm, vcpu, frame, ipa, DataAbort::decode(frame.esr), window.post_writes).is_err() {
                vm_warn!(vm, "{}: vcpu{}: access to {:#x} dom0 cannot take (no ISV, or no IO page); abort", vm.name, vcpu.index, ipa);
                inject::abort(frame, false, frame.far);
            }
            return;
        }
        vcpu.count_exit(Exit::Abort);
        vm_warn!(vm, "{}: vcpu{}: access to IPA {:#x} (VA {:#x}, PC {:#x}) outside its memory; abort", vm.name, vcpu.index, ipa, frame.far, frame.elr);
        inject::abort(frame, false, frame.far);
        return;
    };
    vcpu.count_exit(Exit::Mmio);
    let abort = DataAbort::decode(frame.esr);
    let DataAbort::Emulatable { size, register, write, .. } = abort else {
        vm_warn!(vm, "{}: vcpu{}: {:?} access to {:#x} the hypervisor cannot decode (no ISV: load/store pair or writeback?); abort", vm.name, vcpu.index, device, ipa);
        inject::abort(frame, false, frame.far);
        return;
    };
    let result = if write {
        let value = if register == 31 { 0 } else { frame.x[register as usize] };
        mmio_write(vm, vcpu, device, offset, size, value & size.mask()).map(|()| None)
    } else {
        match device {
            EmulatedDevice::GicDistributor => vm.vgic.lock().dist_read(vcpu.index, offset, size).map(Some),
            EmulatedDevice::GicRedistributors => vm.vgic.lock().redist_read(vcpu.index, offset, size).map(Some),
            EmulatedDevice::ConsoleUart => Ok(Some(console_read(offset))),
        }
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
            vm_warn!(vm, "{}: vcpu{}: bad {:?} access at offset {:#x} ({:?}, write {}): {:?}; abort", vm.name, vcpu.index, device, offset, size, write, e);
            inject::abort(frame, false, frame.far);
        }
    }
}

/// An emulated device register write (out of line: it needs the effects
/// machinery, which reads do not).
#[inline(never)]
fn mmio_write(vm: &Vm, vcpu: &Vcpu, device: EmulatedDevice, offset: u64, size: AccessSize, value: u64) -> Result<(), crate::vgic::VgicError> {
    trace!("{}: vcpu{}: {:?}+{:#x} <- {:#x} ({:?})", vm.name, vcpu.index, device, offset, value, size);
    match device {
        EmulatedDevice::ConsoleUart => {
            console_write(vm, offset, value);
            Ok(())
        }
        EmulatedDevice::GicDistributor => vm::with_effects(vm, |effects| vm.vgic.lock().dist_write(vcpu.index, offset, size, value, effects)),
        EmulatedDevice::GicRedistributors => vm::with_effects(vm, |effects| vm.vgic.lock().redist_write(vcpu.index, offset, size, value, effects)),
    }
}


/// The guest console until dom0 emulates it: a PL011 that only transmits.
/// Bytes written to UARTDR collect into lines for dom0's console ring.
fn console_write(vm: &Vm, offset: u64, value: u64) {
    const MAX_LINE: usize = 512;
    if offset != 0 {
        return; // control registers: accepted and ignored
    }
    let byte = value as u8;
    let mut line = vm.console_line.lock();
    match byte {
        b'\n' => {
            crate::console::guest_line(&vm.name, &line);
            line.clear();
        }
        b'\r' => {}
        _ if line.len() >= MAX_LINE => {
            // An over-long line is cut into pieces, never dropped.
            crate::console::guest_line(&vm.name, &line);
            line.clear();
            line.push(byte);
        }
        _ => line.push(byte),
    }
}

/// PL011 registers as this transmit-only model shows them (PL011 TRM 3.2).
fn console_read(offset: u64) -> u64 {
    const ID: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
    match offset {
        0x18 => 0x90,            // UARTFR: TX FIFO empty, RX FIFO empty
        0x30 => 0x301,           // UARTCR: enabled, TX and RX on
        0xfe0..=0xffc => ID[((offset - 0xfe0) / 4) as usize] as u64,
        _ => 0,
    }
}

/// Takes every pending physical interrupt. `current`: the VM and vCPU this
/// CPU was running (None when idle).
#[inline(never)]
pub fn handle_irqs(current: Option<(&Vm, &Vcpu)>) {
    loop {
        let iar = gic::acknowledge();
        let intid = iar & 0x3ff;
        if intid >= 1020 {
            return;
        }
        gic::priority_drop(iar);
        trace!("physical interrupt {intid}");
        if intid == gic::SGI_KICK || Some(intid) == crate::boot::maintenance_intid() {
            gic::deactivate(iar);
            if let Some((vm, vcpu)) = current {
                if intid == gic::SGI_KICK {
                    vcpu.needs_flush.store(true, Ordering::Release);
                } else {
                    // The maintenance interrupt is a level: it stays asserted
                    // (and would be taken again at once) until the list
                    // registers are read back, e.g. the guest EOI'd a
                    // software level interrupt whose LR asks for EOI
                    // maintenance. Fold them back and refill now.
                    vm::flush_interrupts(vm, vcpu);
                }
            }
            if intid == gic::SGI_KICK {
                sched::on_kick();
            }
            continue;
        }
        if sched::is_timer(intid) {
            gic::deactivate(iar);
            sched::on_timer();
            continue;
        }
        // Hardware-linked: stays active until the owner's EOI deactivates
        // it. PPIs belong to the running vCPU, SPIs to the VM they were
        // given to.
        let owner = if intid < 32 {
            current.map(|(vm, vcpu)| (vm.id, vcpu.index))
        } else {
            crate::boot::spi_owner(intid).map(|id| (id, 0))
        };
        let delivered = match owner {
            Some((id, index)) => match current.filter(|(vm, _)| vm.id == id) {
                Some((vm, _)) => vm::with_effects(vm, |fx| vm.vgic.lock().inject_hw(intid, index, fx).is_ok()),
                None => match vm::get(id) {
                    Some(vm) => vm::with_effects(&vm, |fx| vm.vgic.lock().inject_hw(intid, index, fx).is_ok()),
                    None => false,
                },
            },
            None => false,
        };
        if !delivered {
            warn!("physical interrupt {intid} has no owner; disabling it");
            gic::set_enabled(intid, false);
            gic::deactivate(iar);
        } else if let Some((vm, vcpu)) = current {
            if owner.map(|o| o.0) == Some(vm.id) {
                vcpu.needs_flush.store(true, Ordering::Release);
            }
        }
    }
}

/// Interrupts taken while this CPU idles.
pub fn handle_irqs_idle() {
    handle_irqs(None);
}

/// WFI: return at once if the vCPU has an interrupt to take, else block it
/// until it has one.
#[inline(never)]
pub fn wait_for_interrupt(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame) {
    // Fold in what the vCPU did with its list registers (EOIs) before
    // asking whether anything is left for it.
    vm::flush_interrupts(vm, vcpu);
    if vm.vgic.lock().has_work(vcpu.index) {
        return;
    }
    sched::block(vm, vcpu, frame);
}
