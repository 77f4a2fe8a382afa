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
    let (_m, a, _b) = a_and_b_on_cpu1();
    // CPU 1 runs `a` (first queued): it starts at its entry with x0 = 0xd7b.
    let entered = diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a guest");
    assert_eq!((entered.0.elr, entered.0.x[0]), (0x4000_0000, 0xd7b));
    assert_eq!(a.vcpus[0].sched.load(Ordering::Acquire), state::RUNNING);
    // `a` traps with some registers and yields: they are saved, `b` runs.
    let mut frame = TrapFrame { elr: 0x4000_0123, ..TrapFrame::default() };
    frame.x[7] = 77;
    let entered = diverges(|| crate::switch::schedule(&frame, sched::Out::Yield)).downcast::<Entered>().expect("entered a guest");
    assert_eq!(entered.0.elr, 0x4000_8000);
    assert_eq!(a.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE);
    // SAFETY: `a` is not running (b is), and this test is its only user.
    let saved = unsafe { a.vcpus[0].context_mut() };
    assert_eq!((saved.regs.elr, saved.regs.x[7]), (0x4000_0123, 77));
    assert_eq!(saved.arch.saves, 1);
    // Then `a` again, resuming where it was.
    let entered = diverges(|| crate::switch::schedule(&TrapFrame::default(), sched::Out::Yield)).downcast::<Entered>().expect("entered a guest");
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

// ---- Load balancing ---------------------------------------------------------

/// A one-vCPU guest that may run on the CPUs of `allowed` with `weight`,
/// started (its vCPU queued on the CPU placement chose).
fn started_guest(d0: &alloc::sync::Arc<crate::vm::Vm>, name: &str, allowed: u64, weight: u64) -> alloc::sync::Arc<crate::vm::Vm> {
    use hv_abi::hypercall::Function;
    let name_ipa = d0.ram[0].ipa.as_u64() + 0x1000;
    poke(d0, name_ipa, name.as_bytes());
    fake::cpu::set_index(0);
    let (id, _) = hypercall(d0, Function::VmCreate, &[1, 2 << 20, name_ipa, name.len() as u64, weight, allowed]);
    assert!(id > 0, "{name} created: {id}");
    assert_eq!(hypercall(d0, Function::VmSetEntry, &[id as u64, 0, 0x4000_0000, 0]).0, 0);
    assert_eq!(hypercall(d0, Function::VmStart, &[id as u64]).0, 0);
    crate::vm::get(VmId(id as u16)).expect("in the table")
}

fn r(vm: &crate::vm::Vm) -> VcpuRef {
    VcpuRef { vm: vm.id, vcpu: 0 }
}

#[test]
fn an_idle_cpu_pulls_a_movable_vcpu_from_the_busiest_cpu_and_its_wait_counts_as_stolen() {
    let _m = Machine::take();
    crate::machine::set_online_cpus(3);
    let d0 = dom0();
    // Dom0 runs on CPU 0 while the guests are placed: they go elsewhere.
    fake::cpu::set_index(0);
    sched::make_current(d0.clone(), 0);
    let m1 = started_guest(&d0, "m1", 0b011, 0);
    let p1 = started_guest(&d0, "p1", 0b010, 0);
    let m2 = started_guest(&d0, "m2", 0b101, 0);
    let p2 = started_guest(&d0, "p2", 0b100, 0);
    let p3 = started_guest(&d0, "p3", 0b100, 0);
    assert_eq!(sched::queued_on(1), [r(&m1), r(&p1)]);
    assert_eq!(sched::queued_on(2), [r(&m2), r(&p2), r(&p3)]);
    let queued_at = m2.vcpus[0].queued_at.load(Ordering::Relaxed);
    fake::cpu::advance(5_000);
    // Dom0 blocks: CPU 0 has nothing to run and pulls from CPU 2 (3
    // runnable, against CPU 1's 2) the one vCPU there allowed on CPU 0.
    fake::cpu::set_index(0);
    sched::forget_current_for_test();
    let (vm, vcpu) = sched::switch_in_next().expect("pulled a vCPU");
    assert_eq!((vm.id, vcpu.index), (m2.id, 0));
    assert_eq!(m2.vcpus[0].pcpu(), 0);
    assert_eq!(sched::queued_on(2), [r(&p2), r(&p3)]);
    assert_eq!(sched::queued_on(1), [r(&m1), r(&p1)], "CPU 1 is not the busiest");
    assert_eq!((sched::load(0), sched::load(1), sched::load(2)), (1, 2, 2));
    assert_eq!(sched::migrations(), 1);
    // Its wait on CPU 2 was not forgotten by the move: all of it is stolen.
    let steal = m2.vcpus[0].steal_ticks.load(Ordering::Relaxed);
    assert!(queued_at != crate::vm::NOT_QUEUED && steal >= 5_000, "stolen {steal} ticks");
    // CPU 0 idles again: now CPU 1 is the busiest, and m1 comes.
    sched::forget_current_for_test();
    let (vm, _) = sched::switch_in_next().expect("pulled again");
    assert_eq!(vm.id, m1.id);
    assert_eq!((sched::load(0), sched::load(1), sched::load(2), sched::migrations()), (1, 1, 2, 2));
    // Loads now differ by at most one: nothing more moves.
    sched::on_timer();
    fake::cpu::set_index(2);
    sched::on_timer();
    assert_eq!(sched::migrations(), 2);
}

#[test]
fn pinned_vcpus_never_move() {
    let _m = Machine::take();
    crate::machine::set_online_cpus(3);
    let d0 = dom0();
    let pinned: alloc::vec::Vec<_> = (0..3).map(|i| started_guest(&d0, &alloc::format!("p{i}"), 0b010, 0)).collect();
    let two = started_guest(&d0, "two", 0b110, 0);
    assert_eq!(two.vcpus[0].pcpu(), 2, "least loaded of its CPUs");
    let extra = started_guest(&d0, "extra", 0b100, 0);
    assert_eq!(extra.vcpus[0].pcpu(), 2);
    // CPU 0 idles: CPU 1 has 3 runnable vCPUs, but all pinned there, and
    // CPU 2's two may not run on CPU 0.
    fake::cpu::set_index(0);
    assert!(sched::switch_in_next().is_none());
    // CPU 1's tick pushes to CPU 0? Pinned: no.
    fake::cpu::set_index(1);
    sched::make_current(pinned[0].clone(), 0);
    sched::on_timer();
    assert_eq!(sched::migrations(), 0);
    assert!(pinned.iter().all(|p| p.vcpus[0].pcpu() == 1));
    assert_eq!(two.vcpus[0].pcpu(), 2);
    // The disabled balancer moves nothing either (`hv.no_balance`).
    let free = started_guest(&d0, "free", 0, 0);
    fake::cpu::set_index(free.vcpus[0].pcpu());
    let _ = sched::switch_in_next();
    sched::set_balancing(false);
    started_guest(&d0, "free2", 1 << free.vcpus[0].pcpu(), 0);
    started_guest(&d0, "free3", 0, 0);
    assert_eq!(sched::migrations(), 0);
}

#[test]
fn a_tick_on_a_loaded_cpu_pushes_a_waiting_vcpu_to_a_cpu_it_may_run_on_and_kicks_it() {
    let _m = Machine::take();
    crate::machine::set_online_cpus(3);
    let d0 = dom0();
    // Placed while x and y kept CPU 2 busy: the pinned `a` and the
    // movable `b` and `c` (CPUs 1 and 2, not 0) all on CPU 1.
    let x = started_guest(&d0, "x", 0b100, 0);
    let y = started_guest(&d0, "y", 0b100, 0);
    let a = started_guest(&d0, "a", 0b010, 0);
    let b = started_guest(&d0, "b", 0b110, 0);
    let c = started_guest(&d0, "c", 0b110, 0);
    assert!([&a, &b, &c].iter().all(|g| g.vcpus[0].pcpu() == 1));
    // x and y run on CPU 2 and block.
    fake::cpu::set_index(2);
    for g in [&x, &y] {
        assert_eq!(sched::switch_in_next().map(|(vm, _)| vm.id), Some(g.id));
        sched::forget_current_for_test();
    }
    fake::cpu::set_index(0);
    sched::forget_current_for_test(); // dom0 blocks: CPUs 0 and 2 idle
    fake::cpu::set_index(1);
    let (vm, _) = sched::switch_in_next().expect("a runs");
    assert_eq!(vm.id, a.id);
    fake::take_events();
    fake::cpu::advance(1_000);
    // CPU 1's tick (3 runnable): CPU 0, the first of the idle ones, may
    // take none of them; CPU 2 gets the last queued, c, and is kicked.
    sched::on_timer();
    assert_eq!(sched::migrations(), 1);
    assert_eq!(c.vcpus[0].pcpu(), 2);
    assert_eq!((sched::queued_on(1), sched::queued_on(2)), (alloc::vec![r(&b)], alloc::vec![r(&c)]));
    assert!(fake::take_events().contains(&Event::Sgi { intid: SGI_KICK, target: 2, from: 1 }));
    assert_eq!(a.vcpus[0].pcpu(), 1, "the running vCPU stays");
    // 2 against 1 and 0: a move would not even anything out.
    sched::on_timer();
    assert_eq!(sched::migrations(), 1);
}

#[test]
fn a_vcpu_woken_before_its_cpu_saved_it_is_not_pulled_until_saved() {
    let _m = Machine::take();
    let d0 = dom0();
    // g (movable) runs on CPU 1; h, pinned there, waits.
    let g = started_guest(&d0, "g", 0b011, 0);
    assert_eq!(g.vcpus[0].pcpu(), 1);
    fake::cpu::set_index(1);
    let (vm, _) = sched::switch_in_next().expect("g runs");
    assert_eq!(vm.id, g.id);
    let h = started_guest(&d0, "h", 0b010, 0);
    // g blocks in WFI; before CPU 1 switches it out, CPU 0 wakes it: it is
    // queued on CPU 1 while CPU 1 still holds its registers.
    g.vcpus[0].sched.store(state::BLOCKED, Ordering::Release);
    fake::cpu::set_index(0);
    sched::wake(&g, 0);
    assert_eq!(sched::queued_on(1), [r(&g), r(&h)], "woken from WFI: first");
    sched::forget_current_for_test(); // dom0 (which made the calls) blocks
    // CPU 0 idles and looks for work: g is the only movable one, and it
    // is not saved yet.
    fake::cpu::advance(1_000);
    assert!(sched::switch_in_next().is_none(), "took a vCPU whose context is still on CPU 1");
    assert_eq!(g.vcpus[0].pcpu(), 1);
    // CPU 1 saves g (and has not picked the next yet); now CPU 0 may take
    // g, with the registers CPU 1 saved.
    fake::cpu::set_index(1);
    // SAFETY: g ran on CPU 1 until now; this test is its only user.
    sched::switch_out(sched::Out::Leave, |v| unsafe { v.context_mut() }.regs = TrapFrame { elr: 0x4000_0444, ..TrapFrame::default() });
    fake::cpu::advance(1_000);
    fake::cpu::set_index(0);
    let entered = diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("CPU 0 pulls g");
    assert_eq!(entered.0.elr, 0x4000_0444, "g resumes where CPU 1 saved it");
    assert_eq!(g.vcpus[0].pcpu(), 0);
    assert_eq!(sched::migrations(), 1);
}

#[test]
fn a_moved_vcpu_keeps_its_weight() {
    let _m = Machine::take();
    crate::machine::set_online_cpus(3);
    let d0 = dom0();
    let heavy = started_guest(&d0, "heavy", 0b110, 512);
    let pinned = started_guest(&d0, "pinned", 0b010, 0);
    assert_eq!((heavy.vcpus[0].pcpu(), pinned.vcpus[0].pcpu()), (1, 1));
    // CPU 2 has nothing to run and pulls `heavy`, once it has waited on
    // CPU 1 for a millisecond (before, it would soon run there anyway).
    fake::cpu::set_index(2);
    assert!(sched::switch_in_next().is_none(), "pulled a vCPU queued a moment ago");
    fake::cpu::advance(1_000);
    let (vm, _) = sched::switch_in_next().expect("pulled");
    assert_eq!(vm.id, heavy.id);
    let since = crate::arch::cpu::counter();
    // Someone waits on CPU 2: heavy's slice there is its weight's (twice
    // the default), as on the CPU it came from.
    let waiting = started_guest(&d0, "waiting", 0b100, 0);
    assert_eq!(waiting.vcpus[0].pcpu(), 2);
    fake::take_events();
    fake::cpu::set_index(2);
    sched::on_timer();
    let deadline = fake::take_events().into_iter().rev().find_map(|e| match e {
        Event::HypTimer { cpu: 2, deadline: Some(d) } => Some(d),
        _ => None,
    });
    let slice = crate::schedpolicy::slice_ticks(512, crate::arch::cpu::counter_frequency());
    let left = deadline.expect("slice timer armed").saturating_sub(since);
    assert!(left > slice - slice / 10 && left <= slice, "slice left {left}, weight 512's is {slice}");
}

#[test]
fn placement_takes_the_least_loaded_cpu_not_the_least_assigned() {
    let _m = Machine::take();
    let d0 = dom0();
    // CPU 0 holds dom0 (running: it makes the calls) and two guests that
    // are not running (never started); CPU 1 three runnable ones.
    for name in ["s1", "s2"] {
        create_guest(&d0, name, 1, 2 << 20, 0b01).expect("on CPU 0");
    }
    for name in ["b1", "b2", "b3"] {
        started_guest(&d0, name, 0b10, 0);
    }
    let new = create_guest(&d0, "new", 2, 2 << 20, 0).expect("placed");
    assert_eq!(new.vcpus.iter().map(|v| v.pcpu()).collect::<alloc::vec::Vec<_>>(), [0, 0], "CPU 0 has 3 vCPUs assigned but runs none");
    // A new VM's vCPUs count the ones placed before them: of 4, two even
    // the loads out (CPU 0: 1 + 2 against CPU 1's 3), then they take turns.
    let spread = create_guest(&d0, "spread", 4, 2 << 20, 0).expect("placed");
    assert_eq!(spread.vcpus.iter().map(|v| v.pcpu()).collect::<alloc::vec::Vec<_>>(), [0, 0, 1, 0]);
}

#[test]
fn a_vcpu_waiting_for_dom0_counts_in_its_cpus_load_until_answered() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = started_guest(&d0, "g", 0b10, 0);
    fake::cpu::set_index(1);
    let _ = sched::switch_in_next().expect("g runs");
    assert_eq!(sched::load(1), 1);
    // A forwarded access: g waits for dom0 and leaves its CPU.
    g.vcpus[0].sched.store(state::IO_WAIT, Ordering::Release);
    sched::switch_out(sched::Out::Leave, |_| {});
    assert_eq!(sched::load(1), 1, "an idle CPU 0 must not think CPU 1 has nothing");
    fake::cpu::set_index(0);
    sched::wake_io(&g, 0);
    assert_eq!((sched::load(1), sched::queued_on(1).len()), (1, 1), "counted once, as queued");
}

#[test]
fn a_late_wake_up_leaves_a_vcpu_that_blocked_again_to_its_soft_timer() {
    // The race of the GICv3 chaos runs that never finished: a wake-up reads
    // the vCPU as runnable; before it takes the vCPU's CPU lock, the vCPU
    // runs and blocks again in WFI, arming its soft timer. The late half of
    // that wake-up (`queue_runnable`) must neither cancel the timer (then
    // nothing ever wakes it) nor queue the blocked vCPU (a CPU pulling the
    // entry would move it away from its timer).
    let _m = Machine::take();
    let d0 = dom0();
    let g = started_guest(&d0, "g", 0b011, 0);
    assert_eq!(g.vcpus[0].pcpu(), 1);
    fake::cpu::set_index(1);
    let (vm, _) = sched::switch_in_next().expect("g runs on CPU 1");
    assert_eq!(vm.id, g.id);
    let deadline = crate::arch::cpu::counter() + 500;
    fake::timer::set_vtimer_deadline(Some(deadline));
    assert_eq!(sched::block(&g, &g.vcpus[0]), sched::Next::Leave);
    sched::switch_out(sched::Out::Leave, |_| {});
    assert_eq!(sched::soft_timer_of(&g, 0), Some(deadline));
    // The late half of the wake-up, on CPU 0.
    fake::cpu::set_index(0);
    sched::queue_runnable(&g, 0, false);
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::BLOCKED);
    assert_eq!(sched::soft_timer_of(&g, 0), Some(deadline), "its timer is its only way back");
    assert!(sched::queued_on(1).is_empty(), "a blocked vCPU is in no run queue: {:?}", sched::queued_on(1));
    // Even an entry left behind (as the unfixed wake-up left one) is not
    // pulled: CPU 0, idle, must not move g away from CPU 1, which holds
    // its timer, however busy CPU 1 looks (h, pinned there, waits too).
    let _h = started_guest(&d0, "h", 0b010, 0);
    fake::cpu::set_index(1);
    sched::enqueue_for_test(1, &g, 0);
    fake::cpu::set_index(0);
    sched::forget_current_for_test();
    fake::cpu::advance(1_000);
    assert!(sched::switch_in_next().is_none(), "pulled a blocked vCPU");
    assert_eq!((g.vcpus[0].pcpu(), sched::migrations()), (1, 0));
    fake::cpu::set_index(1);
    sched::on_timer();
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE, "woken at its timer");
    // (Runnable now, it may also have been pushed to idle CPU 0.)
    assert!(sched::queued_on(g.vcpus[0].pcpu()).contains(&r(&g)));
}

/// `a` and `b`, one vCPU each, started on CPU 1 (entries 0x4000_0000 and
/// 0x4000_8000, x0 = 0xd7b); this CPU is CPU 1.
fn a_and_b_on_cpu1() -> (Machine, alloc::sync::Arc<crate::vm::Vm>, alloc::sync::Arc<crate::vm::Vm>) {
    let m = Machine::take();
    let d0 = dom0();
    let a = create_guest(&d0, "a", 1, 2 << 20, 0b10).expect("on CPU 1");
    let b = create_guest(&d0, "b", 1, 2 << 20, 0b10).expect("on CPU 1");
    for (vm, pc) in [(&a, 0x4000_0000u64), (&b, 0x4000_8000)] {
        assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmSetEntry, &[vm.id.0 as u64, 0, pc, 0xd7b]).0, 0);
        assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmStart, &[vm.id.0 as u64]).0, 0);
    }
    fake::cpu::set_index(1);
    (m, a, b)
}

#[test]
fn a_vcpu_that_overran_its_slice_skips_turns_until_it_has_paid() {
    let (_m, a, b) = a_and_b_on_cpu1();
    let slice = crate::schedpolicy::slice_ticks(256, 1_000_000);
    let entered = diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a");
    assert_eq!(entered.0.elr, 0x4000_0000);
    // Its timer interrupt comes 2.5 slices late (as a descheduled QEMU
    // thread takes it): it owes that much.
    fake::cpu::advance(slice + slice * 5 / 2);
    let mut order = alloc::vec::Vec::new();
    for _ in 0..4 {
        diverges(|| crate::switch::schedule(&TrapFrame::default(), sched::Out::Preempt)).downcast::<Entered>().expect("entered");
        order.push(sched::current().expect("running").0.id);
        fake::cpu::advance(slice);
    }
    // `b` runs three turns while `a`'s two skipped turns pay two slices of
    // its debt; then `a` runs the half slice it has left.
    assert_eq!(order, [b.id, b.id, b.id, a.id]);
    assert!(a.vcpus[0].steal_ticks.load(Ordering::Relaxed) >= 3 * slice, "its skipped turns were waits");
}

#[test]
fn a_vcpu_preempted_by_a_woken_one_runs_the_rest_of_its_slice_before_the_others() {
    let (_m, a, b) = a_and_b_on_cpu1();
    let d0 = crate::vm::get(VmId(0)).expect("dom0");
    let c = create_guest(&d0, "c", 1, 2 << 20, 0b10).expect("on CPU 1");
    assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmSetEntry, &[c.id.0 as u64, 0, 0x4001_0000, 0]).0, 0);
    fake::cpu::set_index(0);
    assert_eq!(hypercall(&d0, hv_abi::hypercall::Function::VmStart, &[c.id.0 as u64]).0, 0);
    fake::cpu::set_index(1);
    let slice = crate::schedpolicy::slice_ticks(256, 1_000_000);
    // `a` runs (b and c wait); `c` blocks as if in WFI long ago.
    sched::forget_vm(&c, 2);
    c.vcpus[0].sched.store(state::BLOCKED, Ordering::Release);
    c.vcpus[0].queued_at.store(crate::vm::NOT_QUEUED, Ordering::Relaxed);
    let entered = diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a");
    assert_eq!(entered.0.elr, 0x4000_0000);
    // A fifth into its slice an interrupt wakes `c`: it preempts `a`.
    fake::cpu::advance(slice / 5);
    sched::wake(&c, 0);
    let entered = diverges(|| crate::switch::schedule(&TrapFrame::default(), sched::Out::Preempt)).downcast::<Entered>().expect("entered c");
    assert_eq!(entered.0.elr, 0x4001_0000);
    assert_eq!(sched::queued_on(1), [VcpuRef { vm: a.id, vcpu: 0 }, VcpuRef { vm: b.id, vcpu: 0 }], "a goes back ahead of b");
    let left = a.vcpus[0].slice_balance.load(Ordering::Relaxed);
    assert!((slice as i64 * 3 / 4..=slice as i64 * 4 / 5).contains(&left), "a keeps the rest of its slice: {left}");
    // `c` blocks again: `a` runs on, for what it had left.
    c.vcpus[0].sched.store(state::BLOCKED, Ordering::Release);
    diverges(|| crate::switch::schedule(&TrapFrame::default(), sched::Out::Leave)).downcast::<Entered>().expect("entered a");
    assert_eq!(sched::current().expect("running").0.id, a.id);
    assert_eq!(a.vcpus[0].slice_balance.load(Ordering::Relaxed), 0, "taken while it runs");
}

#[test]
fn a_running_vcpus_cpu_time_includes_its_current_stretch() {
    let (_m, a, _b) = a_and_b_on_cpu1();
    diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a");
    fake::cpu::advance(7_000);
    let t = sched::run_ticks(&a, &a.vcpus[0]);
    assert!((7_000..7_100).contains(&t), "{t}");
    assert_eq!(a.vcpus[0].run_ticks.load(Ordering::Relaxed), 0, "not yet counted at a switch");
}

#[test]
fn time_a_vcpu_ran_alone_past_its_slice_is_no_debt() {
    let (_m, a, b) = a_and_b_on_cpu1();
    let slice = crate::schedpolicy::slice_ticks(256, 1_000_000);
    // `b` blocks as if in WFI long ago: `a` has CPU 1 to itself.
    sched::forget_vm(&b, 2);
    b.vcpus[0].sched.store(state::BLOCKED, Ordering::Release);
    b.vcpus[0].queued_at.store(crate::vm::NOT_QUEUED, Ordering::Relaxed);
    diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a");
    fake::cpu::advance(5 * slice);
    // An interrupt wakes `b`: `a`'s turn ends, owing nothing.
    sched::wake(&b, 0);
    assert!(sched::resched_pending());
    diverges(|| crate::switch::schedule(&TrapFrame::default(), sched::Out::Preempt)).downcast::<Entered>().expect("entered b");
    assert_eq!(sched::current().expect("running").0.id, b.id);
    let balance = a.vcpus[0].slice_balance.load(Ordering::Relaxed);
    assert!((-(slice as i64) / 100..=0).contains(&balance), "{balance}");
    assert_eq!(sched::queued_on(1), [VcpuRef { vm: a.id, vcpu: 0 }]);
}

/// A parked vCPU that resumes in place leaves its CPU's EL2 timer armed
/// for what is due there (the soft timers; no slice end, as nothing else
/// waits), whether it had an interrupt of its own (the timer is left as
/// `park` armed it) or was woken from another CPU (which claims it
/// without queueing it: the kick arms nothing).
#[test]
fn a_parked_vcpu_resumed_in_place_leaves_the_el2_timer_to_the_soft_timers() {
    let _m = Machine::take();
    let d0 = dom0();
    let h = started_guest(&d0, "h", 0b010, 0);
    let g = started_guest(&d0, "g", 0b010, 0);
    fake::cpu::set_index(1);
    let slice = crate::schedpolicy::slice_ticks(256, crate::arch::cpu::counter_frequency());
    // The EL2 timer of CPU 1 as last armed.
    let mut armed = None;
    let follow = |armed: &mut Option<u64>| {
        for e in fake::take_events() {
            if let Event::HypTimer { cpu: 1, deadline } = e {
                *armed = deadline;
            }
        }
    };
    // h runs first and blocks with its virtual timer far ahead: switched
    // out, its soft timer armed.
    let (vm, _) = sched::switch_in_next().expect("h runs");
    assert_eq!(vm.id, h.id);
    let far = crate::arch::cpu::counter() + 50 * slice;
    fake::timer::set_vtimer_deadline(Some(far));
    assert_eq!(sched::block(&h, &h.vcpus[0]), sched::Next::Leave);
    sched::switch_out(sched::Out::Leave, |_| {});
    fake::timer::set_vtimer_deadline(None);
    let (vm, _) = sched::switch_in_next().expect("g runs");
    assert_eq!(vm.id, g.id);
    let park = |g: &crate::vm::Vm| {
        assert_eq!(sched::block(g, &g.vcpus[0]), sched::Next::Leave);
        assert!(sched::park(g, &g.vcpus[0]), "nothing else to run: parked");
    };
    park(&g);
    follow(&mut armed);
    assert_eq!(armed, Some(far), "parked: h's soft timer");
    // Its own interrupt wakes it.
    assert_eq!(sched::parked_next(&g, &g.vcpus[0], true), sched::Parked::Resume);
    follow(&mut armed);
    assert_eq!(armed, Some(far), "resumed with its own interrupt");
    // Parked again at once (its slice not over), then woken from CPU 0:
    // claimed for CPU 1, not queued (`Vcpu::parking`), so its kick finds
    // nothing waiting and arms no slice end; it resumes in place with the
    // EL2 timer still for h's soft timer.
    park(&g);
    fake::cpu::set_index(0);
    sched::wake(&g, 0);
    fake::cpu::set_index(1);
    sched::on_kick();
    follow(&mut armed);
    assert_eq!(armed, Some(far), "the kick found nothing queued: {armed:?}");
    assert_eq!(sched::parked_next(&g, &g.vcpus[0], false), sched::Parked::Resume);
    follow(&mut armed);
    assert_eq!(armed, Some(far), "resumed in place: nothing waits, so no slice end");
}


/// `g` (one vCPU, pinned to CPU 1) runs there, blocks in WFI and is parked
/// (`sched::park`); this CPU is then CPU 0, and the events so far are gone.
fn parked_on_cpu1(d0: &alloc::sync::Arc<crate::vm::Vm>) -> alloc::sync::Arc<crate::vm::Vm> {
    let g = started_guest(d0, "g", 0b010, 0);
    fake::cpu::set_index(1);
    let (vm, vcpu) = sched::switch_in_next().expect("g runs on CPU 1");
    assert_eq!((vm.id, vcpu.index), (g.id, 0));
    assert_eq!(sched::block(&g, &g.vcpus[0]), sched::Next::Leave);
    assert!(sched::park(&g, &g.vcpus[0]), "nothing else for CPU 1: parked");
    assert_eq!(g.vcpus[0].parking.load(Ordering::Acquire), sched::parking::PARKED);
    fake::cpu::set_index(0);
    fake::take_events();
    g
}

#[test]
fn waking_a_parked_vcpu_kicks_its_cpu_which_resumes_it_in_place() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = parked_on_cpu1(&d0);
    sched::wake(&g, 0);
    // As the general path for a blocked vCPU: runnable, and its CPU kicked
    // once; but not queued, its CPU resumes it where it is.
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE);
    assert_eq!(fake::take_events(), [Event::Sgi { intid: SGI_KICK, target: 1, from: 0 }]);
    assert!(sched::queued_on(1).is_empty(), "{:?}", sched::queued_on(1));
    // A second wake-up changes nothing.
    sched::wake(&g, 0);
    assert!(sched::queued_on(1).is_empty());
    assert_eq!(g.vcpus[0].parking.load(Ordering::Acquire), sched::parking::WOKEN);
    fake::cpu::set_index(1);
    assert_eq!(sched::parked_next(&g, &g.vcpus[0], false), sched::Parked::Resume);
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::RUNNING);
    assert_eq!(g.vcpus[0].parking.load(Ordering::Acquire), sched::parking::NONE);
    assert_eq!(sched::loaded_on(1), (Some((g.id, 0, false)), 0), "running again, not parked");
    // Blocked again (no longer parked), a wake-up takes the general path.
    assert_eq!(sched::block(&g, &g.vcpus[0]), sched::Next::Leave);
    sched::switch_out(sched::Out::Leave, |_| {});
    fake::cpu::set_index(0);
    sched::wake(&g, 0);
    assert_eq!(sched::queued_on(1), [r(&g)]);
}

#[test]
fn a_parked_vcpu_woken_then_switched_out_is_queued_by_its_cpu() {
    // Its CPU found something else to run before it resumed the vCPU the
    // wake-up left to it: switching it out must queue it (the wake-up did
    // not), in front, as the general path does for a woken vCPU.
    let _m = Machine::take();
    let d0 = dom0();
    let g = parked_on_cpu1(&d0);
    let h = started_guest(&d0, "h", 0b010, 0);
    sched::wake(&g, 0);
    assert_eq!(sched::queued_on(1), [r(&h)]);
    fake::cpu::set_index(1);
    assert_eq!(sched::parked_next(&g, &g.vcpus[0], false), sched::Parked::SwitchOut);
    sched::switch_out(sched::Out::Leave, |_| {});
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE);
    assert_eq!(g.vcpus[0].parking.load(Ordering::Acquire), sched::parking::NONE);
    assert_eq!(sched::queued_on(1), [r(&g), r(&h)]);
    assert_eq!(sched::soft_timer_of(&g, 0), None);
    let (vm, _) = sched::switch_in_next().expect("g runs");
    assert_eq!(vm.id, g.id);
}

#[test]
fn a_parked_vcpu_switched_out_unwoken_is_left_to_the_general_wake_up() {
    // Switched out while nobody had claimed it: blocked, with its soft
    // timer; a wake-up after that queues it, as for any blocked vCPU.
    let _m = Machine::take();
    let d0 = dom0();
    let g = parked_on_cpu1(&d0);
    let h = started_guest(&d0, "h", 0b010, 0);
    fake::cpu::set_index(1);
    assert_eq!(sched::parked_next(&g, &g.vcpus[0], false), sched::Parked::SwitchOut);
    sched::switch_out(sched::Out::Leave, |_| {});
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::BLOCKED);
    assert_eq!(g.vcpus[0].parking.load(Ordering::Acquire), sched::parking::NONE);
    assert_eq!(sched::queued_on(1), [r(&h)]);
    fake::cpu::set_index(0);
    sched::wake(&g, 0);
    assert_eq!(sched::queued_on(1), [r(&g), r(&h)]);
}

#[test]
fn a_vcpu_woken_before_it_parked_is_queued_and_not_parked() {
    // The wake-up came between its block and `park`: nothing to claim, so
    // it is queued, and `park` refuses (it is runnable).
    let _m = Machine::take();
    let d0 = dom0();
    let g = started_guest(&d0, "g", 0b010, 0);
    fake::cpu::set_index(1);
    sched::switch_in_next().expect("g runs on CPU 1");
    assert_eq!(sched::block(&g, &g.vcpus[0]), sched::Next::Leave);
    fake::cpu::set_index(0);
    sched::wake(&g, 0);
    assert_eq!(sched::queued_on(1), [r(&g)]);
    fake::cpu::set_index(1);
    assert!(!sched::park(&g, &g.vcpus[0]));
    assert_eq!(g.vcpus[0].parking.load(Ordering::Acquire), sched::parking::NONE);
}
