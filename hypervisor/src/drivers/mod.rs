//! Drivers for the few devices the hypervisor itself uses.

pub use hv_uart as uart;
