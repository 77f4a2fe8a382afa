//! The boot story, CPU by CPU: MMU → heap → platform → console → memory →
//! interrupts → secondary CPUs → banner → dom0. Entered from `boot.S` at
//! EL2 with the MMU off. Boot hands what it found to the modules that own
//! it from then on (`machine`: the platform and online CPUs;
//! `mm::machine_frames`: the page allocator; `runstate`: `hv.until_idle`);
//! nothing imports `boot` for state.

use alloc::string::String;
use core::fmt::Write;

use log::{debug, error, info, warn};

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::arch::{cpu, gic, mmu, psci, smp};
use crate::bootargs::{BootArgs, SelfTest};
use crate::drivers::uart::Uart;
use crate::mm::frames::FrameAllocator;
use crate::mm::machine_frames;
use crate::mm::ranges::{free_memory, Range, RangeSet};
use crate::platform::{GicVersion, MemRegion, Platform, Uart as UartDesc};
use crate::{dom0, machine, runstate, sched};

/// Largest device tree the hypervisor accepts (the arm64 boot protocol's
/// limit).
const MAX_DTB_SIZE: u64 = 2 * 1024 * 1024;
/// Heap added from RAM once the page allocator exists.
const HEAP_GROWTH: u64 = 4 * 1024 * 1024;

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
        Ok(p) => machine::set_platform(p),
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
    crate::switch::set_stack_top(0, boot_stack_top());
    sched::init_cpu();
    let online = smp::start_secondaries(&platform.cpus, || machine_frames::alloc((smp::STACK_SIZE / PAGE_SIZE) as usize));
    banner(platform, online);
    machine::set_online_cpus(online);
    runstate::set_until_idle(args.until_idle);
    if args.no_balance {
        sched::set_balancing(false);
    }

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
            crate::switch::run_next()
        }
        Err(e) => error_no_dom0(&e),
    }
    if args.until_idle {
        info!("nothing left to run (hv.until_idle): stopping");
        runstate::power_off()
    }
    info!("nothing to run; idling");
    runstate::idle()
}

fn error_no_dom0(why: &str) {
    warn!("no dom0: {why}");
}

fn boot_stack_top() -> usize {
    extern "C" {
        static boot_stack_top: u8;
    }
    core::ptr::addr_of!(boot_stack_top) as usize
}

/// A secondary CPU, once online: set up its GIC interface, then run the
/// vCPUs placed on it (dom0's vCPU i first, once switched on).
pub fn secondary_start(index: usize, stack_top: usize) -> ! {
    crate::switch::set_stack_top(index, stack_top);
    if let Some(platform) = machine::try_platform() {
        gic::init_cpu(&platform.gic);
    }
    sched::init_cpu();
    crate::switch::run_next()
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
    debug!("bootargs: \"{}\"", platform.bootargs);
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
    machine_frames::install(frames);
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

/// The device tree could not be turned into a platform: say why on the
/// console if the tree names one, then stop.
fn early_failure(dtb: &[u8], message: core::fmt::Arguments<'_>) -> ! {
    if let Ok(desc) = Platform::console_from_fdt(dtb) {
        if let Some(uart) = console_uart(&desc) {
            crate::console::init(uart);
            crate::console::print_line("ERROR", format_args!("cannot boot: {message}"));
        }
    }
    runstate::stop_system()
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
