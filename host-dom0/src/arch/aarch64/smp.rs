//! Secondary CPUs: started one at a time, by PSCI `CPU_ON` or by writing the
//! spin-table release address (the Raspberry Pi without a hypervisor; its
//! firmware stub spins at EL2 and boot.S drops them to EL1 too). Each
//! initialises its GIC CPU interface and idles in WFI.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use hv_devtree::platform::{EnableMethod, Platform};

use super::cpu::{self, MAX_CPUS};
use super::{gic, mmu, psci};

const STACK_SIZE: usize = 64 * 1024;

/// What `secondary_entry` (boot.S) reads with its MMU off.
#[repr(C)]
struct SecondaryBoot {
    stack_top: u64,
    index: u64,
    mair: u64,
    tcr: u64,
    ttbr0: u64,
    sctlr: u64,
}

struct BootSlot(UnsafeCell<SecondaryBoot>);

// SAFETY: written only by the boot CPU while no secondary is starting (CPUs
// are started one at a time, and the next one only after the previous one
// reported in); secondaries only read it.
unsafe impl Sync for BootSlot {}

#[no_mangle]
static SECONDARY_BOOT: BootSlot = BootSlot(UnsafeCell::new(SecondaryBoot {
    stack_top: 0,
    index: 0,
    mair: 0,
    tcr: 0,
    ttbr0: 0,
    sctlr: 0,
}));

#[repr(C, align(16))]
struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_CPUS]>);

// SAFETY: each stack is used by exactly one CPU, which owns it from start.
unsafe impl Sync for Stacks {}

static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_CPUS]));

/// CPUs running dom0 (the boot CPU counts).
static ONLINE: AtomicUsize = AtomicUsize::new(1);

extern "C" {
    fn secondary_entry();
}

pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Starts every other enabled CPU of the tree; returns how many came up.
pub fn start_secondaries(platform: &Platform) -> usize {
    let me = cpu::mpidr();
    let entry = secondary_entry as *const () as u64;
    let mut index = 1;
    for c in platform.cpus.iter().filter(|c| c.mpidr != me) {
        if index >= MAX_CPUS {
            log::warn!("{}: more than {MAX_CPUS} CPUs, not started", c.path);
            continue;
        }
        let Some(method) = c.enable_method else {
            continue;
        };
        prepare(index);
        let before = online();
        let started = match method {
            EnableMethod::Psci => psci::cpu_on(c.mpidr, entry, index as u64).map_err(|e| {
                log::warn!("{}: PSCI CPU_ON failed: {e:?}", c.path);
            }),
            EnableMethod::SpinTable { release_addr } => {
                release(release_addr.as_u64(), entry);
                Ok(())
            }
        };
        if started.is_err() {
            continue;
        }
        // Up to 200 ms for it to report in.
        let deadline = cpu::counter() + cpu::counter_frequency() / 5;
        while online() == before && cpu::counter() < deadline {
            core::hint::spin_loop();
        }
        if online() == before {
            log::warn!("{} (MPIDR {:#x}) did not come up", c.path, c.mpidr);
        } else {
            index += 1;
        }
    }
    online() - 1
}

fn prepare(index: usize) {
    let regs = mmu::regs();
    let stacks = STACKS.0.get() as usize;
    let slot = SECONDARY_BOOT.0.get();
    // SAFETY: see `BootSlot`: no secondary is reading the slot now.
    unsafe {
        slot.write(SecondaryBoot {
            stack_top: (stacks + (index + 1) * STACK_SIZE) as u64,
            index: index as u64,
            mair: regs.mair,
            tcr: regs.tcr,
            ttbr0: regs.ttbr0,
            sctlr: regs.sctlr,
        });
    }
    cpu::clean_dcache_range(slot as usize, core::mem::size_of::<SecondaryBoot>());
}

/// Spin-table release: write the entry point where the CPU polls, make it
/// visible to a reader with its MMU off, and wake it.
fn release(release_addr: u64, entry: u64) {
    // SAFETY: the device tree names `release_addr` as this CPU's spin-table
    // mailbox, an 8-byte word in RAM (identity-mapped) that the firmware
    // reserved for exactly this write.
    unsafe { core::ptr::write_volatile(release_addr as *mut u64, entry) };
    cpu::clean_dcache_range(release_addr as usize, 8);
    aarch64_cpu::asm::sev();
}

/// Rust entry of a secondary CPU: MMU on, own stack (see boot.S).
#[no_mangle]
extern "C" fn secondary_main(index: u64) -> ! {
    if let Err(e) = gic::init_cpu() {
        log::warn!("cpu{index}: GIC CPU interface: {e}");
    }
    // The hypervisor may signal IO requests to any of dom0's CPUs.
    crate::ioreq::init_secondary();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    log::debug!("cpu{index} online (MPIDR {:#x})", cpu::mpidr());
    // The first secondary is the IO worker (guests' disk turns); the
    // others only take interrupts.
    if index == 1 {
        crate::ioreq::run_worker()
    }
    cpu::idle()
}
