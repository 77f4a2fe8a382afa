//! The trap frame: the general registers and exception syndrome an
//! exception vector saves before it calls Rust.
//!
//! One layout for all three vector tables: the hypervisor's
//! `hypervisor/src/arch/aarch64/vectors.S` (ELR/SPSR/ESR/FAR_EL2) and the EL1
//! vectors of dom0 and the guests, `asm/el1_vectors.S` (ELR/SPSR/ESR/FAR_EL1,
//! followed by an FP/SIMD save area that is not part of this struct). Both
//! store x0..x29 with the `store_x2_to_x29` / `load_x0_to_x29` macros of
//! `asm/relocate.S` and the rest at the slots asserted below.

use core::fmt;
use core::mem::{offset_of, size_of};

use crate::esr::Esr;

/// Register state at exception entry, laid out as the vectors store it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// SP at the time of the exception (meaningful for exceptions taken
    /// from the same exception level).
    pub sp: u64,
    /// ELR_ELx: where the exception was taken.
    pub elr: u64,
    /// SPSR_ELx: the interrupted PSTATE.
    pub spsr: u64,
    /// ESR_ELx: the syndrome.
    pub esr: u64,
    /// FAR_ELx: the faulting virtual address (aborts only).
    pub far: u64,
}

/// Bytes the vectors reserve for a [`TrapFrame`] (`FRAME_SIZE` in
/// `vectors.S`, `GPR_SIZE` in `el1_vectors.S`).
pub const TRAP_FRAME_SIZE: usize = 36 * 8;

// The assembly relies on these offsets: x30/SP as a pair at slot 30,
// ELR/SPSR at slot 32, ESR/FAR at slot 34.
const _: () = assert!(size_of::<TrapFrame>() == TRAP_FRAME_SIZE);
const _: () = assert!(offset_of!(TrapFrame, x) == 0);
const _: () = assert!(offset_of!(TrapFrame, sp) == 31 * 8);
const _: () = assert!(offset_of!(TrapFrame, elr) == 32 * 8);
const _: () = assert!(offset_of!(TrapFrame, spsr) == 33 * 8);
const _: () = assert!(offset_of!(TrapFrame, esr) == 34 * 8);
const _: () = assert!(offset_of!(TrapFrame, far) == 35 * 8);
// `stp`/`ldp` of the pairs need 16-byte alignment of the frame on the stack;
// the vectors keep SP 16-byte aligned, so the size must be a multiple of 16.
const _: () = assert!(TRAP_FRAME_SIZE.is_multiple_of(16));

/// The crash report: syndrome, ELR, FAR, SPSR, SP and every general register.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn crash_report_names_syndrome_addresses_and_every_register() {
        let mut frame = TrapFrame { x: [0; 31], sp: 0x4000, elr: 0x8_0000, spsr: 0x3c9, esr: (0x25 << 26) | (1 << 25) | 0x06, far: 0xdead_0000_0000 };
        for (i, x) in frame.x.iter_mut().enumerate() {
            *x = i as u64 * 0x11;
        }
        let text = format!("{frame}");
        assert!(text.contains("data abort from the current EL"), "{text}");
        assert!(text.contains("FAR 0x0000dead00000000"), "{text}");
        assert!(text.contains("SP  0x0000000000004000"), "{text}");
        assert!(text.contains("x29 0x00000000000001ed"), "{text}");
        assert!(text.contains("x30 0x00000000000001fe"), "{text}");
        // x0..x30 on 16 lines, after the three header lines.
        assert_eq!(text.lines().count(), 3 + 16);
    }
}
