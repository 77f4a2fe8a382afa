//! The trap frame: a VM's general-purpose registers and exception syndrome
//! as the exception vectors save them (`vectors.S`), and as a vCPU keeps
//! them while it is not running. Plain data, the same on every build.

/// The layout, its compile-time offset checks and the crash report's
/// format are the shared definition in `hv-arm` (dom0 and the guests save
/// the same frame).
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

