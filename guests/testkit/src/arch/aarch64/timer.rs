//! The EL1 virtual timer (CNTV_*) as a periodic tick on the current vCPU,
//! counted per vCPU. The next deadline is the previous one plus the period,
//! so a late interrupt does not lose ticks.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::cpu::{self, MAX_CPUS};
use super::gic;

static INTID: AtomicU32 = AtomicU32::new(27);
static PERIOD: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DEADLINE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// The virtual timer's INTID (from the device tree).
pub fn set_intid(intid: u32) {
    INTID.store(intid, Ordering::SeqCst);
}

pub fn intid() -> u32 {
    INTID.load(Ordering::SeqCst)
}

/// Sets CNTV_CVAL_EL0 and CNTV_CTL_EL0 (ENABLE bit 0, IMASK bit 1) as
/// given, with no handler bookkeeping: for checks of the timer's
/// interrupt state itself.
pub fn program(cval: u64, ctl: u64) {
    set_cval(cval);
    set_ctl(ctl);
}

/// CNTV_CTL_EL0 (ISTATUS is bit 2).
pub fn ctl() -> u64 {
    let v: u64;
    // SAFETY: reading this vCPU's timer control has no side effects.
    unsafe { asm!("mrs {}, cntv_ctl_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Counts this vCPU's timer interrupts without reprogramming the timer.
pub fn count_only() {
    TICKS[cpu::index()].store(0, Ordering::SeqCst);
    gic::set_handler(intid(), |_| {
        TICKS[cpu::index()].fetch_add(1, Ordering::SeqCst);
        set_ctl(0b10); // taken: masked, so a level line does not fire again
    });
}

fn set_cval(value: u64) {
    // SAFETY: programs this vCPU's virtual timer compare value only.
    unsafe { asm!("msr cntv_cval_el0, {}", "isb", in(reg) value, options(nomem, nostack)) };
}

fn set_ctl(value: u64) {
    // SAFETY: enables/disables/masks this vCPU's virtual timer only.
    unsafe { asm!("msr cntv_ctl_el0, {}", "isb", in(reg) value, options(nomem, nostack)) };
}

/// Starts a `hz` tick on this vCPU and zeroes its count. IRQs must be
/// unmasked by the caller for ticks to be taken.
pub fn start_periodic(hz: u64) {
    let me = cpu::index();
    let period = (cpu::counter_hz() / hz.max(1)).max(1);
    PERIOD[me].store(period, Ordering::SeqCst);
    TICKS[me].store(0, Ordering::SeqCst);
    let first = cpu::counter() + period;
    DEADLINE[me].store(first, Ordering::SeqCst);
    gic::set_handler(intid(), on_tick);
    gic::enable(intid());
    set_cval(first);
    set_ctl(1); // ENABLE, not masked
}

/// Stops this vCPU's tick; returns its count.
pub fn stop() -> u64 {
    set_ctl(0b10); // IMASK, disabled
    TICKS[cpu::index()].load(Ordering::SeqCst)
}

pub fn ticks() -> u64 {
    TICKS[cpu::index()].load(Ordering::SeqCst)
}

fn on_tick(_intid: u32) {
    let me = cpu::index();
    TICKS[me].fetch_add(1, Ordering::SeqCst);
    let next = DEADLINE[me].load(Ordering::Relaxed) + PERIOD[me].load(Ordering::Relaxed);
    DEADLINE[me].store(next, Ordering::Relaxed);
    set_cval(next);
}
