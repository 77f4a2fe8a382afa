//! Trap dispatch by exception class, and what each class's handler
//! answers.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::{guest, StopReason, VmState};

use super::support::*;
use crate::arch::fake::{self, Event};
use crate::arch::{GuestException, TrapFrame};
use crate::sched::{self, Next};

fn guest_machine() -> (Machine, alloc::sync::Arc<crate::vm::Vm>) {
    let m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 2, 4 << 20, 0).expect("created");
    fake::take_events();
    (m, g)
}

#[test]
fn guest_read_of_the_gic_distributor_is_answered_in_place() {
    let (_m, g) = guest_machine();
    // GICD_TYPER (offset 4), 32-bit load into x5.
    fake::el2::set_fault_ipa(guest::GICD_BASE + 4);
    let mut frame = TrapFrame { esr: data_abort_esr(4, 5, false), far: 0x4, elr: 0x4000_1000, ..TrapFrame::default() };
    let next = trap(&g, 0, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Resume);
    assert_eq!(frame.elr, 0x4000_1004, "steps over the load");
    // ITLinesNumber: 64 SPIs → (64 + 32) / 32 - 1 = 2; CPUNumber (v3: RES0 with ARE).
    assert_eq!(frame.x[5] & 0x1f, 2, "GICD_TYPER.ITLinesNumber for 64 SPIs");
    assert!(fake::take_events().iter().all(|e| !matches!(e, Event::InjectAbort { .. })));
}

#[test]
fn guest_access_outside_its_memory_gets_a_synchronous_external_abort() {
    let (_m, g) = guest_machine();
    let ipa = 0x7000_0000; // nothing there
    fake::el2::set_fault_ipa(ipa);
    let mut frame = TrapFrame { esr: data_abort_esr(8, 1, false), far: 0xffff_0000_0000_0000, elr: 0x4000_2000, ..TrapFrame::default() };
    frame.x[1] = 0x1234;
    let next = trap(&g, 0, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Resume, "the guest takes the abort; it is not stopped");
    assert_eq!(fake::take_events(), [Event::InjectAbort { instruction: false, far: 0xffff_0000_0000_0000 }]);
    assert_eq!(frame.x[1], 0x1234, "the target register is untouched");
    assert_eq!(g.state(), VmState::Created, "the VM's state is unchanged");
    assert_eq!(g.vcpus[0].exits[crate::vm::Exit::Abort as usize].load(Ordering::Relaxed), 1);
}

#[test]
fn instruction_fetch_outside_memory_stops_the_guest_and_reports_why() {
    let (_m, g) = guest_machine();
    g.set_state(VmState::Running);
    fake::el2::set_fault_ipa(0x7000_0000);
    let mut frame = TrapFrame { esr: esr(ec::IABT_LOWER, 0b000100), far: 0x7000_0000, elr: 0x7000_0000, ..TrapFrame::default() };
    let next = trap(&g, 1, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Leave, "the vCPU leaves its CPU");
    assert_eq!(g.state(), VmState::Stopped);
    let stop = *g.stop.lock();
    assert_eq!(stop.reason, StopReason::Crashed);
    assert_eq!(stop.address, 0x7000_0000);
    assert_eq!(g.vcpus[1].sched.load(Ordering::Acquire), sched::state::OFF);
}

#[test]
fn unknown_exception_class_and_aarch32_get_undef() {
    let (_m, g) = guest_machine();
    let mut frame = TrapFrame { esr: esr(ec::UNKNOWN, 0), elr: 0x4000_0100, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    let mut frame32 = TrapFrame { elr: 0x4000_0200, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame32, GuestException::AArch32), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectUndefined { elr: 0x4000_0100 }, Event::InjectUndefined { elr: 0x4000_0200 }]);
}

#[test]
fn serror_is_answered_with_an_injected_abort() {
    let (_m, g) = guest_machine();
    let mut frame = TrapFrame { far: 0x55, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::SError), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectAbort { instruction: false, far: 0x55 }]);
}

#[test]
fn wfi_with_nothing_pending_blocks_and_wakes_at_the_virtual_timer() {
    let (_m, g) = guest_machine();
    g.set_state(VmState::Running);
    let deadline = crate::arch::cpu::counter() + 500;
    fake::timer::set_vtimer_deadline(Some(deadline));
    let mut frame = TrapFrame { esr: esr(ec::WFX, 0), elr: 0x4000_0300, ..TrapFrame::default() };
    let next = trap(&g, 0, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Leave);
    assert_eq!(frame.elr, 0x4000_0304, "returns after the WFI");
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), sched::state::BLOCKED);
    // The slice timer is armed for the virtual timer's deadline once the
    // CPU has switched away.
    sched::forget_current_for_test();
    fake::cpu::advance(1000);
    sched::on_timer();
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), sched::state::RUNNABLE, "woken at its timer");
    assert_eq!(sched::queued_on(g.vcpus[0].pcpu).first().map(|r| r.vm), Some(g.id));
}

#[test]
fn wfi_with_an_interrupt_pending_returns_at_once() {
    let (_m, g) = guest_machine();
    g.set_state(VmState::Running);
    // The guest enables group 0 (GICD_CTLR) and SGI 1 (GICR_ISENABLER0 in
    // vCPU 0's SGI frame) through the emulated GIC; then SGI 1 is pending.
    fake::el2::set_fault_ipa(guest::GICD_BASE);
    let mut ctlr = TrapFrame { esr: data_abort_esr(4, 1, true), elr: 0x4000_0100, ..TrapFrame::default() };
    ctlr.x[1] = 1;
    assert_eq!(trap(&g, 0, &mut ctlr, GuestException::Sync), Next::Resume);
    fake::el2::set_fault_ipa(guest::GICR_BASE + 0x10100);
    let mut enable = TrapFrame { esr: data_abort_esr(4, 1, true), far: 0x100, elr: 0x4000_0200, ..TrapFrame::default() };
    enable.x[1] = 1 << 1;
    assert_eq!(trap(&g, 0, &mut enable, GuestException::Sync), Next::Resume);
    assert_eq!(enable.elr, 0x4000_0204);
    crate::interrupts::with_effects(&g, |fx| g.vgic.lock().pulse(1, 0, fx)).expect("SGI 1");
    let mut frame = TrapFrame { esr: esr(ec::WFX, 0), elr: 0x4000_0300, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), sched::state::RUNNING);
}

#[test]
fn physical_interrupt_without_owner_is_disabled_not_delivered() {
    let (_m, g) = guest_machine();
    fake::gic::raise(77);
    let mut frame = TrapFrame::default();
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Irq), Next::Resume);
    let events = fake::take_events();
    assert!(events.contains(&Event::Enable { intid: 77, enabled: false }), "{events:?}");
    assert!(events.contains(&Event::Deactivate { intid: 77 }), "{events:?}");
}

#[test]
fn system_register_trap_to_an_unknown_register_gets_undef() {
    let (_m, g) = guest_machine();
    // MRS x0, S3_7_C15_C15_7 (implementation defined): Op0=3 Op2=7 Op1=7 CRn=15 Rt=0 CRm=15, read.
    let iss = (3 << 20) | (7 << 17) | (7 << 14) | (15 << 10) | (15 << 1) | 1;
    let mut frame = TrapFrame { esr: esr(ec::SYSREG, iss), elr: 0x4000_0400, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectUndefined { elr: 0x4000_0400 }]);
}
