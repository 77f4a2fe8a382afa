//! The boot CPU's story, entered from `boot.S` at EL1 with the MMU off:
//! identity map → heap → platform → console → PSCI → GIC → timer → console
//! input → IO forwarding (under the hypervisor) → secondary CPUs → guest VMs from the boot bundle → the event loop (the shell and the services).

use hv_devtree::platform::Platform;

use crate::arch::aarch64::{cpu, gic, hypercall, mmu, psci, smp, timer};
use crate::shell::System;
use crate::toolstack::Toolstack;
use crate::{console, evloop, fdt_scan, heap, ioreq, panic};


#[no_mangle]
extern "C" fn primary_main(dtb: usize) -> ! {
    let (blob, map) = mmu::init(dtb);
    heap::init();
    let platform = match Platform::from_fdt(blob) {
        Ok(p) => p,
        Err(e) => {
            if let Ok(uart) = Platform::console_from_fdt(blob) {
                console::init(&uart);
                log::error!("device tree at {dtb:#x} is unusable: {e}");
            }
            panic::stop_system()
        }
    };
    console::init(&platform.console);
    log::info!(
        "dom0 {} on {} (cpu0, MPIDR {:#x}), device tree at {dtb:#x}",
        env!("CARGO_PKG_VERSION"),
        platform.model,
        cpu::mpidr()
    );
    match map.l2_tables {
        Ok(n) => log::debug!(
            "identity map: {} memory regions, {n} level-2 tables",
            map.regions
        ),
        Err(n) => {
            log::warn!("identity map: {n} GiB(s) mapped Normal whole (out of level-2 tables)")
        }
    }
    psci::init(platform.psci.as_ref());
    if let Err(e) = gic::init(&platform.gic) {
        log::error!("GIC: {e}");
        panic::stop_system();
    }
    if let Err(e) = timer::init(platform.timer.virt) {
        log::error!("virtual timer: {e}");
        panic::stop_system();
    }
    cpu::unmask_irqs();
    if let Err(e) = console::enable_rx_interrupt(&platform.console) {
        log::warn!("console input: {e}");
    }
    let hypervisor = fdt_scan::Tree::new(blob).is_compatible("/hypervisor", "rusthv,hypervisor");
    if hypervisor {
        match hypercall::version() {
            Ok(v) => log::info!("hypervisor present, ABI {}.{}", v >> 16, v & 0xffff),
            Err(e) => log::warn!(
                "hypervisor present, but Version failed: {}",
                e.description()
            ),
        }
        ioreq::init(blob);
    }
    smp::start_secondaries(&platform);
    log::info!("{} of {} CPUs online", smp::online(), platform.cpus.len());
    crate::drivers::disk::init(blob);
    let mut vms = Toolstack::new(&platform, hypervisor);
    vms.boot();
    evloop::run(System {
        platform,
        blob,
        hypervisor,
        vms,
    })
}
