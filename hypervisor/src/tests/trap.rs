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
    let mut frame = TrapFrame { esr: data_abort_esr(8, 1, true), far: 0xffff_0000_0000_0000, elr: 0x4000_2000, spsr: SPSR_EL1H, ..TrapFrame::default() };
    frame.x[1] = 0x1234;
    let next = trap(&g, 0, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Resume, "the guest takes the abort; it is not stopped");
    // EC 0x25 (data abort, same EL), IL, WnR, DFSC 0x10: as QEMU's bus answers.
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x9600_0050, far: 0xffff_0000_0000_0000 }]);
    assert_eq!(frame.x[1], 0x1234, "the source register is untouched");
    assert_eq!(g.state(), VmState::Created, "the VM's state is unchanged");
    assert_eq!(g.vcpus[0].exits[crate::vm::Exit::Abort as usize].load(Ordering::Relaxed), 1);
}

#[test]
fn instruction_fetch_outside_memory_gets_a_prefetch_abort_and_the_guest_runs_on() {
    let (_m, g) = guest_machine();
    g.set_state(VmState::Running);
    fake::el2::set_fault_ipa(0x7000_0000);
    // Stage-2 translation fault, level 1, on a fetch from EL1.
    let mut frame = TrapFrame { esr: esr(ec::IABT_LOWER, 0b000101), far: 0x7000_0000, elr: 0x7000_0000, spsr: SPSR_EL1H, ..TrapFrame::default() };
    let next = trap(&g, 1, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Resume, "the vCPU goes on, to its vector");
    // EC 0x21 (instruction abort, same EL), IL, IFSC 0x10; FAR = the VA.
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x8600_0010, far: 0x7000_0000 }]);
    assert_eq!(g.state(), VmState::Running);
    assert_eq!(g.vcpus[1].exits[crate::vm::Exit::Abort as usize].load(Ordering::Relaxed), 1);
    // From EL0: EC 0x20.
    let mut el0 = TrapFrame { esr: esr(ec::IABT_LOWER, 0b000110), far: 0x7000_1000, elr: 0x7000_1000, spsr: 0, ..TrapFrame::default() };
    assert_eq!(trap(&g, 1, &mut el0, GuestException::Sync), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x8200_0010, far: 0x7000_1000 }]);
}

#[test]
fn a_stage_1_table_walk_into_a_hole_gets_the_walk_fault_status_with_the_stage_1_level() {
    let (_m, g) = guest_machine();
    g.set_state(VmState::Running);
    // The guest's L0 table at the base of its RAM: entry 0 points at an L1
    // table in the guest's RAM, whose entry 1 points at an L2 table at
    // 0x9000_0000, where the guest has nothing.
    let ram = crate::addr::Ipa::as_u64(g.ram[0].ipa);
    poke(&g, ram, &(ram + 0x1000 + 3).to_le_bytes());
    poke(&g, ram + 0x1008, &(0x9000_0000u64 + 3).to_le_bytes());
    fake::vcpu::set_loaded_stage1(crate::s1walk::Stage1Regs { ttbr0: ram, ttbr1: 0, tcr: 16 | (16 << 16) | (2 << 30) });
    let va = (1u64 << 30) + (5 << 21) + 0x40;
    fake::el2::set_fault_ipa(0x9000_0000);
    // A load whose walk faults at stage 2 (S1PTW, translation fault level 1);
    // HPFAR names the page of the L2 descriptor, FAR the VA.
    let s1ptw = 1 << 7;
    let mut frame = TrapFrame { esr: esr(ec::DABT_LOWER, s1ptw | 0b000101), far: va, elr: 0x4000_0100, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    // EC 0x25, DFSC 0b010110: external abort on translation table walk, level 2.
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x9600_0016, far: va }]);
    // The same walk for a fetch: IFSC 0b010110.
    let mut fetch = TrapFrame { esr: esr(ec::IABT_LOWER, s1ptw | 0b000101), far: va, elr: va, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut fetch, GuestException::Sync), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x8600_0016, far: va }]);
}

#[test]
fn a_table_walk_into_the_emulated_gic_is_not_emulated_as_an_access() {
    let (_m, g) = guest_machine();
    fake::el2::set_fault_ipa(guest::GICD_BASE + 4);
    // A walk's stage-2 fault with a syndrome that would otherwise read GICD_TYPER into x5.
    let mut frame = TrapFrame { esr: data_abort_esr(4, 5, false) | (1 << 7), far: 0x1234, elr: 0x4000_1000, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(frame.x[5], 0, "no register written");
    assert_eq!(frame.elr, 0x4000_1000, "no instruction stepped over");
    // The walk cannot be redone (no stage-1 registers): a plain external abort.
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x9600_0010, far: 0x1234 }]);
}

#[test]
fn a_vm_whose_owner_chose_to_stop_it_on_such_faults_is_stopped_and_reported() {
    let (_m, g) = guest_machine();
    g.set_state(VmState::Running);
    g.on_fault.store(hv_abi::hypercall::FaultPolicy::Stop as u8, Ordering::Relaxed);
    fake::el2::set_fault_ipa(0x7000_0000);
    let mut frame = TrapFrame { esr: esr(ec::IABT_LOWER, 0b000100), far: 0x7000_0000, elr: 0x7000_0000, spsr: SPSR_EL1H, ..TrapFrame::default() };
    let next = trap(&g, 1, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Leave, "the vCPU leaves its CPU");
    assert_eq!(g.state(), VmState::Stopped);
    let stop = *g.stop.lock();
    assert_eq!(stop.reason, StopReason::Crashed);
    assert_eq!(stop.address, 0x7000_0000);
    assert_eq!(g.vcpus[1].sched.load(Ordering::Acquire), sched::state::OFF);
    assert!(fake::take_events().iter().all(|e| !matches!(e, Event::InjectAbort { .. })));
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
fn a_physical_serror_becomes_a_virtual_serror_with_its_syndrome_not_a_synchronous_abort() {
    let (_m, g) = guest_machine();
    // ESR_EL2 of an SError: EC 0x2f, IL, AET = UEU (0b01 << 14), EA, DFSC 0x11.
    let esr = (0x2f << 26) | (1 << 25) | (1 << 14) | (1 << 9) | 0x11;
    let mut frame = TrapFrame { esr, far: 0x55, elr: 0x4000_0500, spsr: SPSR_EL1H, ..TrapFrame::default() };
    let before = frame;
    assert_eq!(trap(&g, 0, &mut frame, GuestException::SError), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectSError { syndrome: (1 << 14) | (1 << 9) | 0x11 }]);
    assert_eq!(frame, before, "asynchronous: the guest resumes where it was, and takes it when it unmasks SErrors");
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
    // CPU has switched away (not while the vCPU stays loaded: its own
    // timer fires then).
    assert_eq!(sched::soft_timer_of(&g, 0), None);
    sched::switch_out(sched::Out::Leave, |_| {});
    assert_eq!(sched::soft_timer_of(&g, 0), Some(deadline));
    fake::cpu::advance(1000);
    sched::on_timer();
    assert_eq!(g.vcpus[0].sched.load(Ordering::Acquire), sched::state::RUNNABLE, "woken at its timer");
    assert_eq!(sched::queued_on(g.vcpus[0].pcpu()).first().map(|r| r.vm), Some(g.id));
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

#[test]
fn a_guest_reading_its_private_pending_bits_sees_its_timer_line_as_it_is_now() {
    let (_m, g) = guest_machine();
    let ispendr0 = guest::GICR_BASE + 0x1_0200; // vCPU 0's SGI frame
    let read = |g: &alloc::sync::Arc<crate::vm::Vm>| {
        fake::el2::set_fault_ipa(ispendr0);
        let mut frame = TrapFrame { esr: data_abort_esr(4, 2, false), far: 0x200, elr: 0x4000_0100, spsr: SPSR_EL1H, ..TrapFrame::default() };
        assert_eq!(trap(g, 0, &mut frame, GuestException::Sync), Next::Resume);
        frame.x[2]
    };
    fake::timer::set_vtimer_line(true);
    assert_eq!(read(&g) & (1 << 27), 1 << 27, "enabled, condition met, not masked: pending");
    fake::timer::set_vtimer_line(false);
    assert_eq!(read(&g) & (1 << 27), 0, "disabled or masked: not pending");
}

#[test]
fn id_registers_show_only_what_the_hypervisor_supports() {
    let (_m, g) = guest_machine();
    // The CPU: EL0-EL2 with AArch32, SVE, AMU; ISAR1 with PAuth (APA 5, GPA 1) and LS64.
    fake::cpu::set_id_register(4, 0, 0x0000_1001_0011_2222);
    fake::cpu::set_id_register(6, 1, (5 << 4) | (1 << 24) | (1 << 60));
    // MRS x3, ID_AA64PFR0_EL1: Op0 3, Op1 0, CRn 0, CRm 4, Op2 0.
    let mrs = |crm: u64, op2: u64| (3 << 20) | (op2 << 17) | (crm << 1) | (3 << 5) | 1;
    let mut frame = TrapFrame { esr: esr(ec::SYSREG, mrs(4, 0)), elr: 0x4000_0400, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(frame.elr, 0x4000_0404);
    // EL0/EL1 AArch64 only, no EL2, EL3 AArch64, FP/AdvSIMD kept, GICv3
    // system registers, no SVE, no AMU.
    assert_eq!(frame.x[3], 0x0000_0000_0111_1011);
    let mut isar1 = TrapFrame { esr: esr(ec::SYSREG, mrs(6, 1)), elr: 0x4000_0500, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut isar1, GuestException::Sync), Next::Resume);
    assert_eq!(isar1.x[3], (5 << 4) | (1 << 24), "PAuth shown (keys switched), LS64 hidden");
    // ID_AA64ZFR0_EL1 (CRm 4, Op2 4) reads as zero; an MSR to an ID register is UNDEF.
    fake::cpu::set_id_register(4, 4, u64::MAX);
    let mut zfr0 = TrapFrame { esr: esr(ec::SYSREG, mrs(4, 4)), elr: 0x4000_0600, spsr: SPSR_EL1H, ..TrapFrame::default() };
    zfr0.x[3] = 0x55;
    assert_eq!(trap(&g, 0, &mut zfr0, GuestException::Sync), Next::Resume);
    assert_eq!(zfr0.x[3], 0);
    let mut msr = TrapFrame { esr: esr(ec::SYSREG, mrs(4, 0) & !1), elr: 0x4000_0700, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut msr, GuestException::Sync), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectUndefined { elr: 0x4000_0700 }]);
    fake::cpu::set_id_register(4, 0, 0);
    fake::cpu::set_id_register(6, 1, 0);
    fake::cpu::set_id_register(4, 4, 0);
}

/// The fast entry (`trap::guest_sync_fast`) runs with x19-x29 left out of
/// the frame: an exit that needs one of them, or may report the VM's
/// registers, is given back untouched for the full entry; the rest is
/// handled as the full entry would.
#[test]
fn the_fast_entry_leaves_exits_that_need_the_whole_frame_untouched() {
    use crate::trap::{guest_sync_fast, Fast};
    let (_m, g) = guest_machine();
    g.set_state(VmState::Running);
    fake::cpu::set_index(g.vcpus[0].pcpu());
    sched::make_current(g.clone(), 0);
    let reads = |f: &TrapFrame| f.x[5];
    // A GIC read into x5: handled here, as by the full entry.
    fake::el2::set_fault_ipa(guest::GICD_BASE + 4);
    let mut fast = TrapFrame { esr: data_abort_esr(4, 5, false), far: 0x4, elr: 0x4000_1000, ..TrapFrame::default() };
    assert_eq!(guest_sync_fast(&mut fast), Fast::Resume);
    assert_eq!((fast.elr, reads(&fast) & 0x1f), (0x4000_1004, 2), "stepped over, GICD_TYPER loaded");
    // The same read into x19..x29 (not in the fast frame): nothing done.
    for register in 19..=29 {
        let mut frame = TrapFrame { esr: data_abort_esr(4, register, false), far: 0x4, elr: 0x4000_1000, ..TrapFrame::default() };
        let before = frame.clone();
        assert_eq!(guest_sync_fast(&mut frame), Fast::Full, "x{register}");
        assert_eq!(frame, before, "x{register}: the frame is untouched");
    }
    // x30 and the zero register are in it.
    for register in [30, 31] {
        let mut frame = TrapFrame { esr: data_abort_esr(4, register, false), far: 0x4, elr: 0x4000_1000, ..TrapFrame::default() };
        assert_eq!(guest_sync_fast(&mut frame), Fast::Resume, "x{register}");
    }
    // A trapped MRS into x20: the full entry's.
    let mut sysreg = TrapFrame { esr: esr(ec::SYSREG, (3 << 20) | (20 << 5) | 1), elr: 0x4000_2000, ..TrapFrame::default() };
    let before = sysreg.clone();
    assert_eq!(guest_sync_fast(&mut sysreg), Fast::Full);
    assert_eq!(sysreg, before);
    // An access with nothing behind it (the crash policy may report the
    // registers): the full entry's, nothing injected yet.
    fake::el2::set_fault_ipa(0x7000_0000);
    let mut hole = TrapFrame { esr: data_abort_esr(8, 1, true), far: 0x7000_0000, elr: 0x4000_3000, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(guest_sync_fast(&mut hole), Fast::Full);
    assert!(fake::take_events().iter().all(|e| !matches!(e, Event::InjectAbort { .. })), "no abort injected by the fast entry");
    let mut fetch = TrapFrame { esr: esr(ec::IABT_LOWER, 0b000101), far: 0x7000_0000, elr: 0x7000_0000, spsr: SPSR_EL1H, ..TrapFrame::default() };
    assert_eq!(guest_sync_fast(&mut fetch), Fast::Full);
    // A hypercall is answered in place.
    let mut hvc = TrapFrame { esr: esr(ec::HVC64, 0), elr: 0x1000, ..TrapFrame::default() };
    hvc.x[0] = hv_abi::hypercall::Function::Version as u64;
    assert_eq!(guest_sync_fast(&mut hvc), Fast::Resume);
    assert_eq!(hvc.x[0], hv_abi::hypercall::version());
    // A WFI with nothing pending leaves the CPU: a switch, which needs the
    // whole frame, so the entry is told to complete it first.
    let mut wfi = TrapFrame { esr: esr(ec::WFX, 0), elr: 0x4000_4000, ..TrapFrame::default() };
    assert!(matches!(guest_sync_fast(&mut wfi), Fast::Finish(_)));
}

/// A parked vCPU's wake-up (`irq::handle_irqs_parked`: its virtual timer
/// first, straight into a list register) ends as the general way
/// (`handle_irqs`, the flush a kick asks for, then `has_work`) would: the
/// same list registers, vGIC state, machine events and answer to "has it
/// work", whatever else is pending with the timer and whatever state the
/// timer's interrupt is in.
#[test]
fn a_parked_vcpus_timer_wake_up_ends_as_the_general_way_would() {
    use crate::vgic::{AccessSize::Word, Effects, ListRegisters};
    type Setup = fn(&crate::vm::Vm);
    let enable_27 = |g: &crate::vm::Vm| {
        let mut fx = Effects::new();
        let mut vgic = g.vgic.lock();
        vgic.dist_write(0, 0, Word, 3, &mut fx).expect("GICD_CTLR");
        vgic.redist_write(0, 0x1_0100, Word, 1 << 27, &mut fx).expect("GICR_ISENABLER0");
        vgic.redist_write(0, 0x1_0400 + 24, Word, 0xa0 << 24, &mut fx).expect("GICR_IPRIORITYR6");
    };
    let scenarios: [(&str, &[u32], Setup); 10] = [
        ("timer alone", &[27], |_| {}),
        // Placed, but the guest's priority mask holds it back.
        ("timer masked", &[27], |_| fake::gic::set_vmcr(0x8000_0003)),
        ("timer, then an interrupt nobody owns", &[27, 77], |_| {}),
        ("an interrupt nobody owns, then the timer", &[77, 27], |_| {}),
        ("timer, then the kick", &[27, fake::gic::SGI_KICK], |_| {}),
        ("the kick alone", &[fake::gic::SGI_KICK], |_| {}),
        ("timer disabled by the guest", &[27], |g| {
            let mut fx = Effects::new();
            g.vgic.lock().redist_write(0, 0x1_0180, Word, 1 << 27, &mut fx).expect("GICR_ICENABLER0");
        }),
        ("groups off", &[27], |g| {
            let mut fx = Effects::new();
            g.vgic.lock().dist_write(0, 0, Word, 0, &mut fx).expect("GICD_CTLR");
        }),
        ("timer already in a list register", &[27], |g| {
            crate::interrupts::with_effects(g, |fx| g.vgic.lock().inject_hw(27, 0, fx)).expect("inject");
            crate::interrupts::flush_interrupts(g, &g.vcpus[0]);
        }),
        ("another interrupt queued", &[27], |g| {
            let mut fx = Effects::new();
            g.vgic.lock().redist_write(0, 0x1_0100, Word, 1 << 3, &mut fx).expect("GICR_ISENABLER0");
            crate::interrupts::with_effects(g, |fx| g.vgic.lock().pulse(3, 0, fx)).expect("SGI 3");
        }),
    ];
    let lrs = || -> Vec<u64> { (0..4).map(|i| fake::gic::HwListRegisters.read(i)).collect() };
    let views = |g: &crate::vm::Vm| -> Vec<_> { (0..96).map(|i| g.vgic.lock().irq_view(i, 0)).collect() };
    for (name, pending, setup) in scenarios {
        let (_m, g) = guest_machine();
        sched::make_current(g.clone(), 0);
        let vcpu = &g.vcpus[0];
        enable_27(&g);
        setup(&g);
        crate::interrupts::flush_interrupts(&g, vcpu);
        vcpu.sched.store(sched::state::BLOCKED, Ordering::Release);
        fake::take_events();
        let (vgic0, lrs0) = (g.vgic.lock().clone(), lrs());
        let mut runs = Vec::new();
        for parked in [false, true] {
            *g.vgic.lock() = vgic0.clone();
            (0..4).for_each(|i| fake::gic::HwListRegisters.write(i, lrs0[i]));
            vcpu.needs_flush.store(false, Ordering::Release);
            pending.iter().for_each(|&i| fake::gic::raise(i));
            // What `switch::idle_parked` does after its WFI.
            let mut signalled = false;
            if parked {
                signalled = crate::irq::handle_irqs_parked(&g, vcpu);
            } else {
                crate::irq::handle_irqs(Some((&g, vcpu)));
            }
            if vcpu.needs_flush.load(Ordering::Acquire) {
                crate::interrupts::flush_interrupts(&g, vcpu);
                signalled = false;
            }
            let has_work = g.vgic.lock().has_work(0);
            assert!(!signalled || has_work, "{name}: signalled, so it has work");
            assert_eq!(fake::gic::acknowledge(), fake::gic::SPURIOUS, "{name}: everything taken");
            runs.push((signalled || has_work, lrs(), views(&g), fake::take_events()));
            if parked && name == "timer alone" {
                assert!(signalled, "{name}: the direct way");
            }
        }
        assert_eq!(runs[0], runs[1], "{name}: the general way, then the parked one");
        if name == "timer alone" {
            assert!(runs[0].0, "{name}: the timer gives it work");
        }
    }
}

/// A VM with a vGIC of `version` (two vCPUs, 64 SPIs) and only its
/// distributor's window at the guest layout's address, not in the VM
/// table: enough for the data-abort path.
fn vm_with_distributor(version: crate::vgic::VgicVersion) -> alloc::sync::Arc<crate::vm::Vm> {
    use crate::vm::{EmulatedDevice, EmulatedRegion, Vcpu, Vm, VmId, VmKind, VmSpec};
    let vgic = crate::vgic::Vgic::new(version, 2, 64, |i| i as u64).expect("vGIC");
    alloc::sync::Arc::new(Vm::new(VmSpec {
        id: VmId(9),
        name: "gicd".into(),
        kind: VmKind::Guest,
        stage2: crate::stage2::Stage2Tables::new().expect("tables"),
        ram: alloc::vec::Vec::new(),
        regions: alloc::vec![EmulatedRegion { base: crate::addr::Ipa::new(guest::GICD_BASE), size: guest::GICD_SIZE, device: EmulatedDevice::GicDistributor }],
        hw_ppis: alloc::vec::Vec::new(),
        pv_time: None,
        vgic,
        vcpus: alloc::vec![Vcpu::new(0, 0, 0, 0), Vcpu::new(1, 1, 0, 0)],
        cntvoff: 0,
        weight: crate::schedpolicy::DEFAULT_WEIGHT,
        state: VmState::Running,
    }))
}

/// Every load from the distributor window (every byte offset, every access
/// size, each SSE/SF combination, on both GIC versions) through the fast
/// entry and through the full one gives what the locked register read
/// (`Vgic::dist_read`) and the syndrome's `load_value` say: the value in
/// the register and the load stepped over, or an abort and the register
/// untouched. The fast entry answers the fixed registers inline
/// (`emulate::data_abort`); this pins that it agrees with the general path.
#[test]
fn every_distributor_load_through_the_fast_path_matches_the_locked_read() {
    use crate::esr::{AccessSize, DataAbort};
    use crate::trap::{guest_sync_fast, Fast};
    let _m = Machine::take();
    const SENTINEL: u64 = 0x5eed_5eed_5eed_5eed;
    for version in [crate::vgic::VgicVersion::V2, crate::vgic::VgicVersion::V3] {
        let vm = vm_with_distributor(version);
        // Some state behind the registers that change: both groups and a
        // few SPIs enabled, their priorities set.
        {
            let mut effects = crate::vgic::Effects::new();
            let mut vgic = vm.vgic.lock();
            vgic.dist_write(0, 0, AccessSize::Word, 0b11, &mut effects).expect("CTLR");
            vgic.dist_write(0, 0x104, AccessSize::Word, 0x8000_0005, &mut effects).expect("ISENABLER1");
            vgic.dist_write(0, 0x420, AccessSize::Word, 0x80a0_c0f0, &mut effects).expect("IPRIORITYR8");
        }
        let mut fixed_answers = 0;
        for vcpu in 0..2 {
            fake::cpu::set_index(vm.vcpus[vcpu].pcpu());
            sched::make_current(vm.clone(), vcpu);
            for offset in 0..guest::GICD_SIZE {
                fake::el2::set_fault_ipa(guest::GICD_BASE + offset);
                for (bytes, size) in [(1, AccessSize::Byte), (2, AccessSize::Half), (4, AccessSize::Word), (8, AccessSize::Double)] {
                    for sse_sf in [0, 1 << 15, 1 << 21, (1 << 21) | (1 << 15)] {
                        let syndrome = data_abort_esr(bytes, 5, false) | sse_sf;
                        let expected = vm.vgic.lock().dist_read(vcpu, offset, size);
                        let start = TrapFrame { esr: syndrome, far: offset & 0xfff, elr: 0x4000_1000, spsr: SPSR_EL1H, x: [SENTINEL; 31], ..TrapFrame::default() };
                        let mut fast = start;
                        assert_eq!(guest_sync_fast(&mut fast), Fast::Resume, "{version:?} {offset:#x} {bytes}");
                        let fast_events = fake::take_events();
                        let mut full = start;
                        assert_eq!(crate::trap::dispatch(&vm, &vm.vcpus[vcpu], &mut full, GuestException::Sync), Next::Resume);
                        let full_events = fake::take_events();
                        // Formatted only for a failure's message.
                        let what = || format!("{version:?} vCPU {vcpu} offset {offset:#x} {bytes} bytes, SSE/SF {sse_sf:#x}: {expected:?}");
                        assert_eq!(fast, full, "{}: the fast and the full entry", what());
                        assert_eq!(fast_events, full_events, "{}", what());
                        match expected {
                            Ok(raw) => {
                                assert_eq!(fast.x[5], DataAbort::decode(syndrome).load_value(raw), "{}", what());
                                assert_eq!(fast.elr, 0x4000_1004, "{}: stepped over", what());
                                assert!(fast_events.is_empty(), "{}: {fast_events:?}", what());
                                if bytes == 4 && vm.gicd.fixed.word_read(offset).is_some() {
                                    fixed_answers += 1;
                                }
                            }
                            Err(_) => {
                                assert_eq!(fast.x[5], SENTINEL, "{}: the register is untouched", what());
                                assert!(matches!(fast_events[..], [Event::InjectAbort { .. }]), "{}: {fast_events:?}", what());
                            }
                        }
                    }
                }
            }
        }
        // TYPER, IIDR and 12 ID registers, 4 SSE/SF forms, 2 vCPUs.
        assert_eq!(fixed_answers, 14 * 4 * 2, "{version:?}: the fixed registers were read");
    }
}
