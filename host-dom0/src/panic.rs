//! Fatal errors: report on the console, then power off through PSCI (so
//! automated runs end) or park.

use core::fmt::Write;
use core::panic::PanicInfo;

use crate::arch::aarch64::{cpu, psci};

/// Ends the machine: PSCI `SYSTEM_OFF` if available, otherwise this CPU parks.
pub fn stop_system() -> ! {
    let mut out = crate::console::panic_console();
    if psci::available() {
        let _ = writeln!(out, "[dom0] *** powering off");
        crate::console::flush();
        let _ = psci::system_off();
    }
    let _ = writeln!(out, "[dom0] *** no PSCI: parking this CPU");
    cpu::park()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut out = crate::console::panic_console();
    let _ = write!(out, "\n[dom0] *** panic on cpu{}", cpu::index());
    if let Some(location) = info.location() {
        let _ = write!(
            out,
            " at {}:{}:{}",
            location.file(),
            location.line(),
            location.column()
        );
    }
    let _ = writeln!(out, ": {}", info.message());
    stop_system()
}
