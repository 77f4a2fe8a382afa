//! EL2 exception handling: the trap frame saved by `vectors.S` and the
//! handler it calls. Until VMs run, every exception is unexpected and ends in
//! a crash report: class, ESR, ELR, FAR, SPSR and all registers.

use core::fmt::{self, Write};
use core::mem::{offset_of, size_of};

use crate::esr::Esr;

/// Register state at exception entry, laid out as `vectors.S` stores it.
#[repr(C)]
#[derive(Clone, Copy)]
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

/// Which of the 16 vector entries was taken.
#[derive(Clone, Copy, Debug)]
struct VectorKind(u64);

impl fmt::Display for VectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = ["current EL with SP_EL0", "current EL with SP_EL2", "lower EL (AArch64)", "lower EL (AArch32)"];
        let kind = ["synchronous", "IRQ", "FIQ", "SError"];
        let i = self.0 as usize;
        match (origin.get(i / 4), kind.get(i % 4)) {
            (Some(o), Some(k)) => write!(f, "{k} from {o}"),
            _ => write!(f, "vector {}", self.0),
        }
    }
}

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

/// Called by every vector entry with the saved frame. Exceptions from a VM
/// (entries 8..=15) go to the trap dispatcher; an exception taken at EL2 is
/// a hypervisor bug.
#[no_mangle]
extern "C" fn handle_exception(frame: &mut TrapFrame, kind: u64) {
    if kind >= 8 {
        crate::trap::handle_lower(frame, kind);
    } else {
        fatal(frame, kind, "unexpected exception at EL2");
    }
}

/// Reports `frame` and stops the system.
pub fn fatal(frame: &TrapFrame, kind: u64, why: &str) -> ! {
    let mut out = crate::console::panic_console();
    let _ = writeln!(out, "\n*** unexpected exception on cpu{}: {} ({why})", super::cpu::index(), VectorKind(kind));
    let _ = write!(out, "{frame}");
    crate::panic::stop_system();
}
