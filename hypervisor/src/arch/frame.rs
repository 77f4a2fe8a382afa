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


/// Whether the exception entry's fast path saves general-purpose register
/// `x` in the frame. It saves only what a call may clobber (x0-x18, x30:
/// AAPCS64's caller-saved registers); x19-x29 stay live in the CPU,
/// preserved by the handler as the calling convention demands, until the
/// entry completes the frame (`trap::Fast`). So a fast handler may read or
/// write a guest register only when this holds (31 is the zero register).
pub const fn fast_frame_has(x: u8) -> bool {
    x < 19 || x >= 30
}
