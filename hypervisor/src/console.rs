//! The hypervisor's console: the UART named by `/chosen/stdout-path`, shared
//! by all CPUs. Every line is written under one lock, so lines from
//! different CPUs never interleave, and carries a timestamp and the CPU.
//!
//! Every line also goes to the log ring. Once dom0 owns the UART
//! (`hand_over_uart`), lines go only to the ring, which dom0 reads with the
//! `LogRead` hypercall; the UART is then written directly only by a crash
//! report.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use crate::sync::Mutex;

use crate::arch::cpu;
use crate::drivers::uart::Uart;
use crate::logring::{LogRing, ReadResult};

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);
static PANICKING: AtomicBool = AtomicBool::new(false);
/// Dom0 owns the UART: log lines go to the ring only.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);
static RING: Mutex<LogRing<RING_SIZE>> = Mutex::new(LogRing::new());
const RING_SIZE: usize = 64 * 1024;
/// Lines logged at `error` (a hypervisor bug) and `warn` since boot.
static ERRORS: AtomicU64 = AtomicU64::new(0);
static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// `(errors, warnings)` logged since boot: the end-of-run summary says
/// them, so a test sees an error even when its line left the ring unread.
pub fn problems_logged() -> (u64, u64) {
    (ERRORS.load(Ordering::Relaxed), WARNINGS.load(Ordering::Relaxed))
}

/// From now on, log lines go only to the ring: dom0 drives the UART.
pub fn hand_over_uart() {
    log::logger().flush();
    HANDED_OVER.store(true, Ordering::SeqCst);
}

/// Guests' console output, whole lines prefixed with the VM's name, read by
/// dom0 with `ConsoleRead`.
static GUEST_RING: Mutex<LogRing<RING_SIZE>> = Mutex::new(LogRing::new());

/// Appends a guest's console line.
pub fn guest_line(vm: &str, line: &[u8]) {
    let mut ring = GUEST_RING.lock();
    ring.push(vm.as_bytes());
    ring.push(b": ");
    ring.push(line);
    ring.push(b"\n");
}

/// How far dom0 has read the guests' console ring.
static GUEST_READ: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Reads the guests' console ring from `cursor` (`ConsoleRead`).
pub fn read_guest_console(cursor: u64, out: &mut [u8]) -> ReadResult {
    let r = GUEST_RING.lock().read(cursor, out);
    GUEST_READ.fetch_max(r.next, Ordering::Relaxed);
    r
}

/// Waits (at most `timeout_ticks`) until dom0 has read all guest console
/// output, then a little longer so it can print what it read.
pub fn wait_for_dom0_console(timeout_ticks: u64) {

    let start = cpu::counter();
    while GUEST_READ.load(Ordering::Relaxed) < GUEST_RING.lock().written() && cpu::counter() - start < timeout_ticks {
        core::hint::spin_loop();
    }
    let settle = cpu::counter();
    while cpu::counter() - settle < cpu::counter_frequency() / 20 {
        core::hint::spin_loop();
    }
}

/// The run is ending: guest console output dom0 has not printed yet goes
/// straight to the UART, so nothing a guest said is lost.
pub fn flush_unread_guest_output() {
    let ring = GUEST_RING.lock();
    let mut console = CONSOLE.lock();
    let Some(uart) = console.as_mut() else { return };
    let mut cursor = GUEST_READ.load(Ordering::Relaxed);
    let mut chunk = [0u8; 256];
    // Dom0 may have been stopped mid-line.
    let _ = uart.write_str("\n");
    loop {
        let r = ring.read(cursor, &mut chunk);
        if r.copied == 0 {
            break;
        }
        for &b in &chunk[..r.copied] {
            if b == b'\n' {
                uart.write_byte(b'\r');
            }
            uart.write_byte(b);
        }
        cursor = r.next;
    }
}

/// The run is ending: the last lines go to the UART again.
pub fn force_uart() {
    HANDED_OVER.store(false, Ordering::SeqCst);
}

/// Reads the log ring from `cursor` (the `LogRead` hypercall).
pub fn read_log(cursor: u64, out: &mut [u8]) -> ReadResult {
    RING.lock().read(cursor, out)
}

/// Writes to the ring and, until dom0 owns it, the UART.
struct Tee<'a> {
    uart: Option<&'a mut Uart>,
    ring: &'a mut LogRing<RING_SIZE>,
}

impl Write for Tee<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.ring.push(s.as_bytes());
        if let Some(uart) = self.uart.as_mut() {
            uart.write_str(s)?;
        }
        Ok(())
    }
}

/// Installs the console UART; output before this is dropped.
pub fn init(uart: Uart) {
    *CONSOLE.lock() = Some(uart);
}

/// Writes `args` as one unit, prefixed like a log line.
pub fn print_line(level: &str, args: fmt::Arguments<'_>) {
    let mut console = CONSOLE.lock();
    let mut ring = RING.lock();
    let uart = if HANDED_OVER.load(Ordering::Relaxed) { None } else { console.as_mut() };
    let mut out = Tee { uart, ring: &mut ring };
    let _ = write_prefix(&mut out, level);
    let _ = out.write_fmt(args);
    let _ = out.write_str("\n");
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
            match record.level() {
                Level::Error => ERRORS.fetch_add(1, Ordering::Relaxed),
                Level::Warn => WARNINGS.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
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
