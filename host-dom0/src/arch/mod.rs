//! The architecture seam: everything that touches AArch64 system registers.
pub mod aarch64;
