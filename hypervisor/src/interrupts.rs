//! Virtual interrupts on their way to vCPUs: carrying out what a vGIC
//! operation asks of the machine (`vgic::Effects`: the physical GIC, and
//! vCPUs that must look at their interrupts), refilling the running vCPU's
//! list registers, and WFI, which waits for an interrupt.

use core::sync::atomic::Ordering;

use crate::arch::gic::{self, HwListRegisters};
use crate::arch::cpu;
use crate::arch::timer::{self, VTIMER_PPI};
use crate::sched::{self, Next};
use crate::sync::Mutex;
use crate::vgic::{Effect, Effects};
use crate::vm::{Vcpu, Vm};

/// Samples the running vCPU's virtual-timer line into its vGIC, before the
/// guest reads its private pending bits: the bit is then the line as it is
/// now, and an instance whose line has dropped (the guest disabled or
/// masked the timer) is withdrawn from its list register at the end of
/// this trap. Writes to CNTV_CTL_EL0 do not trap, so an instance already in
/// a list register when the guest disables its timer and unmasks
/// interrupts without any trap in between is still taken. Sampling at
/// every flush or WFI as well was tried and cost a third of a 1 kHz tick's
/// interrupts on GICv2 under QEMU, for a reason not yet understood.
pub fn sample_vtimer_line(vm: &Vm, vcpu: &Vcpu) {
    let _ = with_effects(vm, |effects| vm.vgic.lock().set_hw_line(VTIMER_PPI, vcpu.index, timer::vtimer_line(), effects));
}

/// Applies what a vGIC operation asks of the physical GIC and the
/// other CPUs.
pub fn apply(vm: &Vm, effects: &Effects) {
    if effects.is_empty() {
        return;
    }
    let here = sched::current_vcpu_of(vm.id);
    // The physical GIC first, so it is set up before a kicked vCPU runs.
    for &effect in effects.phys() {
        match effect {
            Effect::Kick(_) => {} // kicks are in `kicks`
            Effect::PhysEnable { intid, enable } => gic::set_enabled(intid, enable),
            Effect::PhysPriority { intid, prio } => gic::set_priority(intid, prio),
            Effect::PhysConfig { intid, edge } => gic::set_edge(intid, edge),
            Effect::PhysTarget { intid, vcpu } => {
                if let Some(v) = vm.vcpus.get(vcpu) {
                    gic::route_spi(intid, v.pcpu())
                }
            }
            Effect::PhysActive { intid, set: false } if intid >= 32 || here.is_some() => {
                // An instance the hypervisor acknowledged that the guest
                // will not deactivate (it cleared it, or the timer's line
                // dropped first), or the guest deactivated it: deactivate
                // the physical interrupt, or it never fires again. A PPI
                // is this CPU's, which runs the vCPU.
                gic::deactivate(intid);
            }
            Effect::PhysPending { .. } | Effect::PhysActive { .. } => {
                // The VM asked to set or clear the pending state, or to
                // activate, a hardware interrupt: the device owns its
                // line, so the hypervisor leaves the physical state alone.
            }
        }
    }
    for v in effects.kicks() {
        match vm.vcpus.get(v) {
            // The vCPU loaded here looks at its interrupts before it runs on.
            Some(vcpu) if Some(v) == here => vcpu.needs_flush.store(true, Ordering::Release),
            Some(_) => kick(vm, v),
            None => {}
        }
    }
}

/// Makes vCPU `index` look at its pending interrupts: wakes it if it is
/// blocked, and interrupts its physical CPU if that is another one.
pub fn kick(vm: &Vm, index: usize) {
    let Some(v) = vm.vcpus.get(index) else { return };
    v.needs_flush.store(true, Ordering::Release);
    sched::wake(vm, index);
}

/// Each physical CPU's effects buffer, reused: an `Effects` is a kilobyte,
/// too much to build on every trap.
static EFFECTS: [Mutex<Effects>; cpu::MAX_CPUS] = [const { Mutex::new(Effects::new()) }; cpu::MAX_CPUS];

/// Runs `f` with this CPU's (cleared) effects buffer, then applies what it
/// collected to `vm`.
pub fn with_effects<R>(vm: &Vm, f: impl FnOnce(&mut Effects) -> R) -> R {
    let mut effects = EFFECTS[cpu::index()].lock();
    effects.clear();
    let result = f(&mut effects);
    apply(vm, &effects);
    result
}

/// Folds list-register state back into the vGIC and refills the list
/// registers from it (the vCPU must be loaded on this CPU).
pub fn flush_interrupts(vm: &Vm, vcpu: &Vcpu) {
    vcpu.needs_flush.store(false, Ordering::Relaxed);
    let mut lrs = HwListRegisters;
    // No LR in use (the vCPU was woken, its last interrupt done): its way
    // needs no read-back and no effects pass.
    if vm.vgic.lock().flush_unused(vcpu.index, &mut lrs) {
        return;
    }
    let result = with_effects(vm, |effects| {
        let mut vgic = vm.vgic.lock();
        vgic.sync(vcpu.index, &mut lrs, effects).and_then(|()| vgic.flush(vcpu.index, &mut lrs, effects))
    });
    if let Err(e) = result {
        log::error!("{}: vcpu{}: vGIC list register update failed: {e:?}", vm.name, vcpu.index);
    }
}

/// WFI: return at once if the vCPU has an interrupt to take, else block it
/// until it has one.
#[inline(never)]
pub fn wait_for_interrupt(vm: &Vm, vcpu: &Vcpu) -> Next {
    // Fold in what the vCPU did with its list registers (EOIs) before
    // asking whether anything is left for it.
    flush_interrupts(vm, vcpu);
    if vm.vgic.lock().has_work(vcpu.index) {
        return Next::Resume;
    }
    sched::block(vm, vcpu)
}

