//! Hypercall argument checking and permissions, PSCI and SMCCC.

extern crate std;

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

/// `vm` writes `text` to the log from the start of its RAM: x0 after it.
fn log_line(vm: &alloc::sync::Arc<crate::vm::Vm>, text: &str) -> i64 {
    let ipa = vm.ram[0].ipa.as_u64() + 0x2000;
    poke(vm, ipa, text.as_bytes());
    hypercall(vm, Function::LogWrite, &[ipa, text.len() as u64]).0
}

/// Dom0 reads `id`'s `VmInfo`.
fn vm_info(d0: &alloc::sync::Arc<crate::vm::Vm>, id: u16) -> hv_abi::hypercall::VmInfo {
    let buf = d0.ram[0].ipa.as_u64() + 0x3000;
    let len = core::mem::size_of::<hv_abi::hypercall::VmInfo>() as u64;
    assert_eq!(hypercall(d0, Function::VmInfo, &[id as u64, buf, len]).0, len as i64, "the bytes written");
    hv_abi::hypercall::VmInfo::from_bytes(&peek(d0, buf, len as usize)).expect("a whole VmInfo")
}

#[test]
fn log_write_is_rate_limited_per_vm_and_dropped_lines_are_counted() {
    use hv_abi::hypercall::{LOG_WRITE_BURST, LOG_WRITE_PER_SECOND};
    let _m = Machine::take();
    let d0 = dom0();
    let noisy = create_guest(&d0, "noisy", 1, 2 << 20, 0).expect("created");
    let quiet = create_guest(&d0, "quiet", 1, 2 << 20, 0).expect("created");
    let results: std::vec::Vec<i64> = (0..LOG_WRITE_BURST + 8).map(|i| log_line(&noisy, &std::format!("line {i}"))).collect();
    assert!(results[..LOG_WRITE_BURST as usize].iter().all(|&r| r == 0), "the burst passes: {results:?}");
    assert!(results[LOG_WRITE_BURST as usize..].iter().all(|&r| r == Error::Busy.code()), "then Busy: {results:?}");
    assert_eq!(vm_info(&d0, noisy.id.0).log_dropped, 8);
    // Another VM's budget is its own.
    assert_eq!(log_line(&quiet, "hello"), 0);
    assert_eq!(vm_info(&d0, quiet.id.0).log_dropped, 0);
    // A second later the noisy one has LOG_WRITE_PER_SECOND lines again.
    crate::arch::fake::cpu::advance(1_000_000);
    let again = (0..LOG_WRITE_PER_SECOND + 4).filter(|i| log_line(&noisy, &std::format!("later {i}")) == 0).count();
    assert_eq!(again, LOG_WRITE_PER_SECOND as usize);
    assert_eq!(vm_info(&d0, noisy.id.0).log_dropped, 12);
}

#[test]
fn log_write_checks_length_and_address_before_anything_else() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let ram = g.ram[0].ipa.as_u64();
    assert_eq!(hypercall(&g, Function::LogWrite, &[ram, 257]).0, Error::InvalidParameter.code());
    assert_eq!(hypercall(&g, Function::LogWrite, &[ram + (2 << 20) - 4, 8]).0, Error::BadAddress.code(), "past the end of its RAM");
    // Invalid UTF-8 is logged as such, not refused.
    poke(&g, ram, &[0xff, 0xfe]);
    assert_eq!(hypercall(&g, Function::LogWrite, &[ram, 2]).0, 0);
    assert_eq!(vm_info(&d0, g.id.0).log_dropped, 0);
}

#[test]
fn vm_configure_sets_the_fault_policy_of_a_created_guest_only() {
    use hv_abi::hypercall::{FaultPolicy, VmOption};
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let id = g.id.0 as u64;
    let on_fault = VmOption::OnFault as u64;
    assert!(!g.stops_on_fault(), "abort is the default");
    assert_eq!(hypercall(&d0, Function::VmConfigure, &[id, on_fault, 7]).0, Error::InvalidParameter.code(), "no such policy");
    assert_eq!(hypercall(&d0, Function::VmConfigure, &[id, 99, 0]).0, Error::InvalidParameter.code(), "no such option");
    assert_eq!(hypercall(&d0, Function::VmConfigure, &[0, on_fault, 1]).0, Error::InvalidParameter.code(), "not for dom0");
    assert_eq!(hypercall(&d0, Function::VmConfigure, &[id, on_fault, FaultPolicy::Stop as u64]).0, 0);
    assert!(g.stops_on_fault());
    assert_eq!(hypercall(&d0, Function::VmSetEntry, &[id, 0, g.ram[0].ipa.as_u64(), 0]).0, 0);
    assert_eq!(hypercall(&d0, Function::VmStart, &[id]).0, 0);
    assert_eq!(hypercall(&d0, Function::VmConfigure, &[id, on_fault, FaultPolicy::Abort as u64]).0, Error::Busy.code(), "not once it runs");
    assert!(g.stops_on_fault());
}
