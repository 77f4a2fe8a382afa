//! Hypercall argument checking and permissions, PSCI and SMCCC.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::{Error, Function, VmState};
use smccc::psci::{PSCI_AFFINITY_INFO_64, PSCI_CPU_OFF, PSCI_CPU_ON_64, PSCI_VERSION};

use super::support::*;
use crate::arch::{GuestException, TrapFrame};
use crate::sched::{self, Next};
use crate::vm::power;

#[test]
fn guests_are_denied_every_dom0_only_call() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let free = _m.free_pages();
    // Every call but Version and LogWrite is dom0's.
    for f in Function::ALL.into_iter().filter(|f| !matches!(f, Function::Version | Function::LogWrite)) {
        let (r, _) = hypercall(&g, f, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(r, Error::Denied.code(), "{f:?} from a guest");
    }
    assert_eq!(_m.free_pages(), free, "nothing allocated by refused calls");
}

#[test]
fn version_is_open_to_everyone() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    for vm in [&d0, &g] {
        let (r, _) = hypercall(vm, Function::Version, &[]);
        assert_eq!(r as u64, hv_abi::hypercall::version());
    }
}

#[test]
fn hvc_with_a_nonzero_immediate_is_not_supported() {
    let _m = Machine::take();
    let d0 = dom0();
    let mut frame = TrapFrame { esr: esr(ec::HVC64, 0x42), ..TrapFrame::default() };
    frame.x[0] = Function::Version as u64;
    assert_eq!(trap(&d0, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(frame.x[0] as i64, smccc::psci::error::NOT_SUPPORTED as i64);
}

#[test]
fn psci_through_smc_steps_over_the_smc() {
    let _m = Machine::take();
    let d0 = dom0();
    let mut frame = TrapFrame { esr: esr(ec::SMC64, 0), elr: 0x5000, ..TrapFrame::default() };
    frame.x[0] = PSCI_VERSION as u64;
    assert_eq!(trap(&d0, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(frame.elr, 0x5004);
    assert_eq!(frame.x[0], 0x1_0001, "PSCI 1.1");
}

fn psci(vm: &alloc::sync::Arc<crate::vm::Vm>, index: usize, id: u32, args: &[u64]) -> (Next, i64) {
    let mut frame = TrapFrame { esr: esr(ec::HVC64, 0), ..TrapFrame::default() };
    frame.x[0] = id as u64;
    frame.x[1..=args.len()].copy_from_slice(args);
    let next = trap(vm, index, &mut frame, GuestException::Sync);
    (next, frame.x[0] as i64)
}

#[test]
fn cpu_on_checks_its_target_and_entry_then_wakes_the_vcpu() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 2, 2 << 20, 0).expect("created");
    let entry = hv_abi::hypercall::guest::RAM_BASE + 0x1000;
    assert_eq!(hypercall(&d0, Function::VmSetEntry, &[g.id.0 as u64, 0, entry, 0]).0, 0);
    assert_eq!(hypercall(&d0, Function::VmStart, &[g.id.0 as u64]).0, 0);
    use smccc::psci::error::{ALREADY_ON, INVALID_ADDRESS, INVALID_PARAMETERS};
    assert_eq!(psci(&g, 0, PSCI_CPU_ON_64, &[7, entry, 0]).1, INVALID_PARAMETERS as i64, "no vCPU with MPIDR 7");
    assert_eq!(psci(&g, 0, PSCI_CPU_ON_64, &[1, 0x10, 0]).1, INVALID_ADDRESS as i64, "entry outside RAM");
    assert_eq!(g.vcpus[1].power.load(Ordering::Acquire), power::OFF);
    assert_eq!(psci(&g, 0, PSCI_CPU_ON_64, &[1, entry, 0xc0ffee]).1, 0);
    assert_eq!(g.vcpus[1].power.load(Ordering::Acquire), power::ON_PENDING);
    assert_eq!(g.vcpus[1].sched.load(Ordering::Acquire), sched::state::RUNNABLE);
    assert_eq!(g.vcpus[1].start.lock().context, 0xc0ffee);
    assert_eq!(psci(&g, 0, PSCI_CPU_ON_64, &[0, entry, 0]).1, smccc::psci::error::ON_PENDING as i64, "vCPU 0 started, not yet run");
    g.vcpus[0].power.store(power::ON, Ordering::Release);
    assert_eq!(psci(&g, 0, PSCI_CPU_ON_64, &[0, entry, 0]).1, ALREADY_ON as i64, "vCPU 0 is on");
    assert_eq!(psci(&g, 0, PSCI_AFFINITY_INFO_64, &[1, 0]).1, 2, "ON_PENDING");
}

#[test]
fn cpu_off_takes_the_vcpu_off_its_cpu() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 2, 2 << 20, 0).expect("created");
    g.set_state(VmState::Running);
    g.vcpus[1].power.store(power::ON, Ordering::Release);
    let (next, _) = psci(&g, 1, PSCI_CPU_OFF, &[]);
    assert_eq!(next, Next::Leave);
    assert_eq!(g.vcpus[1].power.load(Ordering::Acquire), power::OFF);
    assert_eq!(g.vcpus[1].sched.load(Ordering::Acquire), sched::state::OFF);
    assert_eq!(psci(&g, 0, PSCI_AFFINITY_INFO_64, &[1, 0]).1, 1, "OFF");
}

#[test]
fn guest_system_off_stops_only_that_guest() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let h = create_guest(&d0, "h", 1, 2 << 20, 0).expect("created");
    g.set_state(VmState::Running);
    h.set_state(VmState::Running);
    let (next, _) = psci(&g, 0, smccc::psci::PSCI_SYSTEM_OFF, &[]);
    assert_eq!(next, Next::Leave);
    assert_eq!(g.state(), VmState::Stopped);
    assert_eq!(g.stop.lock().reason, hv_abi::hypercall::StopReason::SystemOff);
    assert_eq!(h.state(), VmState::Running);
    assert_eq!(d0.state(), VmState::Running);
}

#[test]
fn log_write_refuses_long_and_foreign_buffers() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let ram = hv_abi::hypercall::guest::RAM_BASE;
    assert_eq!(hypercall(&g, Function::LogWrite, &[ram, 257]).0, Error::InvalidParameter.code());
    assert_eq!(hypercall(&g, Function::LogWrite, &[0x10, 8]).0, Error::BadAddress.code(), "not its RAM");
    assert_eq!(hypercall(&g, Function::LogWrite, &[ram + (2 << 20) - 4, 8]).0, Error::BadAddress.code(), "runs off its RAM");
    poke(&g, ram, b"hello");
    assert_eq!(hypercall(&g, Function::LogWrite, &[ram, 5]).0, 0);
}
