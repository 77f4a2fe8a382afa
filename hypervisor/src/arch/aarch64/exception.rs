//! EL2 exception handling: the trap frame saved by `vectors.S` and the
//! handler it calls. Until VMs run, every exception is unexpected and ends in
//! a crash report: class, ESR, ELR, FAR, SPSR and all registers.

use core::fmt::{self, Write};

pub use crate::arch::frame::GuestException;
pub use hv_arm::TrapFrame;

use crate::sched::Next;
use crate::trap::Fast;

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

/// The fast entries' answers (`vectors.S` `fast_entry`): 0 back to the
/// VM at once, restoring only the fast frame; anything else, the frame is
/// completed and `finish_guest_sync` / `finish_guest_irq` get the code.
const FAST_RESUME: u64 = 0;
const FAST_FULL: u64 = 1;
const FAST_FINISH: u64 = 2; // + the Next

fn fast_code(fast: Fast) -> u64 {
    match fast {
        Fast::Resume => FAST_RESUME,
        Fast::Full => FAST_FULL,
        Fast::Finish(Next::Resume) => FAST_FINISH,
        Fast::Finish(Next::Yield) => FAST_FINISH + 1,
        Fast::Finish(Next::Leave) => FAST_FINISH + 2,
    }
}

fn finish_code(frame: &mut TrapFrame, code: u64) {
    let next = match code {
        FAST_FINISH => Next::Resume,
        c if c == FAST_FINISH + 1 => Next::Yield,
        _ => Next::Leave,
    };
    crate::trap::finish(frame, next)
}

/// Called by the vector entry for synchronous exceptions from a VM (HVC,
/// SMC, aborts, trapped instructions), the hot path, with the fast frame
/// (x19-x29 live in the CPU, not in the frame).
#[no_mangle]
extern "C" fn handle_guest_sync_fast(frame: &mut TrapFrame) -> u64 {
    fast_code(crate::trap::guest_sync_fast(frame))
}

/// Called by the vector entry for IRQs from a VM, with the fast frame.
#[no_mangle]
extern "C" fn handle_guest_irq_fast(_frame: &mut TrapFrame) -> u64 {
    fast_code(crate::trap::guest_irq_fast())
}

/// The rest of a synchronous exit whose fast handler said `code` (not
/// FAST_RESUME), with the frame now complete.
#[no_mangle]
extern "C" fn finish_guest_sync(frame: &mut TrapFrame, code: u64) {
    if code == FAST_FULL {
        crate::trap::handle_guest_sync(frame)
    } else {
        finish_code(frame, code)
    }
}

/// The rest of an IRQ exit whose fast handler said `code`.
#[no_mangle]
extern "C" fn finish_guest_irq(frame: &mut TrapFrame, code: u64) {
    if code == FAST_FULL {
        crate::trap::handle_lower(frame, GuestException::Irq)
    } else {
        finish_code(frame, code)
    }
}

/// Called by every other vector entry with the saved frame: the exception entry
/// into the core. Exceptions from a VM (entries 8..=15) go to the trap
/// dispatcher, each arm a tail call with its kind as a constant (the
/// synchronous one, the hot path, first); an exception taken at EL2 is a
/// hypervisor bug.
#[no_mangle]
extern "C" fn handle_exception(frame: &mut TrapFrame, kind: u64) {
    match kind {
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
