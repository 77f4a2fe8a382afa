//! What the exception entry hands the core: the trap frame (a VM's
//! registers and syndrome as the vectors save them, defined once in
//! `hv-arm`) and which kind of exception it was. Plain data, the same on
//! every build.

pub use hv_arm::TrapFrame;

/// An exception taken from a VM (the lower-EL vector entries), as the
/// core's trap dispatch sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestException {
    /// Synchronous (ESR_EL2 says what): HVC, SMC, aborts, traps.
    Sync,
    /// A physical IRQ while the VM ran.
    Irq,
    /// A physical FIQ while the VM ran.
    Fiq,
    /// A physical SError while the VM ran.
    SError,
    /// Anything from AArch32, which no VM can be running (HCR_EL2.RW = 1).
    AArch32,
}

