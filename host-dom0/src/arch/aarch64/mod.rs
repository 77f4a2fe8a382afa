//! AArch64 EL1: boot, exceptions, MMU, GIC, timer, PSCI, hypercalls, secondary CPUs.

pub mod cpu;
pub mod exception;
pub mod gic;
pub mod hypercall;
pub use hv_mmio as mmio;
pub mod mmu;
pub mod probe;
pub use hv_psci as psci;
pub mod smp;
pub mod timer;

// The shared relocation macros (asm/relocate.S) must precede their use in boot.S.
core::arch::global_asm!(concat!(
    include_str!("../../../../asm/relocate.S"),
    include_str!("boot.S")
));
core::arch::global_asm!(include_str!("../../../../asm/el1_vectors.S"));
