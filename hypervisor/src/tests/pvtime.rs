//! Overcommit: paravirtualised stolen time (the SMCCC calls' answers, the
//! structure, the scheduler's accounting) and WFE yielding the CPU.

use core::sync::atomic::Ordering;

use hv_abi::hypercall::{guest, Error, Function, VmState};
use hv_abi::pvtime::{StolenTime, PV_TIME_FEATURES, PV_TIME_ST};
use smccc::arch::{SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1, SMCCC_VERSION};
use smccc::psci::error::NOT_SUPPORTED;

use super::support::*;
use crate::arch::fake::{self, Entered};
use crate::arch::{GuestException, TrapFrame};
use crate::sched::{self, state, Next};
use crate::vm::Vm;

const NS_PER_TICK: u64 = 1_000; // the fake counter runs at 1 MHz

/// An SMCCC call `id` with x1 = `a1` from `vm`'s vCPU `index`, through
/// HVC or SMC: x0 after it.
fn smccc(vm: &alloc::sync::Arc<Vm>, index: usize, id: u32, a1: u64, smc: bool) -> i64 {
    let class = if smc { ec::SMC64 } else { ec::HVC64 };
    let mut frame = TrapFrame { esr: esr(class, 0), elr: 0x4000_0000, ..TrapFrame::default() };
    frame.x[0] = id as u64;
    frame.x[1] = a1;
    assert_eq!(trap(vm, index, &mut frame, GuestException::Sync), Next::Resume);
    frame.x[0] as i64
}

/// vCPU `index`'s stolen-time structure as the guest would read it.
fn stolen_time(vm: &Vm, index: usize) -> StolenTime {
    let page = vm.pv_time.expect("a guest has a stolen-time page");
    // SAFETY: the page is the VM's, in the test's RAM block, and lives as
    // long as the VM; a 64-byte structure per vCPU index fits in it.
    unsafe { core::ptr::read_volatile((page.as_u64() as *const StolenTime).add(index)) }
}

/// Two started guests with one vCPU each, both on CPU 1, `a` queued first.
fn two_guests_on_cpu1() -> (Machine, alloc::sync::Arc<Vm>, alloc::sync::Arc<Vm>) {
    let m = Machine::take();
    let d0 = dom0();
    let a = create_guest(&d0, "a", 1, 2 << 20, 0b10).expect("on CPU 1");
    let b = create_guest(&d0, "b", 1, 2 << 20, 0b10).expect("on CPU 1");
    for vm in [&a, &b] {
        assert_eq!(hypercall(&d0, Function::VmSetEntry, &[vm.id.0 as u64, 0, guest::RAM_BASE, 0]).0, 0);
        assert_eq!(hypercall(&d0, Function::VmStart, &[vm.id.0 as u64]).0, 0);
    }
    fake::cpu::set_index(1);
    (m, a, b)
}

#[test]
fn a_guest_finds_pv_time_through_smccc_arch_features_and_each_vcpu_gets_its_structure() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 2, 2 << 20, 0).expect("created");
    g.set_state(VmState::Running);
    for smc in [false, true] {
        assert_eq!(smccc(&g, 0, SMCCC_VERSION, 0, smc), 0x1_0001, "SMCCC 1.1");
        assert_eq!(smccc(&g, 0, SMCCC_ARCH_FEATURES, PV_TIME_FEATURES as u64, smc), 0);
        assert_eq!(smccc(&g, 0, PV_TIME_FEATURES, PV_TIME_FEATURES as u64, smc), 0);
        assert_eq!(smccc(&g, 0, PV_TIME_FEATURES, PV_TIME_ST as u64, smc), 0);
        // Only the low 32 bits of x1 name the function (w1).
        assert_eq!(smccc(&g, 0, PV_TIME_FEATURES, 0xffff_ffff_0000_0000 | PV_TIME_ST as u64, smc), 0);
        assert_eq!(smccc(&g, 0, PV_TIME_ST, 0, smc), guest::PV_TIME_BASE as i64);
        assert_eq!(smccc(&g, 1, PV_TIME_ST, 0, smc), guest::PV_TIME_BASE as i64 + 64);
    }
    let ns = NOT_SUPPORTED as i64;
    assert_eq!(smccc(&g, 0, SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1 as u64, false), ns, "no firmware workarounds");
    assert_eq!(smccc(&g, 0, SMCCC_ARCH_FEATURES, PV_TIME_ST as u64, false), ns, "discovered through PV_TIME_FEATURES");
    assert_eq!(smccc(&g, 0, PV_TIME_FEATURES, SMCCC_VERSION as u64, false), ns, "not a PV-time call");
    assert_eq!(smccc(&g, 0, PV_TIME_FEATURES, 0xC500_0022, false), ns, "the next ID is not offered");
    assert_eq!(smccc(&g, 0, 0xC500_0022, 0, false), ns, "unknown standard hypervisor call");
    // Each structure starts as DEN0057 says: revision 0, attributes 0,
    // nothing stolen.
    for index in 0..2 {
        assert_eq!(stolen_time(&g, index), StolenTime::default());
    }
    // The page is mapped read-only at the IPA the call returns, outside RAM.
    let tables = g.stage2.lock();
    let (pa, attrs) = tables.as_ref().expect("tables").translate(crate::addr::Ipa::new(guest::PV_TIME_BASE)).expect("mapped");
    assert_eq!(Some(pa), g.pv_time);
    assert!(attrs.read && !attrs.write && !attrs.execute, "{attrs:?}");
    assert!(!g.contains_ram(guest::PV_TIME_BASE, 64));
}

#[test]
fn dom0_is_not_offered_pv_time() {
    let _m = Machine::take();
    let d0 = dom0();
    let ns = NOT_SUPPORTED as i64;
    assert_eq!(smccc(&d0, 0, SMCCC_ARCH_FEATURES, PV_TIME_FEATURES as u64, false), ns);
    assert_eq!(smccc(&d0, 0, PV_TIME_FEATURES, PV_TIME_ST as u64, false), ns);
    assert_eq!(smccc(&d0, 0, PV_TIME_ST, 0, false), ns);
}

#[test]
fn dom0_cannot_forward_the_stolen_time_window() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let (r, _) = hypercall(&d0, Function::IoMap, &[g.id.0 as u64, guest::PV_TIME_BASE, 0x1000, 0]);
    assert_eq!(r, Error::InvalidParameter.code());
}

#[test]
fn time_in_the_run_queue_is_stolen_time_and_the_guest_sees_it_before_it_runs() {
    let (_m, a, b) = two_guests_on_cpu1();
    // `a` runs; `b` waits behind it for 5000 ticks, then `a`'s slice ends.
    let entered = diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered");
    assert_eq!(entered.0.elr, guest::RAM_BASE);
    assert_eq!(a.vcpus[0].sched.load(Ordering::Acquire), state::RUNNING);
    fake::cpu::advance(5000);
    diverges(|| crate::switch::schedule(&TrapFrame::default(), crate::sched::Out::Yield)).downcast::<Entered>().expect("entered b");
    assert_eq!(b.vcpus[0].sched.load(Ordering::Acquire), state::RUNNING);
    let stolen_b = b.vcpus[0].steal_ticks.load(Ordering::Relaxed);
    assert!((5000..5100).contains(&stolen_b), "b waited 5000 ticks (the fake counter adds one per read): {stolen_b}");
    assert_eq!(stolen_time(&b, 0).stolen_time, stolen_b * NS_PER_TICK, "published in ns before b runs");
    assert_eq!(stolen_time(&b, 0).revision, 0);
    // `a` waited only as long as switching took; now it waits 3000 ticks.
    let stolen_a = a.vcpus[0].steal_ticks.load(Ordering::Relaxed);
    assert!(stolen_a < 100, "{stolen_a}");
    fake::cpu::advance(3000);
    diverges(|| crate::switch::schedule(&TrapFrame::default(), crate::sched::Out::Yield)).downcast::<Entered>().expect("entered a");
    let stolen_a = a.vcpus[0].steal_ticks.load(Ordering::Relaxed);
    assert!((3000..3100).contains(&stolen_a), "{stolen_a}");
    assert_eq!(stolen_time(&a, 0).stolen_time, stolen_a * NS_PER_TICK);
}

#[test]
fn time_blocked_in_wfi_or_paused_is_not_stolen() {
    let (_m, a, b) = two_guests_on_cpu1();
    diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a");
    // `b` is taken out of the queue as if it had blocked in WFI long ago.
    sched::forget_vm(&b, 2);
    b.vcpus[0].sched.store(state::BLOCKED, Ordering::Release);
    b.vcpus[0].queued_at.store(crate::vm::NOT_QUEUED, Ordering::Relaxed);
    fake::cpu::advance(10_000);
    // An interrupt wakes it: it preempts `a` and runs almost at once.
    sched::wake(&b, 0);
    diverges(|| crate::switch::schedule(&TrapFrame::default(), crate::sched::Out::Preempt)).downcast::<Entered>().expect("entered b");
    assert!(b.vcpus[0].steal_ticks.load(Ordering::Relaxed) < 100, "blocked time is not stolen");
    // `a` waits behind b; its VM is paused meanwhile: the pause is not
    // stolen, and after unpause the wait starts afresh.
    assert_eq!(a.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE);
    let d0 = crate::vm::get(crate::vm::VmId(0)).expect("dom0");
    fake::cpu::set_index(0);
    assert_eq!(hypercall(&d0, Function::VmPause, &[a.id.0 as u64]).0, 0);
    fake::cpu::set_index(1);
    sched::forget_current_for_test();
    // CPU 1 looks at its queue: `a` is skipped (paused), nothing runs.
    let _ = diverges(|| crate::switch::run_next());
    fake::cpu::advance(20_000);
    fake::cpu::set_index(0);
    assert_eq!(hypercall(&d0, Function::VmUnpause, &[a.id.0 as u64]).0, 0);
    fake::cpu::set_index(1);
    diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a");
    let stolen_a = a.vcpus[0].steal_ticks.load(Ordering::Relaxed);
    assert!(stolen_a < 20_000, "paused time counted as stolen: {stolen_a}");
}

#[test]
fn wfe_yields_to_another_runnable_vcpu_of_its_cpu() {
    let (_m, a, b) = two_guests_on_cpu1();
    diverges(|| crate::switch::run_next()).downcast::<Entered>().expect("entered a");
    // `a` spins on a lock with WFE while `b` waits for the CPU: `a` yields.
    let mut frame = TrapFrame { esr: esr(ec::WFX, 1), elr: guest::RAM_BASE + 0x40, ..TrapFrame::default() };
    let next = crate::trap::dispatch(&a, &a.vcpus[0], &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Yield);
    assert_eq!(frame.elr, guest::RAM_BASE + 0x44, "steps over the WFE");
    let entered = diverges(|| crate::switch::finish_trap(&a, &a.vcpus[0], &frame, next)).downcast::<Entered>().expect("entered");
    assert_eq!(entered.0.elr, guest::RAM_BASE, "b runs");
    assert_eq!(b.vcpus[0].sched.load(Ordering::Acquire), state::RUNNING);
    assert_eq!(a.vcpus[0].sched.load(Ordering::Acquire), state::RUNNABLE, "a waits behind b, still runnable");
    assert_eq!(sched::queued_on(1).first().map(|r| r.vm), Some(a.id));
}

#[test]
fn wfe_alone_on_its_cpu_returns_to_the_vcpu_at_once() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0b10).expect("on CPU 1");
    g.set_state(VmState::Running);
    let mut frame = TrapFrame { esr: esr(ec::WFX, 1), elr: guest::RAM_BASE + 0x40, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(frame.elr, guest::RAM_BASE + 0x44);
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), state::RUNNING, "not blocked, unlike WFI");
    assert!(!sched::resched_pending());
}

#[test]
fn ticks_become_nanoseconds_without_overflow() {
    use crate::pvtime::ticks_to_ns;
    assert_eq!(ticks_to_ns(62_500_000, 62_500_000), 1_000_000_000);
    assert_eq!(ticks_to_ns(1, 62_500_000), 16);
    assert_eq!(ticks_to_ns(3, 1_000_000), 3_000);
    // Ten years of a 1 GHz counter.
    let ten_years = 10 * 365 * 24 * 3600 * 1_000_000_000u64;
    assert_eq!(ticks_to_ns(ten_years, 1_000_000_000), ten_years);
    assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX, "saturates");
}
