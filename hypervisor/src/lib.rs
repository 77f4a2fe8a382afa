//! The hypervisor: an EL2 image for 64-bit Arm.
//!
//! Layers, bottom up (docs/architecture.md draws them):
//! - leaves, arch-neutral and pure: `mm` (page tables, address ranges, the
//!   page allocator), `vgic` (the virtual GIC as a state machine returning
//!   effects), `esr` (syndrome decoding, from the shared `hv-arm`),
//!   `schedpolicy`, `sysreg_policy`, `bootargs`, `logring`, `sync`,
//!   `s1walk` (the guest's stage-1 walk, for fault levels), `ratelimit`,
//!   `idregs` (the CPU features guests see), and `addr`/`platform` from
//!   the shared `hv-devtree`;
//! - `arch`: the only code that touches registers and assembly, behind one
//!   interface (`arch::aarch64` on the target, `arch::fake` in host tests);
//! - the mechanism, arch-neutral and host-tested against the fake arch:
//!   `trap` (exception entry and dispatch) → `emulate` (MMIO the hypervisor
//!   answers), `ioreq` (MMIO forwarded to dom0), `hypercall` (PSCI, SMCCC,
//!   the hypervisor's calls) → `domctl` (dom0's VM control), `sysreg_trap`;
//!   `sched` (run queues, vCPU switch), `irq` (physical interrupts), `vm`
//!   (VMs and vCPUs), `stage2`, `dom0` (building dom0), `machine` (what boot
//!   found), `runstate` (stopping, `hv.until_idle`), `console`;
//! - `boot`: the boot story, which hands what it finds to the modules above.
//!
//! Everything but `boot`, `heap` and `panic` builds and runs under
//! `cargo test` on the build machine.
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std)]
// Host builds have no entry points (`boot` is target-only): the mechanism
// is reached only from the host tests, so unused code is expected there.
#![cfg_attr(not(all(target_arch = "aarch64", target_os = "none")), allow(dead_code))]

extern crate alloc;

pub use hv_devtree::{addr, platform};
pub mod bootargs;
pub use hv_arm::esr;
pub mod idregs;
pub mod sysreg_policy;
pub mod logring;
pub mod mm;
pub mod ratelimit;
pub mod s1walk;
pub mod schedpolicy;
pub mod sync;
pub mod vgic;

pub mod arch;
pub mod console;
pub mod drivers;
mod dom0;
mod domctl;
mod emulate;
mod fault;
mod guestmap;
mod hypercall;
mod interrupts;
mod ioreq;
mod ioshadow;
mod irq;
mod machine;
mod pvtime;
mod runstate;
mod sched;
mod stage2;
mod switch;
mod sysreg_trap;
mod trap;
mod vm;

#[cfg(test)]
mod tests;

/// The fuzz targets' way in (`fuzz/`): the fake machine of the host tests.
#[cfg(fuzzing)]
pub mod fuzzing;

/// Declares the modules that exist only on the target: they set up the
/// machine or replace what `std` provides in host builds.
macro_rules! target_only {
    ($($item:item)*) => { $( #[cfg(all(target_arch = "aarch64", target_os = "none"))] $item )* };
}

target_only! {
    pub mod boot;
    mod heap;
    mod panic;
}
