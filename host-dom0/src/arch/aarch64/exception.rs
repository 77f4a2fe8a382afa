//! EL1 exception handling: the frame `vectors.S` saves, IRQ dispatch to the
//! GIC, the `peek` fix-up, and a crash report (ESR, ELR, FAR) for anything else.

use core::fmt::Write;

use hv_arm::esr::Esr;
use hv_arm::{Vector, VectorKind};

use super::{cpu, gic, probe};

/// The general registers `vectors.S` saves (its FP/SIMD save area follows
/// and is not part of the frame): the layout shared with the hypervisor and
/// the guests.
pub use hv_arm::TrapFrame;

/// Called by every vector entry with the saved frame.
#[no_mangle]
extern "C" fn handle_exception(frame: &mut TrapFrame, kind: u64) {
    let vector = Vector(kind);
    match vector.kind() {
        VectorKind::Irq if vector.from_current_el() => gic::handle_irq(),
        VectorKind::Synchronous if vector.from_current_el() && probe::fix_up(frame) => {}
        _ => crash(frame, vector),
    }
}

fn crash(frame: &TrapFrame, vector: Vector) -> ! {
    let mut out = crate::console::panic_console();
    let esr = Esr(frame.esr);
    let _ = writeln!(
        out,
        "\n[dom0] *** unexpected exception on cpu{}: {}",
        cpu::index(),
        vector.at_el(1)
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
