//! The EL1 virtual timer (CNTV_*): uptime from the virtual counter, and
//! `sleep` that waits in WFI for the timer interrupt instead of polling.

use core::sync::atomic::{AtomicU64, Ordering};

use aarch64_cpu::registers::{Writeable, CNTV_CTL_EL0, CNTV_CVAL_EL0};

use super::{cpu, gic};
use crate::command;

static START: AtomicU64 = AtomicU64::new(0);
static INTID: AtomicU64 = AtomicU64::new(0);

/// Records the start time and hooks the virtual timer's PPI.
pub fn init(virt_timer: hv_devtree::platform::Irq) -> Result<(), &'static str> {
    START.store(cpu::counter(), Ordering::Relaxed);
    INTID.store(u64::from(virt_timer.intid), Ordering::Relaxed);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR);
    gic::enable(virt_timer.intid, virt_timer.level_triggered, on_interrupt)
}

pub fn intid() -> u64 {
    INTID.load(Ordering::Relaxed)
}

/// Counter ticks since `init`.
pub fn uptime_ticks() -> u64 {
    cpu::counter().wrapping_sub(START.load(Ordering::Relaxed))
}

/// Sleeps `micros` microseconds: programs the compare value and waits for
/// the interrupt (other interrupts, e.g. typed characters, only wake the CPU
/// to check the deadline).
pub fn sleep_micros(micros: u64) {
    wait_micros(micros, || false);
}

/// Waits in WFI until `done()` or `micros` microseconds have passed;
/// returns whether `done()` became true. `done` is checked with IRQs masked
/// (see `cpu::wait_until`).
pub fn wait_micros(micros: u64, done: impl FnMut() -> bool) -> bool {
    wait_until(
        cpu::counter().saturating_add(command::micros_to_ticks(micros, cpu::counter_frequency())),
        done,
    )
}

/// Waits in WFI until `done()` or the counter reaches `deadline`; returns
/// whether `done()` became true (as `wait_micros`).
pub fn wait_until(deadline: u64, mut done: impl FnMut() -> bool) -> bool {
    CNTV_CVAL_EL0.set(deadline);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
    let mut finished = false;
    cpu::wait_until(|| {
        finished = done();
        finished || cpu::counter() >= deadline
    });
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR);
    finished
}

/// The timer fired: mask it (the line is level-triggered) until the next `sleep`.
fn on_interrupt() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::SET);
}
