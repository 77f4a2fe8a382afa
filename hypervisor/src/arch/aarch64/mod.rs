//! AArch64 EL2: boot, exceptions, MMU, PSCI, secondary CPUs, and the
//! registers of the virtualisation extensions.

pub mod cpu;
pub mod el2;
pub mod exception;
pub mod gic;
pub mod inject;
pub mod mmu;
pub use hv_psci as psci;
pub mod smp;
pub mod sysreg;
pub mod timer;
pub mod vcpu;

// The shared relocation macros must precede their use in boot.S.
core::arch::global_asm!(concat!(
    include_str!("../../../../asm/relocate.S"),
    include_str!("boot.S")
));
core::arch::global_asm!(include_str!("vectors.S"));
