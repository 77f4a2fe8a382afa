//! Secondary CPU bring-up, one CPU at a time, by the method the device tree
//! names for it: PSCI `CPU_ON` or a spin-table release address.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use log::{debug, info, warn};

use super::{cpu, mmu, psci};
use crate::addr::PhysAddr;
use crate::platform::{Cpu, EnableMethod};

/// What `secondary_entry` (boot.S) reads with its MMU still off: stack top,
/// CPU index, MAIR_EL2, TCR_EL2, TTBR0_EL2, SCTLR_EL2.
#[repr(C, align(64))]
pub struct SecondaryBoot(UnsafeCell<[u64; 6]>);

// SAFETY: written only by the boot CPU while no secondary is being started,
// read by the one secondary being started (see `start_secondaries`).
unsafe impl Sync for SecondaryBoot {}

#[no_mangle]
static SECONDARY_BOOT: SecondaryBoot = SecondaryBoot(UnsafeCell::new([0; 6]));

static STACKS: [core::sync::atomic::AtomicUsize; cpu::MAX_CPUS] = [const { core::sync::atomic::AtomicUsize::new(0) }; cpu::MAX_CPUS];
static ONLINE: [AtomicBool; cpu::MAX_CPUS] = [const { AtomicBool::new(false) }; cpu::MAX_CPUS];

extern "C" {
    fn secondary_entry();
}

/// Each secondary CPU's stack size.
pub const STACK_SIZE: u64 = 64 * 1024;

/// Starts every CPU in `cpus` other than the running one; `alloc_stack`
/// gives each a stack (its lowest address). Returns how many CPUs are online,
/// the boot CPU included.
pub fn start_secondaries(cpus: &[Cpu], mut alloc_stack: impl FnMut() -> Option<PhysAddr>) -> usize {
    let boot_mpidr = cpu::mpidr();
    ONLINE[0].store(true, Ordering::Release);
    let mut next_index = 1;
    for target in cpus.iter().filter(|c| c.mpidr != boot_mpidr) {
        if next_index == cpu::MAX_CPUS {
            warn!("{}: not started, the hypervisor supports at most {} CPUs", target.path, cpu::MAX_CPUS);
            continue;
        }
        let Some(stack) = alloc_stack() else {
            warn!("{}: not started, no memory for its stack", target.path);
            continue;
        };
        if start_one(target, next_index, stack) {
            next_index += 1;
        }
    }
    next_index
}

fn start_one(target: &Cpu, index: usize, stack: PhysAddr) -> bool {
    let [mair, tcr, ttbr0, sctlr] = mmu::secondary_registers();
    let boot = [stack.as_u64() + STACK_SIZE, index as u64, mair, tcr, ttbr0, sctlr];
    STACKS[index].store((stack.as_u64() + STACK_SIZE) as usize, Ordering::Relaxed);
    // SAFETY: no secondary CPU is reading SECONDARY_BOOT now: the previous
    // one reported online (after reading it) or timed out and was given up.
    unsafe { SECONDARY_BOOT.0.get().write_volatile(boot) };
    cpu::clean_dcache_range(SECONDARY_BOOT.0.get() as usize, core::mem::size_of::<SecondaryBoot>());

    let entry = PhysAddr::new(secondary_entry as *const () as u64);
    debug!("starting {} (MPIDR {:#x}) as cpu{index} via {:?}, stack {}", target.path, target.mpidr, target.enable_method, stack);
    match target.enable_method {
        None => {
            warn!("{}: no enable-method, cannot start it", target.path);
            return false;
        }
        Some(EnableMethod::Psci) => {
            if let Err(e) = psci::cpu_on(target.mpidr, entry.as_u64(), index as u64) {
                warn!("{}: PSCI CPU_ON failed: {:?}", target.path, e);
                return false;
            }
        }
        Some(EnableMethod::SpinTable { release_addr }) => {
            if let Err(e) = mmu::map_identity(release_addr, 8, false) {
                warn!("{}: cannot map cpu-release-addr {}: {:?}", target.path, release_addr, e);
                return false;
            }
            let slot = release_addr.as_u64() as *mut u64;
            // SAFETY: the release address is RAM the firmware reserved for
            // exactly this handshake, now mapped; the waiting CPU reads it
            // with its MMU off, hence the clean to the point of coherency.
            unsafe { slot.write_volatile(entry.as_u64()) };
            cpu::clean_dcache_range(slot as usize, 8);
            cpu::send_event();
        }
    }

    let deadline = cpu::counter() + cpu::counter_frequency();
    while !ONLINE[index].load(Ordering::Acquire) {
        if cpu::counter() > deadline {
            warn!("{} (MPIDR {:#x}) did not come online within 1 s", target.path, target.mpidr);
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Rust entry of a secondary CPU, MMU on, on its own stack (see boot.S).
#[no_mangle]
extern "C" fn secondary_main(index: usize) -> ! {
    ONLINE[index].store(true, Ordering::Release);
    info!("online, MPIDR {:#x}, EL{}", cpu::mpidr(), cpu::current_el());
    crate::boot::secondary_start(index, STACKS[index].load(Ordering::Relaxed))
}

/// True once the CPU with this logical index has come online.
pub fn is_online(index: usize) -> bool {
    ONLINE.get(index).is_some_and(|f| f.load(Ordering::Acquire))
}

// boot.S reads six u64 fields from the start of SECONDARY_BOOT.
const _: () = assert!(core::mem::size_of::<SecondaryBoot>() == 64);
