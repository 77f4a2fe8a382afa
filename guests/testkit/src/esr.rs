//! Decoding the Exception Syndrome Register (Arm ARM D24.2.41, ESR_EL1) for
//! reports: exception class names and data/instruction fault status codes.

/// ESR.EC, bits [31:26].
pub const fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

pub const EC_UNKNOWN: u8 = 0x00;
pub const EC_HVC64: u8 = 0x16;
pub const EC_INSTRUCTION_ABORT_SAME_EL: u8 = 0x21;
pub const EC_DATA_ABORT_SAME_EL: u8 = 0x25;

pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason (undefined instruction)",
        0x01 => "WFI/WFE",
        0x07 => "FP/SIMD access",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "system register access",
        0x20 => "instruction abort from lower EL",
        0x21 => "instruction abort",
        0x22 => "PC alignment",
        0x24 => "data abort from lower EL",
        0x25 => "data abort",
        0x26 => "SP alignment",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// Data/instruction fault status code (ISS bits [5:0]) in words.
pub fn fault_name(esr: u64) -> &'static str {
    match esr & 0x3f {
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

/// The lookup level of a translation/address-size/access/permission fault.
pub fn fault_level(esr: u64) -> Option<u8> {
    match esr & 0x3f {
        0x00..=0x0f => Some((esr & 3) as u8),
        0x14..=0x17 => Some((esr & 3) as u8),
        _ => None,
    }
}

/// Was the fault found by this EL's own (stage 1) translation, as opposed to
/// an abort reported from outside (an external abort, which is what a
/// hypervisor injects for a stage-2 miss and what the bus reports bare)?
pub fn is_stage1_translation_fault(esr: u64) -> bool {
    matches!(esr & 0x3f, 0x00..=0x0f)
}

/// ISS.WnR: the aborted access was a write.
pub fn is_write(esr: u64) -> bool {
    esr & (1 << 6) != 0
}

/// `"<fault> (level n)"`-style description used in reports.
pub struct Fault(pub u64);

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let esr = self.0;
        let ec = exception_class(esr);
        if ec != EC_DATA_ABORT_SAME_EL && ec != EC_INSTRUCTION_ABORT_SAME_EL {
            return write!(f, "{} (ESR {esr:#x})", class_name(ec));
        }
        write!(f, "{}", fault_name(esr))?;
        if let Some(level) = fault_level(esr) {
            write!(f, " level {level}")?;
        }
        if is_stage1_translation_fault(esr) {
            write!(f, " at stage 1")?;
        }
        write!(f, " (ESR {esr:#x})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_abort_syndromes_decode() {
        // EC 0x25, IL, DFSC 0x10: what QEMU reports for an unassigned address.
        let external = 0x9600_0010;
        assert_eq!(exception_class(external), EC_DATA_ABORT_SAME_EL);
        assert_eq!(fault_name(external), "synchronous external abort");
        assert!(!is_stage1_translation_fault(external));
        assert_eq!(format!("{}", Fault(external)), "synchronous external abort (ESR 0x96000010)");
        // Translation fault, level 0, write.
        let translation = 0x9600_0044;
        assert!(is_write(translation));
        assert_eq!(format!("{}", Fault(translation)), "translation fault level 0 at stage 1 (ESR 0x96000044)");
    }

    #[test]
    fn other_classes_name_themselves() {
        assert_eq!(format!("{}", Fault(0x0200_0000)), "unknown reason (undefined instruction) (ESR 0x2000000)");
        assert_eq!(class_name(EC_HVC64), "HVC");
    }
}
