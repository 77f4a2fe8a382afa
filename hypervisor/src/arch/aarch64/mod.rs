//! AArch64 EL2: boot, exceptions, MMU, PSCI, secondary CPUs.

pub mod cpu;
pub mod exception;
pub mod mmu;
pub mod psci;
pub mod smp;

core::arch::global_asm!(include_str!("boot.S"));
core::arch::global_asm!(include_str!("vectors.S"));
