//! Exception Syndrome Register decoding (Arm ARM D23.2 "ESR_EL2").
//!
//! Pure functions over the raw value, so trap decoding is host-tested.

use core::fmt;

/// ESR_ELx.EC, the exception class (bits [31:26]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    Unknown,
    WfiWfe,
    SimdFp,
    IllegalExecutionState,
    Svc64,
    Hvc64,
    Smc64,
    SysReg,
    Sve,
    PointerAuth,
    InstructionAbortLowerEl,
    InstructionAbortSameEl,
    PcAlignment,
    DataAbortLowerEl,
    DataAbortSameEl,
    SpAlignment,
    FpException,
    SError,
    BreakpointLowerEl,
    BreakpointSameEl,
    SoftwareStepLowerEl,
    SoftwareStepSameEl,
    WatchpointLowerEl,
    WatchpointSameEl,
    Brk,
    /// A class this decoder does not name; the raw EC value.
    Other(u8),
}

impl ExceptionClass {
    pub fn from_esr(esr: u64) -> Self {
        use ExceptionClass::*;
        match ((esr >> 26) & 0x3f) as u8 {
            0x00 => Unknown,
            0x01 => WfiWfe,
            0x07 => SimdFp,
            0x0e => IllegalExecutionState,
            0x15 => Svc64,
            0x16 => Hvc64,
            0x17 => Smc64,
            0x18 => SysReg,
            0x19 => Sve,
            0x1c => PointerAuth,
            0x20 => InstructionAbortLowerEl,
            0x21 => InstructionAbortSameEl,
            0x22 => PcAlignment,
            0x24 => DataAbortLowerEl,
            0x25 => DataAbortSameEl,
            0x26 => SpAlignment,
            0x2c => FpException,
            0x2f => SError,
            0x30 => BreakpointLowerEl,
            0x31 => BreakpointSameEl,
            0x32 => SoftwareStepLowerEl,
            0x33 => SoftwareStepSameEl,
            0x34 => WatchpointLowerEl,
            0x35 => WatchpointSameEl,
            0x3c => Brk,
            other => Other(other),
        }
    }

    /// What the Arm ARM calls this class, for crash reports.
    pub fn description(self) -> &'static str {
        use ExceptionClass::*;
        match self {
            Unknown => "unknown reason",
            WfiWfe => "trapped WFI/WFE",
            SimdFp => "trapped SIMD/FP access",
            IllegalExecutionState => "illegal execution state",
            Svc64 => "SVC (AArch64)",
            Hvc64 => "HVC (AArch64)",
            Smc64 => "SMC (AArch64)",
            SysReg => "trapped MSR/MRS/system instruction",
            Sve => "trapped SVE access",
            PointerAuth => "pointer authentication failure",
            InstructionAbortLowerEl => "instruction abort from a lower EL",
            InstructionAbortSameEl => "instruction abort from the current EL",
            PcAlignment => "PC alignment fault",
            DataAbortLowerEl => "data abort from a lower EL",
            DataAbortSameEl => "data abort from the current EL",
            SpAlignment => "SP alignment fault",
            FpException => "floating-point exception",
            SError => "SError interrupt",
            BreakpointLowerEl => "breakpoint from a lower EL",
            BreakpointSameEl => "breakpoint from the current EL",
            SoftwareStepLowerEl => "software step from a lower EL",
            SoftwareStepSameEl => "software step from the current EL",
            WatchpointLowerEl => "watchpoint from a lower EL",
            WatchpointSameEl => "watchpoint from the current EL",
            Brk => "BRK instruction",
            Other(_) => "unallocated exception class",
        }
    }
}

/// Data/instruction fault status code (ISS.DFSC/IFSC, bits [5:0]) in words.
pub fn fault_status_description(fsc: u8) -> &'static str {
    match fsc {
        0x00..=0x03 => "address size fault",
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x11 => "synchronous tag check fault",
        0x14..=0x17 => "synchronous external abort on table walk",
        0x21 => "alignment fault",
        0x30 => "TLB conflict abort",
        _ => "other fault",
    }
}

/// A decoded ESR value, printed as the class, IL, ISS and (for aborts) the
/// fault status and level.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    pub fn class(self) -> ExceptionClass {
        ExceptionClass::from_esr(self.0)
    }

    pub fn iss(self) -> u32 {
        (self.0 & 0x01ff_ffff) as u32
    }

    /// The instruction was 32 bits long (IL, bit 25).
    pub fn il32(self) -> bool {
        self.0 & (1 << 25) != 0
    }

    fn is_abort(self) -> bool {
        matches!(
            self.class(),
            ExceptionClass::DataAbortLowerEl
                | ExceptionClass::DataAbortSameEl
                | ExceptionClass::InstructionAbortLowerEl
                | ExceptionClass::InstructionAbortSameEl
        )
    }
}

impl fmt::Display for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.class();
        let ec = (self.0 >> 26) & 0x3f;
        write!(f, "{:#010x} (EC {:#04x}: {}, ISS {:#x}", self.0, ec, class.description(), self.iss())?;
        if self.is_abort() {
            let fsc = (self.0 & 0x3f) as u8;
            write!(f, ", {}", fault_status_description(fsc))?;
            if fsc <= 0x0f {
                write!(f, " at level {}", fsc & 3)?;
            }
            if matches!(class, ExceptionClass::DataAbortLowerEl | ExceptionClass::DataAbortSameEl) {
                let write = self.0 & (1 << 6) != 0;
                write!(f, ", {}", if write { "write" } else { "read" })?;
            }
        }
        write!(f, ")")
    }
}

impl fmt::Debug for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_abort_from_el2_is_decoded_with_fault_and_direction() {
        // EC 0x25, IL, DFSC 0x06 (level 2 translation fault), WnR = 1.
        let esr = Esr((0x25 << 26) | (1 << 25) | (1 << 6) | 0x06);
        assert_eq!(esr.class(), ExceptionClass::DataAbortSameEl);
        let text = format!("{esr}");
        assert!(text.contains("data abort from the current EL"), "{text}");
        assert!(text.contains("translation fault at level 2"), "{text}");
        assert!(text.contains("write"), "{text}");
    }

    #[test]
    fn hvc_and_unallocated_classes() {
        assert_eq!(ExceptionClass::from_esr(0x16 << 26), ExceptionClass::Hvc64);
        assert_eq!(ExceptionClass::from_esr(0x3f << 26), ExceptionClass::Other(0x3f));
        assert!(format!("{}", Esr(0x3f << 26)).contains("unallocated"));
    }
}
