//! Run-state of the whole machine: whether it is stopping, how it stops
//! (power off, reset, parked), and `hv.until_idle`, which ends the run once
//! every guest has stopped and dom0 has gone quiet.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hv_abi::hypercall::{StopReason, VmState};
use log::info;

use crate::arch::{cpu, gic, psci};
use crate::sched;
use crate::vm::{self, VmId};

/// `hv.until_idle`: power off once every guest has stopped.
static UNTIL_IDLE: AtomicBool = AtomicBool::new(false);

/// Sets `hv.until_idle` (boot).
pub fn set_until_idle(on: bool) {
    UNTIL_IDLE.store(on, Ordering::Relaxed);
}

/// A guest stopped: under `hv.until_idle`, once none is left the run ends
/// (see [`idle_stop_check`]), saying whether every guest ended with SYSTEM_OFF.
pub fn guest_stopped() {
    if !UNTIL_IDLE.load(Ordering::Relaxed) {
        return;
    }
    let guests: Vec<_> = vm::guest_ids().into_iter().filter_map(vm::get).collect();
    // A guest that reset itself is not done: dom0 restarts it.
    let done = |g: &vm::Vm| {
        g.state() == VmState::Stopped && g.stop.lock().reason != StopReason::SystemReset
    };
    if guests.is_empty() || !guests.iter().all(|g| done(g)) {
        return;
    }
    IDLE_STOP_DEADLINE.store(cpu::counter() + 2 * cpu::counter_frequency(), Ordering::Relaxed);
    IDLE_STOP.store(true, Ordering::Release);
}

/// Every guest has stopped under `hv.until_idle`: the run ends once dom0 is
/// quiet, so that it has printed what the guests said through the consoles
/// it emulates.
static IDLE_STOP: AtomicBool = AtomicBool::new(false);
/// When dom0 was first seen quiet (0: not quiet).
static QUIET_SINCE: AtomicU64 = AtomicU64::new(0);
/// ... or at this counter value, if dom0 never goes quiet.
static IDLE_STOP_DEADLINE: AtomicU64 = AtomicU64::new(0);

/// From each CPU's idle loop: ends the run if [`guest_stopped`] asked for
/// it and dom0 has been quiet (every vCPU waiting for an interrupt, no IO
/// request unread) for 50 ms, or after 2 s. Returns whether an end is still
/// pending (the caller then wakes up again soon to check).
#[inline]
pub fn idle_stop_check() -> bool {
    if !IDLE_STOP.load(Ordering::Acquire) {
        stall_check();
        return false;
    }
    idle_stop_pending()
}

/// The rest of [`idle_stop_check`] once an end was asked for.
#[inline(never)]
fn idle_stop_pending() -> bool {
    let quiet = vm::get(VmId(0)).is_none_or(|d| {
        d.vcpus.iter().all(|v| {
            let s = v.sched.load(Ordering::Acquire);
            s == sched::state::BLOCKED || s == sched::state::OFF
        })
    }) && !crate::ioreq::requests_pending();
    // Quiet for a while: dom0's IO handler may have run on another vCPU
    // than its shell, which prints the guests' output when its next poll
    // (every 20 ms) comes round.
    let now = cpu::counter();
    let since = if quiet {
        match QUIET_SINCE.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => now,
            Err(t) => t,
        }
    } else {
        QUIET_SINCE.store(0, Ordering::Release);
        now
    };
    let settled = quiet && now - since >= cpu::counter_frequency() / 20;
    if !settled && now < IDLE_STOP_DEADLINE.load(Ordering::Relaxed) {
        return true;
    }
    if IDLE_STOP.swap(false, Ordering::AcqRel) {
        finish_idle_stop();
    }
    false
}

/// When the guests were first seen quiet with some not stopped (0: not).
static STALL_SINCE: AtomicU64 = AtomicU64::new(0);
/// When an idle loop next looks at the guests (`stall_check`).
static STALL_NEXT_LOOK: AtomicU64 = AtomicU64::new(0);
/// The stall report was printed.
static STALL_SAID: AtomicBool = AtomicBool::new(false);
/// How long the guests may all be quiet, under `hv.until_idle`, before the
/// hypervisor says what each vCPU of a guest that has not stopped waits for.
const STALL_SECONDS: u64 = 10;

/// Under `hv.until_idle` (test runs, which end when every guest stops): if
/// no guest vCPU has run anywhere for `STALL_SECONDS` while some guest has
/// not stopped, says once what each of its vCPUs waits for, so that a run
/// that ends by its timeout tells why. From each CPU's idle loop.
#[inline]
fn stall_check() {
    if !UNTIL_IDLE.load(Ordering::Relaxed) || STALL_SAID.load(Ordering::Relaxed) {
        return;
    }
    let now = cpu::counter();
    // Looked at every 10 ms at most: an idle loop entered for every
    // interrupt (a parked vCPU's) pays only this.
    if now >= STALL_NEXT_LOOK.load(Ordering::Relaxed) {
        stall_look(now);
    }
}

/// [`stall_check`]'s look at the guests, at `now`.
#[inline(never)]
fn stall_look(now: u64) {
    STALL_NEXT_LOOK.store(now + cpu::counter_frequency() / 100, Ordering::Relaxed);
    let since = STALL_SINCE.load(Ordering::Relaxed);
    if since == 0 || !sched::guests_quiet_since(since, crate::machine::online_cpus()) {
        STALL_SINCE.store(now, Ordering::Relaxed);
        return;
    }
    if now.saturating_sub(since) < STALL_SECONDS * cpu::counter_frequency() {
        return;
    }
    let waiting: Vec<_> = vm::guest_ids().into_iter().filter_map(vm::get).filter(|g| g.state() != VmState::Stopped).collect();
    if waiting.is_empty() || STALL_SAID.swap(true, Ordering::AcqRel) {
        return;
    }
    info!("stall: forwarded accesses waiting in dom0's ring: {}", crate::ioreq::requests_pending());
    for c in 0..crate::machine::online_cpus() {
        let (loaded, queued) = sched::loaded_on(c);
        info!("stall: CPU {c}: loaded {loaded:?} (VM, vCPU, parked); {queued} queued");
    }
    // Dom0's vCPUs too: a guest waiting for dom0 is stalled by dom0.
    for g in vm::get(VmId(0)).iter().chain(&waiting) {
        for (i, v) in g.vcpus.iter().enumerate() {
            let state = match v.sched.load(Ordering::Acquire) {
                sched::state::OFF => "off",
                sched::state::RUNNABLE => "runnable",
                sched::state::RUNNING => "running",
                sched::state::BLOCKED => "in WFI",
                sched::state::IO_WAIT => "waiting for dom0",
                _ => "?",
            };
            let timer = sched::soft_timer_of(g, i).map(|d| (d.saturating_sub(now) * 1000 / cpu::counter_frequency().max(1)) as i64);
            info!(
                "stall: no guest ran for {STALL_SECONDS} s: VM {} '{}' ({:?}) vCPU {i} on CPU {}: {state}; forwarded access pending: {}; vGIC has work for it: {}; WFI wake-up in {} ms",
                g.id.0,
                g.name,
                g.state(),
                v.pcpu(),
                v.io.lock().pending.is_some(),
                g.vgic.lock().has_work(i),
                timer.map_or(String::from("(none)"), |ms| alloc::format!("{ms}")),
            );
        }
    }
}

fn finish_idle_stop() -> ! {
    let guests: Vec<_> = vm::guest_ids().into_iter().filter_map(vm::get).collect();
    let clean = guests.iter().all(|g| g.stop.lock().reason == StopReason::SystemOff);
    crate::console::wait_for_dom0_console(cpu::counter_frequency() / 2);
    stop_other_cpus();
    crate::console::flush_unread_guest_output();
    crate::console::force_uart();
    info!(
        "all {} guest(s) stopped ({}): nothing left to run (hv.until_idle): stopping",
        guests.len(),
        if clean { "all with SYSTEM_OFF" } else { "not all with SYSTEM_OFF" }
    );
    for g in &guests {
        let stop = *g.stop.lock();
        let ticks: u64 = g.vcpus.iter().map(|v| v.run_ticks.load(Ordering::Relaxed)).sum();
        let ms = ticks * 1000 / cpu::counter_frequency().max(1);
        crate::console::print_line(
            "INFO",
            format_args!(
                "*** guest {} (VM {}): {:?} (syndrome {:#x}, PC {:#x}), CPU time {} ms",
                g.name, g.id.0, stop.reason, stop.syndrome, stop.address, ms
            ),
        );
    }
    let hz = cpu::counter_frequency().max(1);
    let mut busy = String::new();
    for i in 0..crate::machine::online_cpus() {
        let _ = write!(busy, " cpu{i}={}", sched::busy_ticks(i) * 1000 / hz);
    }
    crate::console::print_line("INFO", format_args!("*** CPU busy time since the first guest ran (ms):{busy}; {} vCPU migration(s)", sched::migrations()));
    let stale = crate::ioreq::stale_completions();
    if stale > 0 {
        crate::console::print_line("INFO", format_args!("*** {stale} IO completion(s) from dom0 answered no waiting request: dropped"));
    }
    let (errors, warnings) = crate::console::problems_logged();
    crate::console::print_line("INFO", format_args!("*** hypervisor log: {errors} error(s), {warnings} warning(s)"));
    log::logger().flush();
    if clean {
        crate::console::print_line("INFO", format_args!("*** all guests ended with SYSTEM_OFF"));
    } else {
        crate::console::print_line("WARN", format_args!("*** some guests did not end with SYSTEM_OFF"));
    }
    stop_system()
}

/// Resets the machine through PSCI, or stops it if there is no PSCI.
pub fn reset() -> ! {
    log::logger().flush();
    if psci::available() {
        let _ = psci::system_reset();
    }
    stop_system()
}

/// Where every CPU waits once it has nothing to do.
pub fn idle() -> ! {
    loop {
        cpu::wait_for_event();
        if crate::machine::stopping() {
            cpu::park()
        }
    }
}

pub fn power_off() -> ! {
    log::logger().flush();
    stop_system()
}


/// Makes every other CPU stop running vCPUs and park (they are kicked out
/// of whatever VM they run), so the calling CPU has the console to itself.
pub fn stop_other_cpus() {
    crate::machine::set_stopping();
    cpu::send_event();
    let me = cpu::index();
    for other in (0..crate::machine::online_cpus()).filter(|&c| c != me) {
        gic::send_sgi(gic::SGI_KICK, other);
    }
    let until = cpu::counter() + cpu::counter_frequency() / 50;
    while cpu::counter() < until {
        core::hint::spin_loop();
    }
}

/// Stops all CPUs and ends the machine: PSCI `SYSTEM_OFF` if available,
/// otherwise this CPU parks too.
pub fn stop_system() -> ! {
    crate::machine::set_stopping();
    cpu::send_event();
    // Give other CPUs a moment to notice before the power goes.
    let until = cpu::counter() + cpu::counter_frequency() / 100;
    while cpu::counter() < until {
        core::hint::spin_loop();
    }
    if psci::available() {
        let _ = writeln!(crate::console::panic_console(), "*** system stopped: powering off");
        let _ = psci::system_off();
    }
    let _ = writeln!(crate::console::panic_console(), "*** system stopped: no PSCI, parking all CPUs");
    cpu::park()
}

