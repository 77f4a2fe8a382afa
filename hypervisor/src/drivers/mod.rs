//! Drivers for the few devices the hypervisor itself uses.

pub mod uart;
