//! HVC and SMC from VMs: PSCI 1.1 and SMCCC 1.1 emulated for every VM,
//! paravirtualised time (DEN0057, `pvtime`) for guests, and the
//! hypervisor's own calls (`hv_abi::hypercall`), some for dom0 only.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::{Error, Function, StopReason, LOG_WRITE_BURST, LOG_WRITE_PER_SECOND};
use log::{debug, info};
use smccc::arch::{SMCCC_ARCH_FEATURES, SMCCC_VERSION};
use smccc::psci::error::{ALREADY_ON, INVALID_PARAMETERS, NOT_SUPPORTED, ON_PENDING};
use smccc::psci::*;

use crate::arch::TrapFrame;
use crate::sched::{self, Next};
use crate::vm::{power, vm_warn, StopInfo, Vcpu, VcpuStart, Vm, VmKind};

/// PSCI 1.1 and SMCCC 1.1 (major in bits [31:16]).
const PSCI_VERSION_1_1: u64 = 0x1_0001;
const SMCCC_VERSION_1_1: u64 = 0x1_0001;
/// ESR_EL2.ISS[15:0] of an HVC: its immediate.
const HVC_IMMEDIATE: u64 = 0xffff;
/// The affinity fields of an MPIDR (Aff3, Aff2..Aff0), as PSCI names CPUs.
const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// `HVC #imm` from a VM. The preferred return address is already the next
/// instruction.
pub fn handle(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) -> Next {
    if frame.esr & HVC_IMMEDIATE != 0 {
        // SMCCC only defines HVC #0.
        frame.x[0] = NOT_SUPPORTED as i64 as u64;
        return Next::Resume;
    }
    let id = frame.x[0] as u32;
    if Function::in_range(id) {
        hypervisor_call(vm, vcpu, frame, id);
        Next::Resume
    } else {
        psci_or_smccc(vm, vcpu, frame, id)
    }
}

/// A trapped `SMC`: PSCI and SMCCC are emulated, anything else is
/// NOT_SUPPORTED (no VM reaches the secure firmware).
pub fn handle_smc(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) -> Next {
    let id = frame.x[0] as u32;
    psci_or_smccc(vm, vcpu, frame, id)
}

fn ret(frame: &mut TrapFrame, value: i64) {
    frame.x[0] = value as u64;
}

#[inline(never)]
fn psci_or_smccc(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, id: u32) -> Next {
    let (a1, a2, a3) = (frame.x[1], frame.x[2], frame.x[3]);
    match id {
        SMCCC_VERSION => frame.x[0] = SMCCC_VERSION_1_1,
        // No firmware workarounds to offer; paravirtualised time to guests.
        SMCCC_ARCH_FEATURES => {
            let offered = crate::pvtime::arch_feature(vm, a1 as u32).unwrap_or(false);
            ret(frame, if offered { 0 } else { NOT_SUPPORTED as i64 });
        }
        PSCI_VERSION => frame.x[0] = PSCI_VERSION_1_1,
        PSCI_FEATURES => {
            let supported = matches!(
                a1 as u32,
                PSCI_VERSION
                    | PSCI_FEATURES
                    | PSCI_CPU_ON_64
                    | PSCI_CPU_OFF
                    | PSCI_AFFINITY_INFO_64
                    | PSCI_CPU_SUSPEND_64
                    | PSCI_SYSTEM_OFF
                    | PSCI_SYSTEM_RESET
                    | PSCI_MIGRATE_INFO_TYPE
                    | SMCCC_VERSION
            );
            ret(frame, if supported { 0 } else { NOT_SUPPORTED as i64 });
        }
        PSCI_CPU_ON_64 => {
            let result = cpu_on(vm, a1, a2, a3);
            ret(frame, result);
        }
        PSCI_CPU_OFF => {
            debug!("{}: vcpu{} off", vm.name, vcpu.index);
            // Not runnable first, then off: a CPU_ON from another vCPU in
            // between then finds it off and queues it again (it restarts at
            // the new entry), rather than being lost.
            let next = sched::stop(vcpu);
            vcpu.power.store(power::OFF, Ordering::Release);
            return next;
        }
        PSCI_AFFINITY_INFO_64 => {
            let result = match (a2, vm.vcpus.iter().find(|v| v.mpidr == a1 & MPIDR_AFFINITY)) {
                (0, Some(v)) => match v.power.load(Ordering::Acquire) {
                    power::ON => 0,
                    power::ON_PENDING => 2,
                    _ => 1,
                },
                _ => INVALID_PARAMETERS as i64,
            };
            ret(frame, result);
        }
        PSCI_CPU_SUSPEND_64 => {
            // Every power state is treated as standby: wait for an interrupt.
            ret(frame, 0);
            return crate::interrupts::wait_for_interrupt(vm, vcpu);
        }
        PSCI_MIGRATE_INFO_TYPE => ret(frame, 2), // no trusted OS to migrate
        PSCI_SYSTEM_OFF => return system_off(vm, vcpu, frame, StopReason::SystemOff),
        PSCI_SYSTEM_RESET => return system_off(vm, vcpu, frame, StopReason::SystemReset),
        _ => {
            let answer = crate::pvtime::call(vm, vcpu, id, a1).unwrap_or(NOT_SUPPORTED as i64);
            ret(frame, answer);
        }
    }
    Next::Resume
}

fn cpu_on(vm: &Vm, mpidr: u64, entry: u64, context: u64) -> i64 {
    let Some(target) = vm.vcpus.iter().find(|v| v.mpidr == mpidr & MPIDR_AFFINITY) else {
        return INVALID_PARAMETERS as i64;
    };
    if !vm.contains_ram(entry, 4) {
        vm_warn!(vm, "{}: CPU_ON for vcpu{} with entry {entry:#x} outside its RAM", vm.name, target.index);
        return smccc::psci::error::INVALID_ADDRESS as i64;
    }
    let mut start = target.start.lock();
    match target.power.compare_exchange(power::OFF, power::ON_PENDING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            *start = VcpuStart { entry, context };
            drop(start);
            sched::wake(vm, target.index);
            0
        }
        Err(power::ON_PENDING) => ON_PENDING as i64,
        Err(_) => ALREADY_ON as i64,
    }
}

/// PSCI SYSTEM_OFF / SYSTEM_RESET: for dom0 the machine's; for a guest,
/// that VM only: it stops and dom0 sees why.
fn system_off(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame, reason: StopReason) -> Next {
    if vm.kind == VmKind::Dom0 {
        if reason == StopReason::SystemReset {
            info!("dom0 (vcpu{}) resets the machine", vcpu.index);
            crate::runstate::reset()
        }
        info!("dom0 (vcpu{}) switched the machine off", vcpu.index);
        crate::runstate::power_off()
    }
    vm.stop(StopInfo { reason, syndrome: 0, address: frame.elr });
    crate::runstate::guest_stopped();
    sched::stop(vcpu)
}

/// The hypervisor's own calls (hv_abi::hypercall).
fn hypervisor_call(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, id: u32) {
    let result = match Function::from_id(id) {
        Some(Function::Version) => Ok(hv_abi::hypercall::version()),
        Some(Function::LogRead) => log_read(vm, frame),
        Some(Function::LogWrite) => log_write(vm, vcpu, frame),
        Some(Function::ConsoleRead) => console_read(vm, frame),
        Some(f) => dom0_only(vm).and_then(|()| crate::domctl::handle(vm, f, frame)),
        None => Err(Error::NotSupported),
    };
    frame.x[0] = match result {
        Ok(value) => value,
        Err(e) => e.code() as u64,
    };
}

pub(crate) fn dom0_only(vm: &Vm) -> Result<(), Error> {
    if vm.kind == VmKind::Dom0 {
        Ok(())
    } else {
        Err(Error::Denied)
    }
}

#[inline(never)]
fn log_read(vm: &Vm, frame: &mut TrapFrame) -> Result<u64, Error> {
    dom0_only(vm)?;
    let (ipa, len, cursor) = (frame.x[1], frame.x[2], frame.x[3]);
    let len = len.min(64 * 1024);
    let pa = vm.ram_buffer(ipa, len).ok_or(Error::BadAddress)?;
    // SAFETY: `ram_buffer` checked that the whole buffer is the VM's own
    // RAM, which the hypervisor maps read-write; the VM is trapped here, so
    // nothing else of its writes the buffer meanwhile.
    let buffer = unsafe { core::slice::from_raw_parts_mut(pa.as_u64() as *mut u8, len as usize) };
    let r = crate::console::read_log(cursor, buffer);
    frame.x[1] = r.next;
    frame.x[2] = r.lost;
    Ok(r.copied as u64)
}

#[inline(never)]
fn console_read(vm: &Vm, frame: &mut TrapFrame) -> Result<u64, Error> {
    dom0_only(vm)?;
    let (ipa, len, cursor) = (frame.x[1], frame.x[2].min(64 * 1024), frame.x[3]);
    let pa = vm.ram_buffer(ipa, len).ok_or(Error::BadAddress)?;
    // SAFETY: as in `log_read`.
    let buffer = unsafe { core::slice::from_raw_parts_mut(pa.as_u64() as *mut u8, len as usize) };
    let r = crate::console::read_guest_console(cursor, buffer);
    frame.x[1] = r.next;
    frame.x[2] = r.lost;
    Ok(r.copied as u64)
}

/// `LogWrite`: a line of the VM's into the hypervisor's log. Rate-limited
/// per VM (a token bucket behind the VM's own lock: no VM waits on
/// another); the line is copied out of guest memory first and only the
/// copy is checked and logged, so another vCPU changing the buffer
/// meanwhile changes nothing but which bytes were copied.
#[inline(never)]
fn log_write(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) -> Result<u64, Error> {
    const MAX: usize = 256;
    let (ipa, len) = (frame.x[1], frame.x[2]);
    if len > MAX as u64 {
        return Err(Error::InvalidParameter);
    }
    let pa = vm.ram_buffer(ipa, len).ok_or(Error::BadAddress)?;
    let dropped_before = {
        let mut limit = vm.log_limit.lock();
        let interval = crate::arch::cpu::counter_frequency() / LOG_WRITE_PER_SECOND as u64;
        if !limit.bucket.take(crate::arch::cpu::counter(), interval, LOG_WRITE_BURST) {
            vm.log_dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy);
        }
        let total = vm.log_dropped.load(Ordering::Relaxed);
        let unreported = total - limit.reported;
        limit.reported = total;
        unreported
    };
    if dropped_before > 0 {
        info!("{}: {dropped_before} LogWrite line(s) dropped by the rate limit", vm.name);
    }
    let mut copy = [0u8; MAX];
    let line = &mut copy[..len as usize];
    for (i, byte) in line.iter_mut().enumerate() {
        // SAFETY: `ram_buffer` checked that `[ipa, ipa + len)` is the VM's
        // own RAM, which the hypervisor maps; each byte is read once, with
        // a volatile load, as other vCPUs of the VM may write it meanwhile.
        *byte = unsafe { core::ptr::read_volatile((pa.as_u64() as *const u8).add(i)) };
    }
    let text = core::str::from_utf8(line).unwrap_or("<not UTF-8>");
    info!("{}/vcpu{}: {}", vm.name, vcpu.index, text.trim_end());
    Ok(0)
}
