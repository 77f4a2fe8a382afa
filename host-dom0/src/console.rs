//! The console: formatted output on the UART under a lock, `log` records
//! with a `[dom0]` prefix, and interrupt-driven input into a byte ring.

use core::fmt::{self, Write};

use spin::{Mutex, Once};

use crate::arch::aarch64::{cpu, gic};
use crate::drivers::uart::Uart;
use crate::ring::ByteRing;
use hv_devtree::platform::Uart as UartDesc;

static UART: Once<Uart> = Once::new();
static TX: Mutex<()> = Mutex::new(());
static RX: ByteRing<256> = ByteRing::new();
/// Whether received bytes arrive by interrupt (else the shell polls).
static RX_IRQ: Once<bool> = Once::new();

/// Takes the console UART into use.
pub fn init(desc: &UartDesc) {
    // SAFETY: the device tree's console, mapped Device by the identity map;
    // dom0 owns it (the hypervisor hands dom0 the real console).
    UART.call_once(|| unsafe { Uart::new(desc.kind, desc.base.as_u64() as usize) });
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Enables the receive interrupt, if the tree gives the console one.
pub fn enable_rx_interrupt(desc: &UartDesc) -> Result<(), &'static str> {
    let uart = UART.get().ok_or("no console")?;
    let Some(irq) = desc.irq else {
        RX_IRQ.call_once(|| false);
        return Err("the console has no interrupt in the device tree: polling");
    };
    gic::enable(irq.intid, irq.level_triggered, on_rx_interrupt)?;
    uart.enable_rx_interrupt();
    RX_IRQ.call_once(|| true);
    Ok(())
}

fn on_rx_interrupt() {
    if let Some(uart) = UART.get() {
        uart.drain_rx(|b| {
            RX.push(b);
        });
    }
}

/// The next byte typed, if one is waiting (never waits).
pub fn try_read_byte() -> Option<u8> {
    poll_uart();
    RX.pop()
}

/// Whether a typed byte is waiting. Checked by the event loop before it
/// waits in WFI, with IRQs masked: a byte that arrives later raises the
/// receive interrupt, which wakes the CPU.
pub fn input_waiting() -> bool {
    poll_uart();
    !RX.is_empty()
}

/// Without a receive interrupt, moves what the UART holds into the ring
/// (the event loop's tick then bounds how long a typed byte waits).
fn poll_uart() {
    if RX_IRQ.get() == Some(&true) {
        return;
    }
    if let Some(uart) = UART.get() {
        while let Some(b) = uart.read_byte() {
            if !RX.push(b) {
                break;
            }
        }
    }
}

/// Bytes dropped because the shell fell behind.
pub fn rx_dropped() -> usize {
    RX.dropped()
}

struct Writer<'a>(&'a Uart);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.write_byte(b'\r');
            }
            self.0.write_byte(b);
        }
        Ok(())
    }
}

/// Writes formatted text (`\n` becomes CR LF) under the console lock.
/// Never call from an interrupt handler: the interrupted code may hold the lock.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(uart) = UART.get() {
        let _guard = TX.lock();
        let _ = Writer(uart).write_fmt(args);
    }
}

/// Raw bytes, no newline conversion (terminal control sequences).
pub fn write_bytes(bytes: &[u8]) {
    if let Some(uart) = UART.get() {
        let _guard = TX.lock();
        bytes.iter().for_each(|&b| uart.write_byte(b));
    }
}

/// A lock-free writer for crash reports (the lock holder may be the crashed code).
pub fn panic_console() -> impl Write {
    struct Panic;
    impl Write for Panic {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            match UART.get() {
                Some(u) => Writer(u).write_str(s),
                None => Ok(()),
            }
        }
    }
    Panic
}

pub fn flush() {
    if let Some(u) = UART.get() {
        u.flush();
    }
}

/// `print!` to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::write_fmt(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let cpu = cpu::index();
        match record.level() {
            log::Level::Info => write_fmt(format_args!("[dom0] {}\n", record.args())),
            level => write_fmt(format_args!("[dom0] cpu{cpu} {level}: {}\n", record.args())),
        }
    }

    fn flush(&self) {}
}
