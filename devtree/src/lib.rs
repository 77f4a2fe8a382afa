//! Device tree handling shared by the hypervisor and dom0: typed addresses
//! and the flattened device tree → [`platform::Platform`] description.
//! Arch-neutral, host-tested, and free of `unsafe`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addr;
pub mod dom0;
pub mod fdt_format;
pub mod guest;
pub mod platform;
mod sort;
pub mod writer;
