//! The boot story, CPU by CPU: MMU → heap → platform → console → memory →
//! secondary CPUs → banner. Entered from `boot.S` at EL2 with the MMU off.

use alloc::string::String;
use core::fmt::Write;

use log::{debug, error, info, warn};

use crate::addr::{PhysAddr, PAGE_SIZE};
use core::sync::atomic::Ordering;

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize};

use crate::arch::aarch64::{cpu, gic, mmu, psci, smp};
use crate::vm::{self, VmId};
use crate::{dom0, sched};
use crate::bootargs::{BootArgs, SelfTest};
use crate::drivers::uart::Uart;
use crate::mm::frames::FrameAllocator;
use crate::mm::ranges::{free_memory, Range, RangeSet};
use crate::platform::{GicVersion, MemRegion, Platform, Uart as UartDesc};

/// Largest device tree the hypervisor accepts (the arm64 boot protocol's
/// limit).
const MAX_DTB_SIZE: u64 = 2 * 1024 * 1024;
/// Heap added from RAM once the page allocator exists.
const HEAP_GROWTH: u64 = 4 * 1024 * 1024;

pub static FRAMES: crate::sync::Mutex<Option<FrameAllocator>> = crate::sync::Mutex::new(None);

/// The device tree's size from its header, if the header looks like one.
fn dtb_size(dtb: PhysAddr) -> Option<u64> {
    let header = dtb.as_u64() as *const u32;
    if dtb.as_u64() == 0 || !dtb.is_aligned(8) {
        return None;
    }
    // SAFETY: the boot protocol puts a device tree at x0; with the MMU off
    // every address is accessible. The magic is checked before the size is
    // trusted.
    let (magic, size) = unsafe { (u32::from_be(header.read_volatile()), u32::from_be(header.add(1).read_volatile())) };
    (magic == 0xd00d_feed && (40..=MAX_DTB_SIZE as u32).contains(&size)).then_some(size as u64)
}

fn dtb_slice(dtb: PhysAddr, size: u64) -> &'static [u8] {
    // SAFETY: `size` bytes at `dtb` are mapped read-only and never written
    // by anyone while the hypervisor runs.
    unsafe { core::slice::from_raw_parts(dtb.as_u64() as *const u8, size as usize) }
}

fn console_uart(desc: &UartDesc) -> Option<Uart> {
    mmu::map_identity(desc.base, desc.size.max(PAGE_SIZE), true).ok()?;
    // SAFETY: the UART is mapped as device memory just above and the
    // hypervisor is its only driver.
    Some(unsafe { Uart::new(desc.kind, desc.base.as_u64() as usize) })
}

/// Rust entry of the boot CPU, at EL2 with the MMU off.
#[no_mangle]
extern "C" fn primary_main(dtb: usize, _load_address: usize) -> ! {
    let dtb = PhysAddr::new(dtb as u64);
    let Some(size) = dtb_size(dtb) else {
        // No device tree, no console: nothing can be reported.
        cpu::park()
    };
    if mmu::enable(dtb, size).is_err() {
        cpu::park()
    }
    crate::heap::init();
    let platform: &'static Platform = match Platform::from_fdt(dtb_slice(dtb, size)) {
        Ok(p) => PLATFORM.call_once(|| p),
        Err(e) => early_failure(dtb_slice(dtb, size), format_args!("{e}")),
    };
    let Some(uart) = console_uart(&platform.console) else { cpu::park() };
    crate::console::init(uart);
    let args = BootArgs::parse(&platform.bootargs, |bad| {
        crate::console::print_line("WARN", format_args!("bootargs: ignoring `{}`: {}", bad.word, bad.reason))
    });
    crate::console::init_logging(args.log_level);
    info!("hypervisor {} starting at EL{}", version(), cpu::current_el());
    describe(platform, dtb, size);

    setup_memory(platform, dtb, size);
    map_gic(platform);
    psci::init(platform.psci.as_ref());
    gic::init(&platform.gic);
    gic::init_cpu(&platform.gic);
    sched::set_stack_top(0, boot_stack_top());
    sched::init_cpu();
    let online = smp::start_secondaries(&platform.cpus, || {
        FRAMES.lock().as_mut()?.alloc((smp::STACK_SIZE / PAGE_SIZE) as usize)
    });
    banner(platform, online);
    ONLINE.store(online, Ordering::Relaxed);
    UNTIL_IDLE.store(args.until_idle, Ordering::Relaxed);

    match args.selftest {
        Some(SelfTest::Panic) => panic!("self-test: panic requested by hv.selftest=panic"),
        Some(SelfTest::Fault) => {
            let unmapped = 0xdead_0000_0000u64 as *const u64;
            // SAFETY: deliberately unsound: this load is meant to fault, to
            // show the crash report. Only reached with hv.selftest=fault.
            let value = unsafe { unmapped.read_volatile() };
            error!("self-test: load from unmapped {unmapped:p} returned {value:#x}");
        }
        None => {}
    }
    let settings = dom0::Dom0Settings { memory: args.dom0_mem, vcpus: args.dom0_vcpus, args: args.dom0_args, online_cpus: online };
    match dom0::create(platform, dtb_slice(dtb, size), &settings) {
        Ok(vm) => {
            if args.uart_log {
                info!("starting dom0; hv.uart_log: this log stays on the UART too");
            } else {
                info!("starting dom0; from now on this log is in the ring dom0 reads with `hvlog`");
                crate::console::hand_over_uart();
            }
            sched::wake(&vm, 0);
            drop(vm);
            sched::run_next()
        }
        Err(e) => error_no_dom0(&e),
    }
    if args.until_idle {
        info!("nothing left to run (hv.until_idle): stopping");
        power_off()
    }
    info!("nothing to run; idling");
    idle()
}

fn error_no_dom0(why: &str) {
    warn!("no dom0: {why}");
}

/// The platform, once the boot CPU has read it.
static PLATFORM: spin::Once<Platform> = spin::Once::new();
/// The GIC maintenance interrupt's INTID.
pub fn maintenance_intid() -> Option<u32> {
    PLATFORM.get().and_then(|p| p.gic.maintenance_irq).map(|irq| irq.intid)
}

fn boot_stack_top() -> usize {
    extern "C" {
        static boot_stack_top: u8;
    }
    core::ptr::addr_of!(boot_stack_top) as usize
}

/// Physical CPUs online.
static ONLINE: AtomicUsize = AtomicUsize::new(1);
/// `hv.until_idle`: power off once every guest has stopped.
static UNTIL_IDLE: AtomicBool = AtomicBool::new(false);
/// Which VM each physical SPI was given to (dom0's passed-through devices).
static SPI_OWNER: [AtomicU16; 1024] = [const { AtomicU16::new(u16::MAX) }; 1024];

pub fn online_cpus() -> usize {
    ONLINE.load(Ordering::Relaxed)
}

/// The platform (read once at boot).
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("the platform is read before any VM exists")
}

pub fn set_spi_owner(intid: u32, vm: VmId) {
    if let Some(slot) = SPI_OWNER.get(intid as usize) {
        slot.store(vm.0, Ordering::Relaxed);
    }
}

/// The VM a physical SPI belongs to.
pub fn spi_owner(intid: u32) -> Option<VmId> {
    let owner = SPI_OWNER.get(intid as usize)?.load(Ordering::Relaxed);
    (owner != u16::MAX).then_some(VmId(owner))
}

/// A guest stopped: under `hv.until_idle`, once none is left the run ends
/// (see [`idle_stop_check`]), saying whether every guest ended with SYSTEM_OFF.
pub fn guest_stopped() {
    if !UNTIL_IDLE.load(Ordering::Relaxed) {
        return;
    }
    let guests: alloc::vec::Vec<_> = vm::guest_ids().into_iter().filter_map(vm::get).collect();
    // A guest that reset itself is not done: dom0 restarts it.
    let done = |g: &vm::Vm| {
        g.state() == hv_abi::hypercall::VmState::Stopped && g.stop.lock().reason != hv_abi::hypercall::StopReason::SystemReset
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
static QUIET_SINCE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// ... or at this counter value, if dom0 never goes quiet.
static IDLE_STOP_DEADLINE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// From each CPU's idle loop: ends the run if [`guest_stopped`] asked for
/// it and dom0 has been quiet (every vCPU waiting for an interrupt, no IO
/// request unread) for 50 ms, or after 2 s. Returns whether an end is still
/// pending (the caller then wakes up again soon to check).
pub fn idle_stop_check() -> bool {
    if !IDLE_STOP.load(Ordering::Acquire) {
        return false;
    }
    let quiet = vm::get(VmId(0)).is_none_or(|d| {
        d.vcpus.iter().all(|v| {
            let s = v.sched.load(Ordering::Acquire);
            s == sched::state::BLOCKED || s == sched::state::OFF
        })
    }) && !crate::io::requests_pending();
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

fn finish_idle_stop() -> ! {
    let guests: alloc::vec::Vec<_> = vm::guest_ids().into_iter().filter_map(vm::get).collect();
    let clean = guests.iter().all(|g| g.stop.lock().reason == hv_abi::hypercall::StopReason::SystemOff);
    crate::console::wait_for_dom0_console(cpu::counter_frequency() / 2);
    crate::panic::stop_other_cpus();
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
    log::logger().flush();
    if clean {
        crate::console::print_line("INFO", format_args!("*** all guests ended with SYSTEM_OFF"));
    } else {
        crate::console::print_line("WARN", format_args!("*** some guests did not end with SYSTEM_OFF"));
    }
    crate::panic::stop_system()
}

/// A secondary CPU, once online: set up its GIC interface, then run the
/// vCPUs placed on it (dom0's vCPU i first, once switched on).
pub fn secondary_start(index: usize, stack_top: usize) -> ! {
    sched::set_stack_top(index, stack_top);
    if let Some(platform) = PLATFORM.get() {
        gic::init_cpu(&platform.gic);
    }
    sched::init_cpu();
    sched::run_next()
}

/// Resets the machine through PSCI, or stops it if there is no PSCI.
pub fn reset() -> ! {
    log::logger().flush();
    if psci::available() {
        let _ = psci::system_reset();
    }
    crate::panic::stop_system()
}

/// The platform in detail, at debug level.
fn describe(platform: &Platform, dtb: PhysAddr, dtb_size: u64) {
    let image = mmu::image_layout();
    debug!("image: {}..{} (text ..{}, rodata ..{})", image.start, image.end, image.text_end, image.rodata_end);
    debug!("device tree: {dtb} ({dtb_size} bytes)");
    for bank in &platform.memory {
        debug!("memory: {}+{:#x}", bank.base, bank.size);
    }
    for r in &platform.reserved {
        debug!("reserved: {}+{:#x}", r.base, r.size);
    }
    if let Some(initrd) = &platform.initrd {
        debug!("initrd: {}+{:#x}", initrd.base, initrd.size);
    }
    for c in &platform.cpus {
        debug!("cpu: {} MPIDR {:#x} enable-method {:?}", c.path, c.mpidr, c.enable_method);
    }
    debug!("GIC maintenance interrupt: {:?}", platform.gic.maintenance_irq);
    debug!("timer: {:?}", platform.timer);
    debug!("PSCI: {:?}", platform.psci);
    debug!("console interrupt: {:?}", platform.console.irq);
    debug!("bootargs: {:?}", platform.bootargs);
}

/// Computes free RAM, starts the page allocator and grows the heap.
fn setup_memory(platform: &Platform, dtb: PhysAddr, dtb_size: u64) {
    let image = mmu::image_layout();
    let region = |r: &MemRegion| Range::from_base_size(r.base, r.size);
    let banks = platform.memory.iter().filter_map(region);
    let image_range = Range::new(image.start, image.end);
    let excluded = [image_range, Range::from_base_size(dtb, dtb_size), platform.initrd.as_ref().and_then(region)]
        .into_iter()
        .flatten()
        .chain(platform.reserved.iter().filter_map(region));
    let free: RangeSet = match free_memory(banks, excluded) {
        Ok(free) => free,
        Err(e) => panic!("memory map: {e:?}: too many memory banks and reserved regions"),
    };

    let mut frames = FrameAllocator::new();
    for r in free.iter() {
        debug!("free RAM: {}..{} ({} KiB)", r.start, r.end, r.size() / 1024);
        if let Err(e) = mmu::map_identity(r.start, r.size(), false) {
            warn!("memory map: cannot map {}..{}: {:?}", r.start, r.end, e);
            continue;
        }
        if let Err(e) = frames.add_range(r.start, r.end) {
            warn!("memory map: page allocator refused {}..{}: {:?}", r.start, r.end, e);
        }
    }
    if let Some(initrd) = &platform.initrd {
        if let Err(e) = mmu::map_identity_read_only(initrd.base, initrd.size) {
            warn!("memory map: cannot map the initrd {}+{:#x}: {:?}", initrd.base, initrd.size, e);
        }
    }
    if let Some(heap) = frames.alloc((HEAP_GROWTH / PAGE_SIZE) as usize) {
        // SAFETY: freshly allocated, mapped read-write, owned by the heap
        // from now on.
        unsafe { crate::heap::grow(heap.as_u64() as usize, HEAP_GROWTH as usize) };
    }
    info!(
        "memory: {} MiB RAM, {} MiB free for VMs ({} pages)",
        platform.ram_size() >> 20,
        (frames.free_pages() as u64 * PAGE_SIZE) >> 20,
        frames.free_pages()
    );
    *FRAMES.lock() = Some(frames);
}

/// Maps every GIC frame the hypervisor will drive.
fn map_gic(platform: &Platform) {
    let gic = &platform.gic;
    let frames = [Some(&gic.gicd), gic.gicc.as_ref(), gic.gich.as_ref(), gic.gicv.as_ref()];
    for r in frames.into_iter().flatten().chain(gic.gicr.iter()) {
        if let Err(e) = mmu::map_identity(r.base, r.size, true) {
            warn!("{}: cannot map {}+{:#x}: {:?}", gic.path, r.base, r.size, e);
        }
    }
}

fn banner(platform: &Platform, online: usize) {
    let gic = &platform.gic;
    let mut frames = String::new();
    let mut frame = |name: &str, r: Option<&MemRegion>| {
        if let Some(r) = r {
            let _ = write!(frames, " {name}@{}", r.base);
        }
    };
    frame("GICD", Some(&gic.gicd));
    frame("GICC", gic.gicc.as_ref());
    frame("GICH", gic.gich.as_ref());
    frame("GICV", gic.gicv.as_ref());
    for r in &gic.gicr {
        frame("GICR", Some(r));
    }
    let gic_version = match gic.version {
        GicVersion::V2 => 2,
        GicVersion::V3 => 3,
    };
    info!("================================================================");
    info!("hypervisor {} at EL{}", version(), cpu::current_el());
    info!("board: {}", platform.model);
    info!("CPUs: {} of {} online", online, platform.cpus.len());
    info!("RAM: {} MiB in {} bank(s)", platform.ram_size() >> 20, platform.memory.len());
    info!("GIC: v{gic_version}{frames}");
    info!("console: {:?} at {} ({})", platform.console.kind, platform.console.base, platform.console.path);
    info!("================================================================");
}

fn version() -> &'static str {
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("HV_GIT_VERSION"), ")")
}

/// Where every CPU waits once it has nothing to do.
pub fn idle() -> ! {
    loop {
        cpu::wait_for_event();
        if crate::panic::stopping() {
            cpu::park()
        }
    }
}

pub fn power_off() -> ! {
    log::logger().flush();
    crate::panic::stop_system()
}

/// The device tree could not be turned into a platform: say why on the
/// console if the tree names one, then stop.
fn early_failure(dtb: &[u8], message: core::fmt::Arguments<'_>) -> ! {
    if let Ok(desc) = Platform::console_from_fdt(dtb) {
        if let Some(uart) = console_uart(&desc) {
            crate::console::init(uart);
            crate::console::print_line("ERROR", format_args!("cannot boot: {message}"));
        }
    }
    crate::panic::stop_system()
}

/// Rust entry when the loader started us at an exception level other than
/// EL2 (MMU off, nothing set up). Says so on the console if the device tree
/// names one, then parks.
#[no_mangle]
extern "C" fn wrong_exception_level(dtb: usize) -> ! {
    let el = cpu::current_el();
    let dtb = PhysAddr::new(dtb as u64);
    crate::heap::init();
    if let Some(size) = dtb_size(dtb) {
        if let Ok(desc) = Platform::console_from_fdt(dtb_slice(dtb, size)) {
            // SAFETY: with the MMU off every address is device memory; the
            // UART is the firmware's console and nothing else runs.
            let mut uart = unsafe { Uart::new(desc.kind, desc.base.as_u64() as usize) };
            let _ = writeln!(
                uart,
                "hypervisor: entered at EL{el}, but it must be started at EL2 (check the boot loader / firmware configuration); parking"
            );
        }
    }
    cpu::park()
}
