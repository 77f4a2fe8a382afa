//! The hypervisor's console: the UART named by `/chosen/stdout-path`, shared
//! by all CPUs. Every line is written under one lock, so lines from
//! different CPUs never interleave, and carries a timestamp and the CPU.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use log::{LevelFilter, Log, Metadata, Record};
use spin::Mutex;

use crate::arch::aarch64::cpu;
use crate::drivers::uart::Uart;

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);
static PANICKING: AtomicBool = AtomicBool::new(false);

/// Installs the console UART; output before this is dropped.
pub fn init(uart: Uart) {
    *CONSOLE.lock() = Some(uart);
}

/// Writes `args` as one unit, prefixed like a log line.
pub fn print_line(level: &str, args: fmt::Arguments<'_>) {
    let mut guard = CONSOLE.lock();
    if let Some(uart) = guard.as_mut() {
        let _ = write_prefix(uart, level);
        let _ = uart.write_fmt(args);
        let _ = uart.write_str("\n");
    }
}

fn write_prefix(out: &mut impl Write, level: &str) -> fmt::Result {
    let freq = cpu::counter_frequency().max(1);
    let now = cpu::counter();
    let micros = (now % freq) * 1_000_000 / freq;
    write!(out, "[{:5}.{:06}] cpu{} {:<5} ", now / freq, micros, cpu::index(), level)
}

/// Gives the panicking CPU the console even if another CPU (or this one,
/// mid-line) holds it: waits briefly, then takes it.
pub fn panic_console() -> impl Write {
    PANICKING.store(true, Ordering::SeqCst);
    for _ in 0..1_000_000 {
        if !CONSOLE.is_locked() {
            break;
        }
        core::hint::spin_loop();
    }
    if CONSOLE.is_locked() {
        // SAFETY: the system is going down; the holder is either this CPU
        // (panicked mid-line) or a CPU that will be stopped. A garbled line
        // is better than a silent hang.
        unsafe { CONSOLE.force_unlock() };
    }
    PanicWriter
}

struct PanicWriter;

impl Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(uart) = CONSOLE.lock().as_mut() {
            uart.write_str(s)?;
        }
        Ok(())
    }
}

struct Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) && !PANICKING.load(Ordering::Relaxed) {
            print_line(record.level().as_str(), *record.args());
        }
    }

    fn flush(&self) {
        if let Some(uart) = CONSOLE.lock().as_mut() {
            uart.flush();
        }
    }
}

static LOGGER: Logger = Logger;

/// Routes the `log` crate to the console at `level`.
pub fn init_logging(level: LevelFilter) {
    // Only fails if called twice, which the boot path never does.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
