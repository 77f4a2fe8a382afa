//! The trap frame: a VM's general-purpose registers and exception syndrome
//! as the exception vectors save them (`vectors.S`), and as a vCPU keeps
//! them while it is not running. Plain data, the same on every build.

use core::fmt;
use core::mem::{offset_of, size_of};

use crate::esr::Esr;

/// Register state at exception entry, laid out as `vectors.S` stores it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapFrame {
    pub x: [u64; 31],
    /// SP at the time of the exception (for exceptions taken from EL2).
    pub sp: u64,
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
}

// vectors.S relies on these offsets (FRAME_SIZE = 36 * 8).
const _: () = assert!(size_of::<TrapFrame>() == 36 * 8);
const _: () = assert!(offset_of!(TrapFrame, sp) == 31 * 8);
const _: () = assert!(offset_of!(TrapFrame, elr) == 32 * 8);
const _: () = assert!(offset_of!(TrapFrame, esr) == 34 * 8);
const _: () = assert!(offset_of!(TrapFrame, far) == 35 * 8);

impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  ESR  {}", Esr(self.esr))?;
        writeln!(f, "  ELR  {:#018x}  FAR {:#018x}", self.elr, self.far)?;
        writeln!(f, "  SPSR {:#018x}  SP  {:#018x}", self.spsr, self.sp)?;
        for (i, pair) in self.x.chunks(2).enumerate() {
            match pair {
                [a, b] => writeln!(f, "  x{:<2} {a:#018x}  x{:<2} {b:#018x}", 2 * i, 2 * i + 1)?,
                [a] => writeln!(f, "  x{:<2} {a:#018x}", 2 * i)?,
                _ => {}
            }
        }
        Ok(())
    }
}


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

