//! EL2 exception handling: the trap frame saved by `vectors.S` and the
//! handler it calls. Until VMs run, every exception is unexpected and ends in
//! a crash report: class, ESR, ELR, FAR, SPSR and all registers.

use core::fmt::{self, Write};

pub use hv_arm::TrapFrame;

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
