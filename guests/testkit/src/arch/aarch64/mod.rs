//! AArch64 EL1: entry, identity map, exceptions, console, PSCI, GIC, timer, vCPUs.

pub mod cpu;
pub mod exception;
pub mod gic;
pub mod mmu;
pub mod psci;
pub mod smp;
pub mod timer;
pub mod uart;

// The shared relocation macros (asm/relocate.S) must precede their use in entry.S.
core::arch::global_asm!(concat!(
    include_str!("../../../../../asm/relocate.S"),
    include_str!("entry.S")
));
core::arch::global_asm!(include_str!("../../../../../asm/el1_vectors.S"));
