//! EL1 exception handling: the frame `vectors.S` saves, IRQ dispatch to the
//! GIC, the `peek` fix-up, and a crash report (ESR, ELR, FAR) for anything else.

use core::fmt::{self, Write};

use hv_arm::esr::Esr;

use super::{cpu, gic, probe};

/// The general registers `vectors.S` saves (its FP/SIMD save area follows
/// and is not part of the frame): the layout shared with the hypervisor and
/// the guests.
pub use hv_arm::TrapFrame;

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
    let esr = Esr(frame.esr);
    let _ = writeln!(
        out,
        "\n[dom0] *** unexpected exception on cpu{}: {}",
        cpu::index(),
        VectorKind(kind)
    );
    let _ = writeln!(
        out,
        "[dom0]   ESR  {:#010x} (EC {:#04x}: {})",
        frame.esr,
        esr.ec(),
        esr.class().description()
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
