//! The ABI between the hypervisor and dom0: hypercall numbers, calling
//! convention, error codes, and the boot bundle format. Both sides depend
//! on this crate, so they cannot disagree. See `docs/hypercalls.md`.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod copy;
pub mod hypercall;
pub mod ioreq;
pub mod pvtime;
