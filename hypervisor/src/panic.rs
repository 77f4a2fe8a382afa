//! Fatal errors: report, stop every other CPU, then power off through PSCI
//! where it exists (so automated runs end) or park.

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::aarch64::{cpu, psci};

/// Set when the system is stopping; idle CPUs check it after every event.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// Makes every other CPU stop running vCPUs and park (they are kicked out
/// of whatever VM they run), so the calling CPU has the console to itself.
pub fn stop_other_cpus() {
    STOPPING.store(true, Ordering::Release);
    cpu::send_event();
    let me = cpu::index();
    for other in (0..crate::boot::online_cpus()).filter(|&c| c != me) {
        crate::arch::aarch64::gic::send_sgi(crate::arch::aarch64::gic::SGI_KICK, other);
    }
    let until = cpu::counter() + cpu::counter_frequency() / 50;
    while cpu::counter() < until {
        core::hint::spin_loop();
    }
}

/// Stops all CPUs and ends the machine: PSCI `SYSTEM_OFF` if available,
/// otherwise this CPU parks too.
pub fn stop_system() -> ! {
    STOPPING.store(true, Ordering::Release);
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

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut out = crate::console::panic_console();
    let _ = write!(out, "\n*** hypervisor panic on cpu{}", cpu::index());
    if let Some(location) = info.location() {
        let _ = write!(out, " at {}:{}:{}", location.file(), location.line(), location.column());
    }
    let _ = writeln!(out, ": {}", info.message());
    stop_system()
}
