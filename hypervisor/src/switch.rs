//! Switching vCPUs on a physical CPU: what the CPU does at the end of a
//! trap (back to the vCPU, or save it and enter another), and its loop
//! when nothing is runnable (wait for an interrupt, handle it, look again).
//! The decisions are the scheduler's (`sched`); this module carries them
//! out.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::timer;
use crate::arch::{cpu, el2, gic, vcpu as arch_vcpu, TrapFrame};
use crate::interrupts;
use crate::sched::{self, Next};
use crate::vm::{Vcpu, Vm};

/// Top of each CPU's EL2 stack (where trap frames go).
static STACK_TOP: [AtomicUsize; cpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; cpu::MAX_CPUS];

/// Records where CPU `pcpu`'s EL2 stack ends (boot).
pub fn set_stack_top(pcpu: usize, top: usize) {
    STACK_TOP[pcpu].store(top, Ordering::Relaxed);
}

/// At the end of every trap, what its handler decided: back to the vCPU
/// (with its list registers refilled if the vGIC has news for it), or to
/// another one.
#[inline(always)]
pub fn finish_trap(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame, next: Next) {
    match next {
        Next::Resume => {
            if !prepare_resume(vm, vcpu) {
                schedule(frame, sched::Out::Preempt)
            }
        }
        Next::Yield => schedule(frame, sched::Out::Yield),
        Next::Leave => {
            if vcpu.sched.load(Ordering::Acquire) == sched::state::BLOCKED && sched::park(vm, vcpu) {
                idle_parked(vm, vcpu, frame);
            } else {
                schedule(frame, sched::Out::Leave)
            }
        }
    }
}

/// The CPU's idle loop while `vcpu` is parked on it (`sched::park`):
/// interrupts are taken with the vCPU as the loaded one, so its own (the
/// virtual timer, an SGI or SPI injected here or by another CPU) land in
/// its list registers. Returns when it may run again in place (the caller
/// returns to it); switches it out if something else is to run.
fn idle_parked(vm: &Vm, vcpu: &Vcpu, frame: &TrapFrame) {
    loop {
        if crate::runstate::idle_stop_check() {
            timer::set_hyp_deadline(Some(cpu::counter() + cpu::counter_frequency() / 1000));
        }
        cpu::wait_for_interrupt();
        let mut signalled = crate::irq::handle_irqs_parked(vm, vcpu);
        // An interrupt injected from this CPU only marks the vCPU (it is
        // the current one here): look whether it can take it now.
        if vcpu.needs_flush.load(Ordering::Acquire) {
            interrupts::flush_interrupts(vm, vcpu);
            signalled = false; // the flush may have changed the LRs: ask
        }
        // (Woken already if another CPU made it pending; a PPI may have
        // gone straight into a list register, without a flush, and if it
        // was its virtual timer, the vGIC said then whether it signals.)
        let has_work = vcpu.sched.load(Ordering::Acquire) == sched::state::BLOCKED && (signalled || vm.vgic.lock().has_work(vcpu.index));
        match sched::parked_next(vm, vcpu, has_work) {
            sched::Parked::Wait => {}
            sched::Parked::Resume => {
                if vcpu.needs_flush.load(Ordering::Acquire) {
                    interrupts::flush_interrupts(vm, vcpu);
                }
                return;
            }
            sched::Parked::SwitchOut => schedule(frame, sched::Out::Leave),
        }
    }
}

/// Readies `vcpu` to go on after a trap: its list registers refilled if
/// the vGIC has news for it. False if it must not go on now: the
/// scheduler asked for the CPU, or the VM may not run any more (paused,
/// stopped, destroyed). Cheap when nothing is due.
#[inline(always)]
pub fn prepare_resume(vm: &Vm, vcpu: &Vcpu) -> bool {
    if vcpu.needs_flush.load(Ordering::Acquire) {
        interrupts::flush_interrupts(vm, vcpu);
    }
    !sched::resched_requested() && vm.runnable()
}


/// Saves the running vCPU (whose registers are `frame`) and runs the next
/// one, or idles. `out`: whether and where the current vCPU goes back to
/// the run queue.
pub fn schedule(frame: &TrapFrame, out: sched::Out) -> ! {
    sched::switch_out(out, |vcpu| save(vcpu, frame));
    run_next()
}

/// Picks the next runnable vCPU of this CPU and enters it; idles (WFI at
/// EL2, handling interrupts) while there is none.
pub fn run_next() -> ! {
    loop {
        if crate::machine::stopping() {
            cpu::park()
        }
        if let Some((vm, vcpu)) = sched::switch_in_next() {
            enter(vm, vcpu)
        }
        if crate::runstate::idle_stop_check() {
            // The run ends once dom0 is quiet: look again in a millisecond.
            timer::set_hyp_deadline(Some(cpu::counter() + cpu::counter_frequency() / 1000));
        }
        cpu::wait_for_interrupt();
        crate::irq::handle_irqs_idle();
    }
}

/// Saves the running vCPU's state: its registers and the architectural
/// rest (EL1 state, its share of the GIC CPU interface).
fn save(vcpu: &Vcpu, frame: &TrapFrame) {
    // SAFETY: the vCPU was running on this CPU until now.
    let ctx = unsafe { vcpu.context_mut() };
    ctx.regs = *frame;
    ctx.arch.save();
}

/// Loads `vcpu`'s state and enters it.
fn enter(vm: &'static Vm, vcpu: &'static Vcpu) -> ! {
    el2::configure_vm_traps();
    el2::set_stage2(vm.vmid, vm.stage2_root, vm.vtcr);
    for &ppi in &vm.hw_ppis {
        gic::set_enabled(ppi, true);
    }
    // SAFETY: this is the vCPU's CPU and it is not running yet.
    let ctx = unsafe { vcpu.context_mut() };
    ctx.arch.load();
    crate::ioreq::finish(vcpu, &mut ctx.regs);
    // The list registers are as the vCPU left them; the vGIC only needs a
    // look if something was injected meanwhile.
    if vcpu.needs_flush.load(Ordering::Acquire) {
        interrupts::flush_interrupts(vm, vcpu);
    }
    arch_vcpu::enter(&ctx.regs, STACK_TOP[cpu::index()].load(Ordering::Relaxed))
}
