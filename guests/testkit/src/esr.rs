//! Fault reports for the test guests: what an ESR (Arm ARM D24.2.41,
//! ESR_EL1) says about a caught or unexpected exception, in the words of
//! `hv_arm::esr` (the decoder the hypervisor and dom0 use too).

pub use hv_arm::esr::Esr;
use hv_arm::esr::{fault_level, fault_status_description, ExceptionClass};

/// Was the fault found by this EL's own (stage 1) translation, as opposed to
/// an abort reported from outside (an external abort, which is what a
/// hypervisor injects for a stage-2 miss and what the bus reports bare)?
pub fn is_stage1_translation_fault(esr: u64) -> bool {
    matches!(Esr(esr).fault_status(), 0x00..=0x0f)
}

/// `"<fault> level n at stage 1 (ESR ..)"`-style description used in
/// reports; for an exception other than an abort at EL1, its class.
pub struct Fault(pub u64);

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let esr = Esr(self.0);
        let class = esr.class();
        if class != ExceptionClass::DataAbortSameEl && class != ExceptionClass::InstructionAbortSameEl {
            return write!(f, "{} (ESR {:#x})", class.description(), self.0);
        }
        write!(f, "{}", fault_status_description(esr.fault_status()))?;
        if let Some(level) = fault_level(esr.fault_status()) {
            write!(f, " level {level}")?;
        }
        if is_stage1_translation_fault(self.0) {
            write!(f, " at stage 1")?;
        }
        write!(f, " (ESR {:#x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_abort_syndromes_decode() {
        // EC 0x25, IL, DFSC 0x10: what QEMU reports for an unassigned address.
        let external = 0x9600_0010;
        assert_eq!(ExceptionClass::from_esr(external), ExceptionClass::DataAbortSameEl);
        assert!(!is_stage1_translation_fault(external));
        assert_eq!(format!("{}", Fault(external)), "synchronous external abort (ESR 0x96000010)");
        // Translation fault, level 0, write.
        let translation = 0x9600_0044;
        assert!(Esr(translation).is_write());
        assert_eq!(format!("{}", Fault(translation)), "translation fault level 0 at stage 1 (ESR 0x96000044)");
    }

    #[test]
    fn other_classes_name_themselves() {
        assert_eq!(format!("{}", Fault(0x0200_0000)), "unknown reason (ESR 0x2000000)");
        assert_eq!(format!("{}", Fault(0x16 << 26)), "HVC (AArch64) (ESR 0x58000000)");
    }
}
