//! EL2 exception handling: the trap frame saved by `vectors.S` and the
//! handler it calls. Until VMs run, every exception is unexpected and ends in
//! a crash report: class, ESR, ELR, FAR, SPSR and all registers.

use core::fmt::{self, Write};

pub use crate::arch::frame::{GuestException, TrapFrame};

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

/// Called by the vector entry for synchronous exceptions from a VM (HVC,
/// SMC, aborts, trapped instructions): the hot path, with an entry of its
/// own so that it pays for no decoding of the vector kind.
#[no_mangle]
extern "C" fn handle_guest_sync(frame: &mut TrapFrame) {
    crate::trap::handle_guest_sync(frame)
}

/// Called by every other vector entry with the saved frame: the exception entry
/// into the core. Exceptions from a VM (entries 8..=15) go to the trap
/// dispatcher, each arm a tail call with its kind as a constant (the
/// synchronous one, the hot path, first); an exception taken at EL2 is a
/// hypervisor bug.
#[no_mangle]
extern "C" fn handle_exception(frame: &mut TrapFrame, kind: u64) {
    match kind {
        8 => crate::trap::handle_lower(frame, GuestException::Sync),
        9 => crate::trap::handle_lower(frame, GuestException::Irq),
        10 => crate::trap::handle_lower(frame, GuestException::Fiq),
        11 => crate::trap::handle_lower(frame, GuestException::SError),
        12..=15 => crate::trap::handle_lower(frame, GuestException::AArch32),
        _ => report_and_stop(frame, VectorKind(kind), "unexpected exception at EL2"),
    }
}

/// A fatal error while handling `frame` (which came from a VM): report it
/// with the registers and stop the system.
pub fn fatal(frame: &TrapFrame, why: &str) -> ! {
    report_and_stop(frame, VectorKind(8), why)
}

fn report_and_stop(frame: &TrapFrame, kind: VectorKind, why: &str) -> ! {
    let mut out = crate::console::panic_console();
    let _ = writeln!(out, "\n*** unexpected exception on cpu{}: {} ({why})", super::cpu::index(), kind);
    let _ = write!(out, "{frame}");
    crate::runstate::stop_system();
}
