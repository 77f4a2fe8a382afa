//! The boot story every guest shares, and the reporting it ends with:
//! console → heap → device tree → GIC → timer → the guest's `main` →
//! `GUEST <name>: DONE …` → PSCI SYSTEM_OFF.

use core::fmt::{self, Write};
use core::panic::PanicInfo;

use buddy_system_allocator::LockedHeap;
use hv_abi::hypercall::guest;
use hv_devtree::platform::{Platform, UartKind};

use crate::arch::{cpu, gic, psci, timer, uart};
use crate::cmdline::Cmdline;
use crate::report::{self, Tally};

/// What a guest's `main` gets.
pub struct Env {
    /// The guest's name, as in its TEST lines.
    pub name: &'static str,
    /// Where the device tree was (x0 at entry).
    pub dtb: u64,
    /// The device tree blob as the loader left it.
    pub blob: &'static [u8],
    pub platform: Platform,
}

impl Env {
    pub fn cmdline(&self) -> Cmdline<'_> {
        Cmdline::new(&self.platform.bootargs)
    }
}

const HEAP_SIZE: usize = 1 << 20;
/// Largest device tree accepted (QEMU's is 1 MiB, mostly free space).
const MAX_DTB: usize = 2 << 20;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

#[repr(C, align(4096))]
struct HeapRegion(core::cell::UnsafeCell<[u8; HEAP_SIZE]>);
// SAFETY: handed to the allocator once in `run` and reached only through it.
unsafe impl Sync for HeapRegion {}
static HEAP_REGION: HeapRegion = HeapRegion(core::cell::UnsafeCell::new([0; HEAP_SIZE]));

static NAME: spin::Once<&'static str> = spin::Once::new();
static ENV: spin::Once<Env> = spin::Once::new();
static TALLY: Tally = Tally::new();
static CONSOLE: spin::Mutex<()> = spin::Mutex::new(());

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        uart::put_str(s);
        Ok(())
    }
}

/// Writes to the console under its lock (never from interrupt handlers).
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = lock_console();
    let _ = Uart.write_fmt(args);
}

/// The console lock, or none after a long wait (a vCPU that died holding it
/// must not silence the report).
fn lock_console() -> Option<spin::MutexGuard<'static, ()>> {
    for _ in 0..10_000_000 {
        if let Some(g) = CONSOLE.try_lock() {
            return Some(g);
        }
        core::hint::spin_loop();
    }
    None
}

/// The guest's name.
pub fn name() -> &'static str {
    NAME.get().copied().unwrap_or("?")
}

pub fn env() -> &'static Env {
    ENV.get().expect("env() is only called from the guest's main, after boot")
}

/// Prints `TEST <guest>: <check>: PASS|FAIL <detail>` and counts it.
pub fn report(check: &str, pass: bool, detail: fmt::Arguments<'_>) {
    TALLY.record(pass);
    let _guard = lock_console();
    let _ = report::write_test_line(&mut Uart, name(), check, pass, detail);
}

/// `(passed, failed)` so far.
pub fn counts() -> (u32, u32) {
    TALLY.counts()
}

/// Prints `GUEST <guest>: DONE …` and switches the VM off.
pub fn finish() -> ! {
    print_done();
    psci::system_off()
}

/// Prints `GUEST <guest>: DONE …` (for a guest that ends otherwise than
/// with [`finish`]'s SYSTEM_OFF).
pub fn print_done() {
    let (passed, failed) = TALLY.counts();
    let _guard = lock_console();
    let _ = report::write_done_line(&mut Uart, name(), passed, failed);
}

/// From the exception handler: something the guest did not expect.
pub fn unexpected_exception(vector: hv_arm::Vector, esr: u64, elr: u64, far: u64) -> ! {
    cpu::disable_irqs();
    report(
        "unexpected-exception",
        false,
        format_args!(
            "vCPU {} {} {} at ELR {elr:#x} FAR {far:#x}",
            cpu::index(),
            vector.kind().name(),
            crate::esr::Fault(esr)
        ),
    );
    finish()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    cpu::disable_irqs();
    report("panic", false, format_args!("vCPU {}: {}", cpu::index(), info));
    finish()
}

/// Boots the testkit on the boot vCPU and runs `main` (see [`crate::guest!`]).
pub fn run(name: &'static str, dtb: u64, main: fn(&'static Env)) -> ! {
    NAME.call_once(|| name);
    uart::init(guest::UART_BASE);
    let start = HEAP_REGION.0.get() as usize;
    // SAFETY: HEAP_REGION is used for nothing else, and this is the only call.
    unsafe { HEAP.lock().init(start, HEAP_SIZE) };

    let Some(blob) = dtb_blob(dtb) else {
        report("devicetree", false, format_args!("no device tree at x0 = {dtb:#x}"));
        finish()
    };
    let platform = match Platform::from_fdt(blob) {
        Ok(p) => p,
        Err(e) => {
            report("devicetree", false, format_args!("unusable: {e}"));
            finish()
        }
    };
    if platform.console.kind == UartKind::Pl011 {
        uart::init(platform.console.base.as_u64());
    }
    print(format_args!(
        "GUEST {name}: START EL{} vCPUs {} GIC {:?} bootargs \"{}\"\n",
        cpu::current_el(),
        platform.cpus.len(),
        platform.gic.version,
        platform.bootargs
    ));
    if let Err(e) = gic::init(&platform.gic) {
        report("gic", false, format_args!("{e}"));
        finish()
    }
    timer::set_intid(platform.timer.virt.intid);
    cpu::enable_irqs();
    let env = ENV.call_once(|| Env { name, dtb, blob, platform });
    main(env);
    finish()
}

/// The blob at `dtb` if it starts with the FDT magic and a sane size.
fn dtb_blob(dtb: u64) -> Option<&'static [u8]> {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        return None;
    }
    // SAFETY: the boot protocol puts a device tree at x0 inside our RAM
    // (identity-mapped); we read its 8-byte header first and then at most
    // its declared size, capped. Nothing in the guest writes there.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 8) };
    if header[..4] != [0xd0, 0x0d, 0xfe, 0xed] {
        return None;
    }
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(8..=MAX_DTB).contains(&size) {
        return None;
    }
    // SAFETY: as above, for the size the header declares.
    Some(unsafe { core::slice::from_raw_parts(dtb as *const u8, size) })
}

/// Polls `cond` until it holds or `timeout_us` pass; says whether it held.
pub fn wait_until(timeout_us: u64, mut cond: impl FnMut() -> bool) -> bool {
    let start = cpu::counter();
    loop {
        if cond() {
            return true;
        }
        if cpu::elapsed_us(start) >= timeout_us {
            return cond();
        }
        core::hint::spin_loop();
    }
}

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Where this image lies in RAM, BSS (stacks, heap, page tables) included.
pub fn image_range() -> (u64, u64) {
    (&raw const __image_start as u64, &raw const __image_end as u64)
}
