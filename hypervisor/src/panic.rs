//! The panic handler: report where, then stop the machine (`runstate`).

use core::fmt::Write;
use core::panic::PanicInfo;

use crate::arch::cpu;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let mut out = crate::console::panic_console();
    let _ = write!(out, "\n*** hypervisor panic on cpu{}", cpu::index());
    if let Some(location) = info.location() {
        let _ = write!(out, " at {}:{}:{}", location.file(), location.line(), location.column());
    }
    let _ = writeln!(out, ": {}", info.message());
    crate::runstate::stop_system()
}
