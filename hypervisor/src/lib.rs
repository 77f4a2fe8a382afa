//! The hypervisor: an EL2 image for 64-bit Arm.
//!
//! Boot story (`boot`, after `arch/aarch64/boot.S` relocates the image and
//! clears BSS): EL2 MMU on with the image and device tree mapped → heap →
//! platform description from the device tree → console and logging →
//! memory map and page allocator → secondary CPUs → banner.
//!
//! Layers:
//! - arch-neutral logic (`mm`, `bootargs`, `sysreg_policy`, `esr` from the
//!   shared `hv-arm` crate, and `addr`/`platform` from the shared
//!   `hv-devtree` crate) builds and runs under `cargo test` on the
//!   build machine;
//! - `arch`, `drivers`, `console`, `heap`, `panic` and `boot` touch
//!   registers and run only on the target (`aarch64-unknown-none`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub use hv_devtree::{addr, platform};
pub mod bootargs;
pub use hv_arm::esr;
pub mod sysreg_policy;
pub mod vgic;
pub mod logring;
pub mod schedpolicy;
pub mod sync;
pub mod mm;

/// Declares the modules that exist only on the target: they touch
/// registers or run only under the hypervisor (one cfg seam for the crate).
macro_rules! target_only {
    ($($item:item)*) => { $( #[cfg(all(target_arch = "aarch64", target_os = "none"))] $item )* };
}

target_only! {
    pub mod arch;
    pub mod boot;
    pub mod console;
    pub mod drivers;
    mod heap;
    mod panic;
    mod dom0;
    mod domctl;
    mod hypercall;
    mod io;
    mod sched;
    mod sysreg_trap;
    mod trap;
    mod vm;
}
