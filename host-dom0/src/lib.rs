//! Dom0: the privileged host VM, an EL1 kernel that owns the console UART.
//!
//! Boot story (`boot`, after `arch/aarch64/boot.S` has relocated the image,
//! cleared BSS and, if entered at EL2, dropped to EL1): identity-mapped MMU
//! from the device tree's `/memory` → heap → platform description → console
//! and logging → GIC → timer → console receive interrupt → secondary CPUs →
//! the event loop (`evloop`: the services and the shell).
//!
//! Layers:
//! - arch-neutral logic, built and unit-tested on the build machine with
//!   `cargo test -p host-dom0`: `wake` (when an event-loop task runs
//!   again), `line` (line editor), `command` (command and
//!   argument parsing), `ring` (interrupt-to-shell byte ring), `fdt_scan`
//!   (raw device tree walk: memory, device list, `/hypervisor`), `pagetable`
//!   (the identity map's descriptors), `kernel_image` (guest kernel formats
//!   and where kernel, initrd and device tree go in guest RAM), `vmview`
//!   (the `list` table and `info VM` report), `iodev` (the MMIO test
//!   device every guest gets through IO forwarding, and the request →
//!   completion backend), `wincopy` (copies to and from a guest's RAM
//!   window, volatile on the guest's side), `pl011` (the guest PL011
//!   device model dom0 will serve forwarded console accesses with; not yet
//!   wired to the hypervisor);
//! - `drivers::sdhci` (SD card state machine, tested against a fake
//!   controller) is arch-neutral too;
//! - `arch`, the other `drivers`, `console`, `heap`, `ioreq` (IO forwarding: the
//!   page shared with the hypervisor and its interrupt), `panic`, `shell`, `toolstack`
//!   (guest VMs: configs from the boot bundle, creation by hypercall, guest
//!   console output) and `boot` touch registers or hypercalls and run only on
//!   the target (`aarch64-unknown-none`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod backend;
pub mod backlog;
pub mod command;
pub mod drivers;
pub mod fdt_scan;
pub mod guestcon;
pub mod guestwin;
pub mod iodev;
pub mod kernel_image;
pub mod line;
pub mod pagetable;
pub mod pl011;
pub mod ring;
pub mod vmview;
pub mod wake;
pub mod wincopy;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod arch;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod boot;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod evloop;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod heap;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod ioreq;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod panic;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod shell;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod toolstack;
