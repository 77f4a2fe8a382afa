//! The CPU identification registers a guest sees (HCR_EL2.TID3 traps its
//! reads of the ID group 3 space: op0 3, op1 0, CRn 0, CRm 1..7): the real
//! value, cut down to what the hypervisor supports and switches per vCPU.
//! A feature is shown only if a guest can use it without reaching another
//! VM's state, and without state the hypervisor does not save; everything
//! else reads as "not implemented", and its registers and instructions
//! trap or are disabled at EL2 (noted below). docs/security-model.md has
//! the same table for readers.
//!
//! | feature | guest sees | why |
//! |---|---|---|
//! | FP, AdvSIMD, the base ISA extensions (ISAR0/1/2: AES, SHA, atomics, RDM, DotProd, FHM, LRCPC, JSCVT, FCMA, FRINTTS, SB, SPECRES, BF16, I8MM, DGH, XS, RPRES, BC, CLRBHB, CSSC, RPRFM, PRFMSLC, RNDR, ...) | as the CPU | only general-purpose and FP/SIMD state, which is switched |
//! | PAuth (APA/API/GPA/GPI, APA3/GPA3, PAC_frac) | as the CPU | keys switched per vCPU (`arch::vcpu`), HCR_EL2.API/APK let guests use them |
//! | BTI, SSBS, DIT, CSV3 | as the CPU | PSTATE bits, saved with SPSR |
//! | CSV2 | at most 1, CSV2_frac at most 1 | CSV2 2 adds SCXTNUM_EL0/EL1, not switched |
//! | RAS | at most v1, RAS_frac 0 | the error records trap (HCR_EL2.TERR) and read as zero (no records); VDISR_EL2/VSESR_EL2 are per vCPU |
//! | GIC system registers | 1 on GICv3, else 0 | the vGIC's interface |
//! | EL0, EL1 | AArch64 only | HCR_EL2.RW; AArch32 EL0 is not supported (its exceptions are answered with UNDEF) |
//! | EL2, SEL2, VH, NV, FGT, HCX, TWED, EVT, FWB, TIDCP1, ECV > 1 | not implemented | no nested virtualisation |
//! | SVE, SME (and ZFR0, SMFR0) | not implemented | their state is not switched; CPTR_EL2.TZ/TSM trap them (UNDEF) |
//! | MTE | not implemented | tag state and tagged stage 2 are not supported; HCR_EL2.ATA = 0 |
//! | PMU, SPE, trace, BRBE, TRBE | not implemented | MDCR_EL2 traps PMU, debug and trace registers; they read as zero |
//! | self-hosted debug | Armv8.0 (DebugVer 6), breakpoint counts as the CPU, no double lock | debug registers trap and read as zero, writes ignored: breakpoints and watchpoints never fire |
//! | AMU | not implemented | CPTR_EL2.TAM traps its registers (UNDEF) |
//! | MPAM | not implemented | not partitioned per VM |
//! | TME, LS64, MOPS, WFxT, LOR, SYSREG_128, ATS1A, GCS, THE, NMI, PFAR, DF2 | not implemented | new EL1 state or controls the hypervisor does not switch or enable |
//! | MMFR3/4, PFR2, ISAR3, DFR1, AFR0/1, FPFR0 (TCR2, S1PIE, S1POE, SCTLR2, FPMR, ...) | zero | new EL1 state not switched |
//! | PARange | at most the IPA size of its stage 2 | guest RAM and devices lie below it |
//! | AArch32 ID registers (CRm 1..3) | zero | no AArch32 at any EL a guest runs |
#![forbid(unsafe_code)]

/// An ID register of the group-3 space, by (CRm, op2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdReg {
    Pfr0,
    Pfr1,
    Dfr0,
    Isar0,
    Isar1,
    Isar2,
    Mmfr0,
    Mmfr1,
    Mmfr2,
    /// Every other encoding of the space (the AArch32 registers, those
    /// whose features are all hidden, and the unallocated ones): zero.
    Zero,
}

impl IdReg {
    /// The register at op0 3, op1 0, CRn 0, `crm`, `op2`, if that is the
    /// group-3 space (CRm 1..=7).
    pub const fn decode(crm: u8, op2: u8) -> Option<IdReg> {
        Some(match (crm, op2) {
            (4, 0) => IdReg::Pfr0,
            (4, 1) => IdReg::Pfr1,
            (5, 0) => IdReg::Dfr0,
            (6, 0) => IdReg::Isar0,
            (6, 1) => IdReg::Isar1,
            (6, 2) => IdReg::Isar2,
            (7, 0) => IdReg::Mmfr0,
            (7, 1) => IdReg::Mmfr1,
            (7, 2) => IdReg::Mmfr2,
            (1..=7, 0..=7) => IdReg::Zero,
            _ => return None,
        })
    }

    /// (CRm, op2) of a register the arch layer must read to sanitise it
    /// (`Zero` needs no read).
    pub const fn encoding(self) -> Option<(u8, u8)> {
        Some(match self {
            IdReg::Pfr0 => (4, 0),
            IdReg::Pfr1 => (4, 1),
            IdReg::Dfr0 => (5, 0),
            IdReg::Isar0 => (6, 0),
            IdReg::Isar1 => (6, 1),
            IdReg::Isar2 => (6, 2),
            IdReg::Mmfr0 => (7, 0),
            IdReg::Mmfr1 => (7, 1),
            IdReg::Mmfr2 => (7, 2),
            IdReg::Zero => return None,
        })
    }
}

/// What the guest's platform decides beyond the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPlatform {
    /// The vGIC is a GICv3 (system-register CPU interface).
    pub gic_v3: bool,
    /// ID_AA64MMFR0_EL1.PARange of the guest's IPA space (its stage 2).
    pub pa_range: u64,
}

/// The 4-bit field at `shift`.
const fn field(v: u64, shift: u32) -> u64 {
    (v >> shift) & 0xf
}

/// Keeps the fields at `shifts` of `real` (each as the CPU has it), zeroes
/// the rest.
const fn keep(real: u64, shifts: &[u32]) -> u64 {
    let mut out = 0;
    let mut i = 0;
    while i < shifts.len() {
        out |= field(real, shifts[i]) << shifts[i];
        i += 1;
    }
    out
}

/// `v` with the field at `shift` set to `value`.
const fn with(v: u64, shift: u32, value: u64) -> u64 {
    (v & !(0xf << shift)) | ((value & 0xf) << shift)
}

/// `v` with the (unsigned) field at `shift` at most `max`.
const fn at_most(v: u64, shift: u32, max: u64) -> u64 {
    let f = field(v, shift);
    if f > max { with(v, shift, max) } else { v }
}

/// The value a guest reads from `reg`, whose real value is `real`.
pub fn guest_view(reg: IdReg, real: u64, platform: GuestPlatform) -> u64 {
    match reg {
        IdReg::Pfr0 => {
            // EL0 [3:0], EL1 [7:4], EL3 [15:12], FP [19:16], AdvSIMD [23:20],
            // RAS [31:28], DIT [51:48], CSV2 [59:56], CSV3 [63:60] kept;
            // EL2 [11:8], SVE [35:32], SEL2 [39:36], MPAM [43:40],
            // AMU [47:44], RME [55:52] zero.
            let mut v = keep(real, &[16, 20, 28, 48, 56, 60]);
            v = with(v, 0, 1); // EL0: AArch64 only
            v = with(v, 4, 1); // EL1: AArch64 only
            v = with(v, 12, field(real, 12).min(1)); // EL3 present (SMC's meaning), AArch64
            v = with(v, 24, platform.gic_v3 as u64); // GIC [27:24]
            v = at_most(v, 28, 1); // RAS v1
            at_most(v, 56, 1) // CSV2 without SCXTNUM
        }
        // BT [3:0], SSBS [7:4], CSV2_frac [35:32] (at most 1).
        IdReg::Pfr1 => at_most(keep(real, &[0, 4, 32]), 32, 1),
        IdReg::Dfr0 => {
            // BRPs [15:12], WRPs [23:20], CTX_CMPs [31:28] as the CPU.
            let v = keep(real, &[12, 20, 28]);
            let v = with(v, 0, 6); // DebugVer: Armv8.0
            with(v, 36, 0xf) // DoubleLock: not implemented
        }
        IdReg::Isar0 => with(real, 24, 0), // TME [27:24]
        IdReg::Isar1 => with(real, 60, 0), // LS64 [63:60]
        IdReg::Isar2 => {
            // WFxT [3:0], MOPS [19:16], SYSREG_128 [35:32], SYSINSTR_128
            // [39:36], ATS1A [63:60].
            let mut v = real;
            for shift in [0, 16, 32, 36, 60] {
                v = with(v, shift, 0);
            }
            v
        }
        IdReg::Mmfr0 => {
            let v = at_most(real, 0, platform.pa_range); // PARange
            let v = with(v, 56, 0); // FGT
            at_most(v, 60, 1) // ECV without EL2's CNTPOFF
        }
        IdReg::Mmfr1 => {
            // HAFDBS [3:0] at most 2 (HAFT needs TCR2); VH [11:8], LO
            // [19:16], TWED [35:32], HCX [43:40], TIDCP1 [55:52] zero.
            let mut v = at_most(real, 0, 2);
            for shift in [8, 16, 32, 40, 52] {
                v = with(v, shift, 0);
            }
            v
        }
        IdReg::Mmfr2 => {
            // NV [27:24], FWB [43:40], EVT [59:56] zero.
            let mut v = real;
            for shift in [24, 40, 56] {
                v = with(v, shift, 0);
            }
            v
        }
        IdReg::Zero => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V3: GuestPlatform = GuestPlatform { gic_v3: true, pa_range: 2 };

    /// A CPU with everything: every field 0b0001..0b1111 somewhere.
    const ALL: u64 = 0x1111_1111_1111_1111;

    #[test]
    fn the_space_decodes_and_everything_unlisted_reads_as_zero() {
        assert_eq!(IdReg::decode(4, 0), Some(IdReg::Pfr0));
        assert_eq!(IdReg::decode(7, 2), Some(IdReg::Mmfr2));
        assert_eq!(IdReg::decode(4, 4), Some(IdReg::Zero), "ZFR0");
        assert_eq!(IdReg::decode(4, 5), Some(IdReg::Zero), "SMFR0");
        assert_eq!(IdReg::decode(1, 0), Some(IdReg::Zero), "ID_PFR0_EL1 (AArch32)");
        assert_eq!(IdReg::decode(7, 3), Some(IdReg::Zero), "MMFR3");
        assert_eq!(IdReg::decode(0, 0), None, "MIDR_EL1 is not group 3");
        assert_eq!(guest_view(IdReg::Zero, u64::MAX, V3), 0);
        for (crm, op2) in [(4, 0), (4, 1), (5, 0), (6, 0), (6, 1), (6, 2), (7, 0), (7, 1), (7, 2)] {
            assert_eq!(IdReg::decode(crm, op2).and_then(IdReg::encoding), Some((crm, op2)));
        }
    }

    #[test]
    fn sve_sme_mte_amu_mpam_el2_and_aarch32_are_hidden() {
        // A -cpu max-like PFR0: EL0..EL3 AArch32+64 (2), SVE 1, AMU 1, MPAM 1, CSV2 2, RAS 2.
        let pfr0 = 0x1201_1111_2211_2222u64;
        let v = guest_view(IdReg::Pfr0, pfr0, V3);
        assert_eq!(field(v, 0), 1, "EL0 AArch64 only");
        assert_eq!(field(v, 4), 1, "EL1 AArch64 only");
        assert_eq!(field(v, 8), 0, "no EL2");
        assert_eq!(field(v, 12), 1, "EL3 AArch64");
        assert_eq!(field(v, 24), 1, "GICv3 system registers");
        assert_eq!(field(v, 28), 1, "RAS v1");
        assert_eq!((field(v, 32), field(v, 36), field(v, 40), field(v, 44), field(v, 52)), (0, 0, 0, 0, 0), "SVE, SEL2, MPAM, AMU, RME");
        assert_eq!(field(v, 56), 1, "CSV2 without SCXTNUM");
        assert_eq!(field(guest_view(IdReg::Pfr0, pfr0, GuestPlatform { gic_v3: false, ..V3 }), 24), 0, "GICv2: no system registers");
        // PFR1: BT, SSBS kept; MTE, SME, NMI, GCS hidden.
        let pfr1 = guest_view(IdReg::Pfr1, ALL | (2 << 8) | (2 << 24) | (2 << 32), V3);
        assert_eq!(pfr1, 0x1 | (0x1 << 4) | (0x1 << 32));
    }

    #[test]
    fn pauth_bti_and_the_instruction_sets_are_shown_as_the_cpu_has_them() {
        // ISAR1: APA [7:4] 5, API [11:8] 0, GPA [27:24] 1, LS64 [63:60] 3.
        let isar1 = (5 << 4) | (1 << 24) | (3 << 60) | (1 << 36);
        assert_eq!(guest_view(IdReg::Isar1, isar1, V3), (5 << 4) | (1 << 24) | (1 << 36));
        // ISAR2: APA3 [15:12], GPA3 [11:8] kept; MOPS and WFxT hidden.
        let isar2 = (1 << 12) | (1 << 8) | (1 << 16) | 2;
        assert_eq!(guest_view(IdReg::Isar2, isar2, V3), (1 << 12) | (1 << 8));
        // ISAR0: TME hidden, the rest (AES 2, atomics 2, RNDR 1) kept.
        let isar0 = (2 << 4) | (2 << 20) | (1 << 24) | (1 << 60);
        assert_eq!(guest_view(IdReg::Isar0, isar0, V3), (2 << 4) | (2 << 20) | (1 << 60));
    }

    #[test]
    fn pmu_and_debug_are_reduced_to_what_the_traps_give() {
        // PMUVer 6, DebugVer 9, BRPs 5, WRPs 3, PMSVer 2, TraceFilt 1.
        let dfr0 = 9 | (1 << 4) | (6 << 8) | (5 << 12) | (3 << 20) | (1 << 28) | (2 << 32) | (1 << 40);
        let v = guest_view(IdReg::Dfr0, dfr0, V3);
        assert_eq!(v, 6 | (5 << 12) | (3 << 20) | (1 << 28) | (0xf << 36));
    }

    #[test]
    fn the_memory_model_is_limited_to_the_guest_ipa_space_and_stage_1() {
        // PARange 6 (52 bits), FGT 1, ECV 2, TGran4 0.
        let mmfr0 = 6 | (1 << 56) | (2 << 60);
        assert_eq!(guest_view(IdReg::Mmfr0, mmfr0, V3), 2 | (1 << 60));
        assert_eq!(guest_view(IdReg::Mmfr0, 1, V3), 1, "a smaller PARange stays");
        // HAFDBS 3 → 2, VH, LO, HCX hidden, PAN 3 kept.
        let mmfr1 = 3 | (1 << 8) | (1 << 16) | (3 << 20) | (1 << 40);
        assert_eq!(guest_view(IdReg::Mmfr1, mmfr1, V3), 2 | (3 << 20));
        // NV 2, FWB 1, EVT 2 hidden; CnP, UAO kept.
        let mmfr2 = 1 | (1 << 4) | (2 << 24) | (1 << 40) | (2 << 56);
        assert_eq!(guest_view(IdReg::Mmfr2, mmfr2, V3), 1 | (1 << 4));
    }
}
