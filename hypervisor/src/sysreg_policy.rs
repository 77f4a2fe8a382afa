//! What the hypervisor does with a VM's trapped system register access
//! (EC 0x18): the policy applied by `sysreg_trap`, kept pure so it is
//! host-tested. The syndrome itself is decoded by `hv_arm::esr::SysRegAccess`.

use crate::esr::SysRegAccess;

/// What the hypervisor does with this access from a VM.
pub const fn policy(access: SysRegAccess) -> SysRegPolicy {
    let SysRegAccess { op0, op1, crn, crm, op2, .. } = access;
    match (op0, op1, crn, crm, op2) {
        // The ID group 3 space (HCR_EL2.TID3): sanitised (`idregs`).
        (3, 0, 0, 1..=7, _) => match crate::idregs::IdReg::decode(crm, op2) {
            Some(reg) => SysRegPolicy::IdRegister(reg),
            None => SysRegPolicy::Undefined,
        },
        // RAS error records (HCR_EL2.TERR): ERRIDR_EL1 reads 0, so there
        // are none; ERRSELR_EL1, ERX*_EL1 RAZ/WI.
        (3, 0, 5, 3..=5, _) => SysRegPolicy::ReadsAsZeroWritesIgnored,
        // ICC_SGI1R_EL1: virtual SGIs through the vGIC.
        (3, 0, 12, 11, 5) => SysRegPolicy::GicSgi1r,
        // ICC_ASGI1R_EL1, ICC_SGI0R_EL1: group 0 / other-security SGIs
        // do not exist for a VM.
        (3, 0, 12, 11, 6) | (3, 0, 12, 11, 7) => SysRegPolicy::ReadsAsZeroWritesIgnored,
        // Debug, trace and OS-lock registers (op0 = 2): hidden.
        (2, _, _, _, _) => SysRegPolicy::ReadsAsZeroWritesIgnored,
        // PMU: PMCR..PMUSERENR, PMINTEN*, PMOVSSET (CRn 9, CRm 12..14),
        // PMEVCNTR/PMEVTYPER/PMCCFILTR (CRn 14, CRm 8..15): hidden.
        (3, 3, 9, 12..=14, _) | (3, 0, 9, 14, _) | (3, 3, 14, 8..=15, _) => SysRegPolicy::ReadsAsZeroWritesIgnored,
        // EL1 physical timer (CNTP_TVAL/CTL/CVAL_EL0): consistently denied.
        (3, 3, 14, 2, _) => SysRegPolicy::ReadsAsZeroWritesIgnored,
        // ACTLR_EL1: implementation-defined controls stay the hypervisor's.
        (3, 0, 1, 0, 1) => SysRegPolicy::ReadsAsZeroWritesIgnored,
        _ => SysRegPolicy::Undefined,
    }
}

/// The ISS fields that name the register and the direction of a trapped
/// access (ISS [21:0], EC 0x18), all but Rt [9:5].
pub const ISS_WITHOUT_RT: u64 = 0x3f_fc1f;
/// Those fields of an MSR ICC_SGI1R_EL1 (op0 3, op2 5, op1 0, CRn 12,
/// CRm 11, a write): `esr & ISS_WITHOUT_RT == SGI1R_WRITE` picks out the
/// hottest trapped register without decoding the syndrome.
pub const SGI1R_WRITE: u64 = (3 << 20) | (5 << 17) | (12 << 10) | (11 << 1);

/// The answer to a trapped system register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysRegPolicy {
    GicSgi1r,
    /// An ID register: reads give the guest's view; writes are UNDEFINED.
    IdRegister(crate::idregs::IdReg),
    ReadsAsZeroWritesIgnored,
    /// Inject UNDEF: implementation-defined or unknown registers.
    Undefined,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8, read: bool) -> SysRegAccess {
        SysRegAccess { op0, op1, crn, crm, op2, rt: 3, read }
    }

    #[test]
    fn trapped_sysreg_accesses_get_the_policy_for_their_register() {
        // ICC_SGI1R_EL1 write.
        assert_eq!(policy(access(3, 0, 12, 11, 5, false)), SysRegPolicy::GicSgi1r);
        // ICC_ASGI1R_EL1, ICC_SGI0R_EL1.
        assert_eq!(policy(access(3, 0, 12, 11, 6, false)), SysRegPolicy::ReadsAsZeroWritesIgnored);
        assert_eq!(policy(access(3, 0, 12, 11, 7, false)), SysRegPolicy::ReadsAsZeroWritesIgnored);
        // MDSCR_EL1 (op0 2, CRn 0, CRm 2, op2 2) read.
        assert_eq!(policy(access(2, 0, 0, 2, 2, true)), SysRegPolicy::ReadsAsZeroWritesIgnored);
        // PMCR_EL0 and CNTP_CTL_EL0.
        assert_eq!(policy(access(3, 3, 9, 12, 0, true)), SysRegPolicy::ReadsAsZeroWritesIgnored);
        assert_eq!(policy(access(3, 3, 14, 2, 1, false)), SysRegPolicy::ReadsAsZeroWritesIgnored);
        // ACTLR_EL1.
        assert_eq!(policy(access(3, 0, 1, 0, 1, true)), SysRegPolicy::ReadsAsZeroWritesIgnored);
        // ID_AA64PFR0_EL1 and an AArch32 ID register: sanitised.
        assert_eq!(policy(access(3, 0, 0, 4, 0, true)), SysRegPolicy::IdRegister(crate::idregs::IdReg::Pfr0));
        assert_eq!(policy(access(3, 0, 0, 2, 3, true)), SysRegPolicy::IdRegister(crate::idregs::IdReg::Zero));
        // ERRIDR_EL1: no error records.
        assert_eq!(policy(access(3, 0, 5, 3, 0, true)), SysRegPolicy::ReadsAsZeroWritesIgnored);
        // An implementation-defined register (CRn 15) is UNDEF.
        assert_eq!(policy(access(3, 1, 15, 2, 0, true)), SysRegPolicy::Undefined);
    }

    #[test]
    fn the_sgi1r_write_pattern_is_exactly_the_writes_of_icc_sgi1r_el1() {
        for rt in 0..32u64 {
            let esr = SGI1R_WRITE | (rt << 5) | (0x18 << 26) | (1 << 25);
            assert_eq!(esr & ISS_WITHOUT_RT, SGI1R_WRITE);
            let a = SysRegAccess::decode(esr);
            assert_eq!((policy(a), a.rt, a.read), (SysRegPolicy::GicSgi1r, rt as u8, false));
            // A read, or any other register: not the pattern.
            assert_ne!((esr | 1) & ISS_WITHOUT_RT, SGI1R_WRITE);
            for field in [20, 17, 14, 10, 1] {
                assert_ne!((esr ^ (1 << field)) & ISS_WITHOUT_RT, SGI1R_WRITE, "bit {field}");
            }
        }
    }
}
