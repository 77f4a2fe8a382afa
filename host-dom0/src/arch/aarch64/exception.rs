//! EL1 exception handling: the frame `vectors.S` saves, IRQ dispatch to the
//! GIC, the `peek` fix-up, and a crash report (ESR, ELR, FAR) for anything else.

use core::fmt::{self, Write};
use core::mem::{offset_of, size_of};

use super::{cpu, gic, probe};

/// General registers at exception entry, as `vectors.S` stores them (its
/// FP/SIMD save area follows and is not visible here).
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    /// SP before the exception.
    pub sp: u64,
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
}

// vectors.S relies on these offsets (GPR_SIZE = 36 * 8).
const _: () = assert!(size_of::<TrapFrame>() == 36 * 8);
const _: () = assert!(offset_of!(TrapFrame, sp) == 31 * 8);
const _: () = assert!(offset_of!(TrapFrame, elr) == 32 * 8);
const _: () = assert!(offset_of!(TrapFrame, esr) == 34 * 8);
const _: () = assert!(offset_of!(TrapFrame, far) == 35 * 8);

/// ESR_EL1.EC: data abort taken without a change of exception level.
pub const EC_DATA_ABORT_SAME_EL: u64 = 0x25;

/// Which of the 16 vector entries was taken.
struct VectorKind(u64);

impl fmt::Display for VectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = [
            "EL1 with SP_EL0",
            "EL1 with SP_EL1",
            "EL0 (AArch64)",
            "EL0 (AArch32)",
        ];
        let kind = ["synchronous", "IRQ", "FIQ", "SError"];
        let i = self.0 as usize;
        match (origin.get(i / 4), kind.get(i % 4)) {
            (Some(o), Some(k)) => write!(f, "{k} from {o}"),
            _ => write!(f, "vector {}", self.0),
        }
    }
}

/// A name for ESR.EC (Arm ARM D24.2.40), for the crash report.
fn class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE trap",
        0x07 => "FP/SIMD access trap",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "system register trap",
        0x20 | 0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 | 0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Called by every vector entry with the saved frame.
#[no_mangle]
extern "C" fn handle_exception(frame: &mut TrapFrame, kind: u64) {
    match kind {
        1 | 5 => gic::handle_irq(),
        0 | 4 if probe::fix_up(frame) => {}
        _ => crash(frame, kind),
    }
}

fn crash(frame: &TrapFrame, kind: u64) -> ! {
    let mut out = crate::console::panic_console();
    let ec = frame.esr >> 26;
    let _ = writeln!(
        out,
        "\n[dom0] *** unexpected exception on cpu{}: {}",
        cpu::index(),
        VectorKind(kind)
    );
    let _ = writeln!(
        out,
        "[dom0]   ESR  {:#010x} (EC {ec:#04x}: {})",
        frame.esr,
        class_name(ec)
    );
    let _ = writeln!(
        out,
        "[dom0]   ELR  {:#018x}  FAR {:#018x}",
        frame.elr, frame.far
    );
    let _ = writeln!(
        out,
        "[dom0]   SPSR {:#018x}  SP  {:#018x}  LR {:#018x}",
        frame.spsr, frame.sp, frame.x[30]
    );
    crate::panic::stop_system()
}
