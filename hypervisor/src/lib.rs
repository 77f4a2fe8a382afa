//! The hypervisor: an EL2 image for 64-bit Arm.
//!
//! Boot story (`boot`, after `arch/aarch64/boot.S` relocates the image and
//! clears BSS): EL2 MMU on with the image and device tree mapped → heap →
//! platform description from the device tree → console and logging →
//! memory map and page allocator → secondary CPUs → banner.
//!
//! Layers:
//! - arch-neutral logic (`mm`, `esr`, `bootargs`, and `addr`/`platform` from
//!   the shared `hv-devtree` crate) builds and runs under `cargo test` on the
//!   build machine;
//! - `arch`, `drivers`, `console`, `heap`, `panic` and `boot` touch
//!   registers and run only on the target (`aarch64-unknown-none`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub use hv_devtree::{addr, platform};
pub mod bootargs;
pub mod esr;
pub mod vgic;
pub mod logring;
pub mod schedpolicy;
pub mod mm;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod arch;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod boot;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod drivers;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod heap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod panic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod dom0;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod domctl;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hypercall;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod io;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod sched;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod sysreg_trap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod trap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod vm;
