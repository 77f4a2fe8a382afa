//! Architecture layer: the only code that touches system registers and
//! assembly. Everything else in the crate is arch-neutral and host-tested.

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod aarch64;
