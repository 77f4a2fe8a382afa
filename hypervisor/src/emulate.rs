//! Emulated MMIO: a VM's data aborts at stage 2. Accesses to the devices
//! the hypervisor emulates itself (the GIC distributor and redistributors,
//! and a VM's console UART until dom0 takes it over) are answered here;
//! accesses to windows dom0 emulates are forwarded to it (`ioreq`);
//! anything else outside the VM's memory, and any table walk of the
//! guest's MMU that faults at stage 2, goes to `fault::unbacked`. Nothing a
//! VM does here can panic the hypervisor.

use log::trace;

use crate::arch::{el2, TrapFrame};
use crate::esr::{self, AccessSize, DataAbort};
use crate::arch::abort_access;
use crate::sched::Next;
use crate::vm::{vm_warn, EmulatedDevice, Exit, Mmio, Vcpu, Vm};

/// A data abort at stage 2 on an emulated device, or `None` for an access
/// with nothing behind it, untouched (the caller gives it to
/// `fault::unbacked`). Nothing a VM does here can panic the hypervisor.
///
/// The hottest case, a 32-bit load of a distributor register that never
/// changes (GICD_TYPER, GICD_IIDR, the ID registers), is answered inline
/// here: one compare of the IPA with the distributor's window, one
/// mask-and-compare of the syndrome, the value from the VM's copy
/// (`DistFixed`) without the vGIC's lock. Other accesses to the window go
/// straight to `gic_access`, the rest to `data_abort_emulated`, both out of
/// line with the IPA, so the trap entry that inlines this does not pay for
/// their stack frames.
#[inline(always)]
pub fn data_abort(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) -> Option<Next> {
    let syndrome = frame.esr;
    let ipa = el2::fault_ipa(frame.far);
    let Some(offset) = vm.gicd.offset_of(ipa) else {
        return data_abort_emulated(vm, vcpu, frame, ipa);
    };
    if esr::is_described_word_load(syndrome) {
        if let Some(value) = vm.gicd.fixed.word_read(offset) {
            vcpu.count_exit(Exit::Mmio);
            let register = esr::transfer_register_of_abort(syndrome);
            if register != 31 {
                frame.x[register] = esr::word_load_value(syndrome, value);
            }
            frame.elr += 4;
            return Some(Next::Resume);
        }
    }
    // A fault on the guest's own table walk is never an access to emulate.
    if esr::is_s1ptw(syndrome) {
        return None;
    }
    gic_access(vm, vcpu, frame, ipa, EmulatedDevice::GicDistributor, offset)
}

/// A data abort at `ipa` outside the distributor's window: the
/// redistributors go to `gic_access`, everything else to `data_abort_slow`.
/// Only tail calls, so no stack frame: a forwarded access (the guest's
/// UART) passes through for a region look-up.
#[inline(never)]
fn data_abort_emulated(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, ipa: u64) -> Option<Next> {
    // A fault on the guest's own table walk is never an access to emulate.
    if esr::is_s1ptw(frame.esr) {
        return None;
    }
    match vm.emulated_region(ipa) {
        Some((device @ (EmulatedDevice::GicDistributor | EmulatedDevice::GicRedistributors), offset)) => gic_access(vm, vcpu, frame, ipa, device, offset),
        _ => data_abort_slow(vm, vcpu, frame, ipa),
    }
}

/// A data abort in a GIC frame: a read the syndrome describes is answered
/// here with few registers live (under the vGIC's lock), anything else
/// (writes, refused reads) in `data_abort_slow`.
#[inline(never)]
fn gic_access(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, ipa: u64, device: EmulatedDevice, offset: u64) -> Option<Next> {
    let abort = DataAbort::decode(frame.esr);
    if let DataAbort::Emulatable { size, register, write: false, .. } = abort {
        if crate::vgic::is_private_pending_read(device == EmulatedDevice::GicRedistributors, offset, vcpu.index) {
            crate::interrupts::sample_vtimer_line(vm, vcpu);
        }
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
            return Some(Next::Resume);
        }
    }
    data_abort_slow(vm, vcpu, frame, ipa)
}

/// Every other data abort (see `data_abort`).
#[inline(never)]
fn data_abort_slow(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, ipa: u64) -> Option<Next> {
    let (device, offset) = match vm.mmio_at(ipa) {
        Some(Mmio::Emulated(device, offset)) => (device, offset),
        Some(Mmio::Forwarded(window)) => {
            vcpu.count_exit(Exit::Mmio);
            return Some(match crate::ioreq::forward(vm, vcpu, frame, ipa, DataAbort::decode(frame.esr), window.post_writes) {
                Ok(next) => next,
                Err(why) => {
                    vm_warn!(vm, "{}: vcpu{}: access to {:#x} dom0 cannot take ({why:?}); abort", vm.name, vcpu.index, ipa);
                    abort_access(frame);
                    Next::Resume
                }
            });
        }
        None => return None,
    };
    vcpu.count_exit(Exit::Mmio);
    let abort = DataAbort::decode(frame.esr);
    let DataAbort::Emulatable { size, register, write, .. } = abort else {
        vm_warn!(vm, "{}: vcpu{}: {:?} access to {:#x} the hypervisor cannot decode (no ISV: load/store pair or writeback?); abort", vm.name, vcpu.index, device, ipa);
        abort_access(frame);
        return Some(Next::Resume);
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
            abort_access(frame);
        }
    }
    Some(Next::Resume)
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
        EmulatedDevice::GicDistributor => crate::interrupts::with_effects(vm, |effects| vm.vgic.lock().dist_write(vcpu.index, offset, size, value, effects)),
        EmulatedDevice::GicRedistributors => crate::interrupts::with_effects(vm, |effects| vm.vgic.lock().redist_write(vcpu.index, offset, size, value, effects)),
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

