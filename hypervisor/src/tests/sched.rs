//! Scheduling decisions: who gets queued where, when a CPU is interrupted,
//! and what a switch saves and enters.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::VmState;

use super::support::*;
use crate::arch::fake::{self, Entered, Event, Idle};
use crate::arch::gic::SGI_KICK;
use crate::arch::TrapFrame;
use crate::sched::{self, state, VcpuRef};
use crate::vm::VmId;

#[test]
fn waking_a_blocked_vcpu_on_another_cpu_kicks_that_cpu() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0b10).expect("pinned to CPU 1");
    g.set_state(VmState::Running);
    g.vcpus[0].sched.store(state::BLOCKED, Ordering::Release);
    fake::cpu::set_index(0);
    fake::take_events();
    sched::wake(&g, 0);
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE);
    assert_eq!(sched::queued_on(1), [VcpuRef { vm: g.id, vcpu: 0 }]);
    assert_eq!(fake::take_events(), [Event::Sgi { intid: SGI_KICK, target: 1, from: 0 }]);
    // Waking it again changes nothing and queues nothing twice.
    sched::wake(&g, 0);
    assert_eq!(sched::queued_on(1).len(), 1);
}

#[test]
fn a_vcpu_woken_on_its_own_cpu_preempts_a_running_guest_without_an_sgi() {
    let _m = Machine::take();
    let d0 = dom0();
    let busy = create_guest(&d0, "busy", 1, 2 << 20, 0b10).expect("on CPU 1");
    let waiter = create_guest(&d0, "waiter", 1, 2 << 20, 0b10).expect("on CPU 1");
    busy.set_state(VmState::Running);
    waiter.set_state(VmState::Running);
    fake::cpu::set_index(1);
    sched::make_current(busy.clone(), 0);
    waiter.vcpus[0].sched.store(state::BLOCKED, Ordering::Release);
    fake::take_events();
    sched::wake(&waiter, 0);
    assert!(sched::resched_pending(), "switch at the end of this trap");
    assert!(fake::take_events().iter().all(|e| !matches!(e, Event::Sgi { .. })));
}

#[test]
fn switching_saves_the_running_vcpu_and_enters_the_next_queued_one() {
    let _m = Machine::take();
    let d0 = dom0();
    let a = create_guest(&d0, "a", 1, 2 << 20, 0b10).expect("on CPU 1");
    let b = create_guest(&d0, "b", 1, 2 << 20, 0b10).expect("on CPU 1");
    for (vm, pc) in [(&a, 0x4000_0000u64), (&b, 0x4000_8000)] {
        assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmSetEntry, &[vm.id.0 as u64, 0, pc, 0xd7b]).0, 0);
        assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmStart, &[vm.id.0 as u64]).0, 0);
    }
    // CPU 1 runs `a` (first queued): it starts at its entry with x0 = 0xd7b.
    fake::cpu::set_index(1);
    let entered = diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a guest");
    assert_eq!((entered.0.elr, entered.0.x[0]), (0x4000_0000, 0xd7b));
    assert_eq!(a.vcpus[0].sched.load(Ordering::Acquire), state::RUNNING);
    // `a` traps with some registers and yields: they are saved, `b` runs.
    let mut frame = TrapFrame { elr: 0x4000_0123, ..TrapFrame::default() };
    frame.x[7] = 77;
    let entered = diverges(|| crate::switch::schedule(&frame, true)).downcast::<Entered>().expect("entered a guest");
    assert_eq!(entered.0.elr, 0x4000_8000);
    assert_eq!(a.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE);
    // SAFETY: `a` is not running (b is), and this test is its only user.
    let saved = unsafe { a.vcpus[0].context_mut() };
    assert_eq!((saved.regs.elr, saved.regs.x[7]), (0x4000_0123, 77));
    assert_eq!(saved.arch.saves, 1);
    // Then `a` again, resuming where it was.
    let entered = diverges(|| crate::switch::schedule(&TrapFrame::default(), true)).downcast::<Entered>().expect("entered a guest");
    assert_eq!((entered.0.elr, entered.0.x[7]), (0x4000_0123, 77));
}

#[test]
fn a_cpu_with_nothing_runnable_idles() {
    let _m = Machine::take();
    let _d0 = dom0();
    fake::cpu::set_index(1);
    assert!(diverges(|| crate::switch::run_next()).downcast::<Idle>().is_ok());
}

#[test]
fn a_paused_vm_is_not_run_and_unpause_queues_it_again() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0b10).expect("on CPU 1");
    let id = g.id.0 as u64;
    assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmSetEntry, &[id, 0, 0x4000_0000, 0]).0, 0);
    assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmStart, &[id]).0, 0);
    assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmPause, &[id]).0, 0);
    fake::cpu::set_index(1);
    assert!(diverges(|| crate::switch::run_next()).downcast::<Idle>().is_ok(), "paused: not entered");
    fake::cpu::set_index(0);
    assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmUnpause, &[id]).0, 0);
    fake::cpu::set_index(1);
    assert!(diverges(|| crate::switch::run_next()).downcast::<Entered>().is_ok(), "unpaused: entered");
    let _ = VmId(0);
}
