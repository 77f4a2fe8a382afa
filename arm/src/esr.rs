//! Exception Syndrome Register decoding (Arm ARM D23.2 "ESR_EL2"; ESR_EL1
//! has the same layout for the classes named here).
//!
//! Pure functions over the raw value, so trap decoding is host-tested. The
//! hypervisor decodes the traps of its VMs with it; dom0 and the guests name
//! the exceptions of their crash reports with it.

use core::fmt;

/// The raw EC of the classes the trap path tests first.
pub const EC_HVC64: u8 = 0x16;
pub const EC_SYSREG: u8 = 0x18;
pub const EC_DATA_ABORT_LOWER_EL: u8 = 0x24;

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
    #[inline]
    pub fn from_esr(esr: u64) -> Self {
        use ExceptionClass::*;
        match ((esr >> 26) & 0x3f) as u8 {
            0x00 => Unknown,
            0x01 => WfiWfe,
            0x07 => SimdFp,
            0x0e => IllegalExecutionState,
            0x15 => Svc64,
            EC_HVC64 => Hvc64,
            0x17 => Smc64,
            EC_SYSREG => SysReg,
            0x19 => Sve,
            0x1c => PointerAuth,
            0x20 => InstructionAbortLowerEl,
            0x21 => InstructionAbortSameEl,
            0x22 => PcAlignment,
            EC_DATA_ABORT_LOWER_EL => DataAbortLowerEl,
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

/// The translation table level of a fault status code that has one
/// (address size, translation, access flag and permission faults, and
/// external aborts on a table walk): its low two bits.
pub const fn fault_level(fsc: u8) -> Option<u8> {
    match fsc {
        0x00..=0x0f | 0x14..=0x17 => Some(fsc & 3),
        _ => None,
    }
}

/// A decoded ESR value, printed as the class, IL, ISS and (for aborts) the
/// fault status and level.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    #[inline]
    pub fn class(self) -> ExceptionClass {
        ExceptionClass::from_esr(self.0)
    }

    /// The raw exception class (EC, bits [31:26]).
    pub const fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }

    /// The general-purpose register the trapped instruction transfers, as
    /// the syndrome names it (31: the zero register): SRT of a data abort
    /// with a syndrome (ISV = 1), Rt of an MSR/MRS. None when there is none
    /// (a data abort without a syndrome is answered without one).
    pub const fn transfer_register(self) -> Option<u8> {
        match self.ec() {
            EC_DATA_ABORT_LOWER_EL if self.0 & (1 << 24) != 0 => Some(((self.0 >> 16) & 0x1f) as u8),
            EC_SYSREG => Some(((self.0 >> 5) & 0x1f) as u8),
            _ => None,
        }
    }

    /// The fault status code of an abort (ISS.DFSC/IFSC, bits [5:0]).
    pub const fn fault_status(self) -> u8 {
        (self.0 & 0x3f) as u8
    }

    /// ISS.WnR of a data abort: the access was a write.
    pub const fn is_write(self) -> bool {
        self.0 & (1 << 6) != 0
    }

    /// ISS.TI of a trapped WFx (bits [1:0]; bit 0 set for WFE and WFET):
    /// the instruction waited for an event, not for an interrupt.
    pub const fn is_wfe(self) -> bool {
        self.0 & 1 != 0
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
        write!(f, "{:#010x} (EC {:#04x}: {}, ISS {:#x}", self.0, self.ec(), class.description(), self.iss())?;
        if self.is_abort() {
            let fsc = self.fault_status();
            write!(f, ", {}", fault_status_description(fsc))?;
            if fsc <= 0x0f {
                write!(f, " at level {}", fsc & 3)?;
            }
            if matches!(class, ExceptionClass::DataAbortLowerEl | ExceptionClass::DataAbortSameEl) {
                write!(f, ", {}", if self.is_write() { "write" } else { "read" })?;
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

/// Width of a data access (ISS.SAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessSize {
    Byte = 1,
    Half = 2,
    Word = 4,
    Double = 8,
}

impl AccessSize {
    pub const fn bytes(self) -> u64 {
        self as u64
    }

    /// The bits an access of this size carries.
    pub const fn mask(self) -> u64 {
        match self {
            AccessSize::Double => u64::MAX,
            other => (1u64 << (other.bytes() * 8)) - 1,
        }
    }
}

/// A data abort's syndrome, decoded (Arm ARM D23.2.x "ISS encoding for an
/// exception from a Data Abort").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataAbort {
    /// ISV = 1: a single load or store of a general-purpose register, which
    /// the hypervisor can emulate.
    Emulatable {
        size: AccessSize,
        /// SSE: sign-extend a load.
        sign_extend: bool,
        /// SRT: the transfer register (31 = XZR/WZR).
        register: u8,
        /// SF: the register is 64 bits wide (else 32, upper half zeroed).
        sixty_four: bool,
        /// WnR: a write.
        write: bool,
        /// AR: acquire/release semantics.
        acquire_release: bool,
    },
    /// ISV = 0: the instruction (load/store pair, SIMD register, writeback,
    /// ...) is not described by the syndrome; the hypervisor cannot emulate
    /// it and answers with an abort.
    NotDescribed { write: bool },
}

impl DataAbort {
    /// Decodes the ISS of a data abort (the caller checked the class).
    pub const fn decode(esr: u64) -> Self {
        let write = esr & (1 << 6) != 0;
        if esr & (1 << 24) == 0 {
            return DataAbort::NotDescribed { write };
        }
        let size = match (esr >> 22) & 3 {
            0 => AccessSize::Byte,
            1 => AccessSize::Half,
            2 => AccessSize::Word,
            _ => AccessSize::Double,
        };
        DataAbort::Emulatable {
            size,
            sign_extend: esr & (1 << 21) != 0,
            register: ((esr >> 16) & 0x1f) as u8,
            sixty_four: esr & (1 << 15) != 0,
            write,
            acquire_release: esr & (1 << 14) != 0,
        }
    }

    /// The value a load puts in the destination register: `raw` (already
    /// masked to the access size) sign-extended if SSE, then cut to 32 bits
    /// for a W register.
    pub const fn load_value(self, raw: u64) -> u64 {
        let DataAbort::Emulatable { size, sign_extend, sixty_four, .. } = self else {
            return 0;
        };
        let bits = size.bytes() * 8;
        let mask = size.mask();
        let mut value = raw & mask;
        if sign_extend && bits < 64 && value & (1 << (bits - 1)) != 0 {
            value |= !mask;
        }
        if !sixty_four {
            value &= 0xffff_ffff;
        }
        value
    }
}

/// Fault status of an abort: is it a stage-2 translation fault (the IPA is
/// not mapped) rather than a permission or other fault?
pub const fn is_translation_fault(esr: u64) -> bool {
    matches!(esr & 0x3f, 0x04..=0x07)
}

/// ISS.S1PTW (bit 7) of a stage-2 abort: the fault was on the guest's own
/// stage-1 translation table walk, not on the access itself.
pub const ISS_S1PTW: u64 = 1 << 7;
/// ISS.CM (bit 8) of a data abort: a cache maintenance instruction faulted.
const ISS_CM: u64 = 1 << 8;
/// ISS.WnR (bit 6) of a data abort.
const ISS_WNR: u64 = 1 << 6;
/// ESR.IL: a 32-bit instruction.
const IL: u64 = 1 << 25;
/// Fault status "synchronous external abort, not on a translation table
/// walk" (DFSC/IFSC 0b010000).
pub const FSC_EXTERNAL: u64 = 0x10;
/// Fault status "synchronous external abort on translation table walk,
/// level LL" (0b0101LL).
pub const FSC_EXTERNAL_WALK: u64 = 0x14;

/// Was the stage-2 abort `esr` taken on the guest's stage-1 table walk?
pub const fn is_s1ptw(esr: u64) -> bool {
    esr & ISS_S1PTW != 0
}

/// ISS.ISV (bit 24) of a data abort: ISS[23:14] describe the access.
const ISS_ISV: u64 = 1 << 24;
/// ISS.SAS (bits [23:22]): the access size.
const ISS_SAS: u64 = 3 << 22;
/// ISS.SSE (bit 21) and ISS.SF (bit 15): sign-extend, 64-bit register.
const ISS_SSE_SF: u64 = (1 << 21) | (1 << 15);

/// Is the data abort `esr` (the caller checked the class) a 32-bit load
/// the syndrome describes (ISV = 1, SAS = word, WnR = 0), not taken on the
/// guest's stage-1 table walk? One mask and one compare: the emulation's
/// hot path tests this before it looks at anything else.
#[inline(always)]
pub const fn is_described_word_load(esr: u64) -> bool {
    esr & (ISS_ISV | ISS_SAS | ISS_WNR | ISS_S1PTW) == ISS_ISV | (2 << 22)
}

/// What a 32-bit load (`is_described_word_load`) puts in its register:
/// `raw` sign-extended to 64 bits for LDRSW Xt (SSE and SF), else
/// zero-extended (a W register, or a 32-bit LDR into one whose upper half
/// is zeroed). `DataAbort::load_value` for a word, without the decode.
#[inline(always)]
pub const fn word_load_value(esr: u64, raw: u32) -> u64 {
    if esr & ISS_SSE_SF == ISS_SSE_SF {
        raw as i32 as i64 as u64
    } else {
        raw as u64
    }
}

/// ISS.SRT (bits [20:16]) of a data abort the syndrome describes: the
/// transfer register (31: XZR/WZR).
#[inline(always)]
pub const fn transfer_register_of_abort(esr: u64) -> usize {
    ((esr >> 16) & 0x1f) as usize
}

/// The ESR_EL1 a guest sees for the synchronous external abort that answers
/// the stage-2 abort `esr_el2` (an instruction or data abort from a lower
/// EL) taken with guest PSTATE `spsr`: an instruction abort for a fetch, a
/// data abort otherwise, from EL0 or from EL1 as the guest was, with
/// the direction (WnR) and cache-maintenance (CM) bits of the access, and
/// the fault status of an abort on the access itself, or, if the stage-2
/// fault was on the guest's table walk (`walk_level`: the stage-1 lookup
/// level, see `s1walk`), of an abort on the walk at that level (Arm ARM
/// D24.2 "ESR_EL1", ISS encodings for instruction and data aborts).
pub const fn injected_external_abort(esr_el2: u64, spsr: u64, walk_level: Option<u8>) -> u64 {
    let instruction = (esr_el2 >> 26) & 0x3f == 0x20;
    let from_el0 = spsr & 0xf == 0;
    let ec: u64 = match (instruction, from_el0) {
        (true, true) => 0x20,
        (true, false) => 0x21,
        (false, true) => 0x24,
        (false, false) => 0x25,
    };
    let access = if instruction { 0 } else { esr_el2 & (ISS_WNR | ISS_CM) };
    let fsc = match walk_level {
        Some(level) => FSC_EXTERNAL_WALK | (level as u64 & 3),
        None => FSC_EXTERNAL,
    };
    (ec << 26) | IL | access | fsc
}

/// A trapped MSR/MRS (EC 0x18), decoded (Arm ARM D23.2 "ISS encoding for
/// an exception from MSR, MRS, or System instruction execution").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// The general-purpose register transferred (31 = XZR).
    pub rt: u8,
    /// MRS (read) rather than MSR.
    pub read: bool,
}

impl SysRegAccess {
    pub const fn decode(esr: u64) -> Self {
        SysRegAccess {
            op0: ((esr >> 20) & 3) as u8,
            op2: ((esr >> 17) & 7) as u8,
            op1: ((esr >> 14) & 7) as u8,
            crn: ((esr >> 10) & 0xf) as u8,
            rt: ((esr >> 5) & 0x1f) as u8,
            crm: ((esr >> 1) & 0xf) as u8,
            read: esr & 1 != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

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

    fn abort(isv: bool, sas: u64, sse: bool, srt: u64, sf: bool, wnr: bool) -> u64 {
        (0x24 << 26) | ((isv as u64) << 24) | (sas << 22) | ((sse as u64) << 21) | (srt << 16) | ((sf as u64) << 15) | ((wnr as u64) << 6) | 0x07
    }

    /// The word-load shortcut agrees with the full decode for every
    /// combination of the fields it looks at, and with `load_value` on
    /// values with and without the sign bit.
    #[test]
    fn the_word_load_shortcut_matches_the_full_decode() {
        let mut word_loads = 0;
        for isv in [false, true] {
            for sas in 0..4 {
                for sse in [false, true] {
                    for sf in [false, true] {
                        for wnr in [false, true] {
                            for s1ptw in [0, ISS_S1PTW] {
                                let esr = abort(isv, sas, sse, 7, sf, wnr) | s1ptw;
                                let full = DataAbort::decode(esr);
                                let expected = s1ptw == 0 && matches!(full, DataAbort::Emulatable { size: AccessSize::Word, write: false, .. });
                                assert_eq!(is_described_word_load(esr), expected, "{esr:#x}");
                                if !expected {
                                    continue;
                                }
                                word_loads += 1;
                                assert_eq!(transfer_register_of_abort(esr), 7);
                                for raw in [0u32, 1, 0x7fff_ffff, 0x8000_0000, 0xdead_beef, u32::MAX] {
                                    assert_eq!(word_load_value(esr, raw), full.load_value(u64::from(raw)), "{esr:#x} {raw:#x}");
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(word_loads, 4, "SSE x SF");
    }

    #[test]
    fn data_abort_syndrome_fields_are_decoded() {
        let d = DataAbort::decode(abort(true, 2, false, 5, false, true));
        assert_eq!(
            d,
            DataAbort::Emulatable { size: AccessSize::Word, sign_extend: false, register: 5, sixty_four: false, write: true, acquire_release: false }
        );
        let d = DataAbort::decode(abort(true, 3, false, 31, true, false));
        assert!(matches!(d, DataAbort::Emulatable { size: AccessSize::Double, register: 31, sixty_four: true, write: false, .. }));
        let d = DataAbort::decode(abort(true, 0, true, 0, true, false));
        assert!(matches!(d, DataAbort::Emulatable { size: AccessSize::Byte, sign_extend: true, .. }));
        assert!(is_translation_fault(abort(true, 0, false, 0, false, false)));
    }

    #[test]
    fn load_pair_without_isv_is_not_emulatable() {
        assert_eq!(DataAbort::decode(abort(false, 3, false, 7, true, true)), DataAbort::NotDescribed { write: true });
    }

    #[test]
    fn loads_are_sign_extended_and_cut_to_register_width() {
        // LDRSB x: 0x80 -> 0xffff_ffff_ffff_ff80
        let ldrsb_x = DataAbort::decode(abort(true, 0, true, 1, true, false));
        assert_eq!(ldrsb_x.load_value(0x80), 0xffff_ffff_ffff_ff80);
        // LDRSB w: 0x80 -> 0xffff_ff80 (upper half zero)
        let ldrsb_w = DataAbort::decode(abort(true, 0, true, 1, false, false));
        assert_eq!(ldrsb_w.load_value(0x80), 0xffff_ff80);
        // LDRH w without sign: upper garbage masked off
        let ldrh = DataAbort::decode(abort(true, 1, false, 1, false, false));
        assert_eq!(ldrh.load_value(0xdead_8001), 0x8001);
        // LDRSW x: 0x8000_0000 -> 0xffff_ffff_8000_0000
        let ldrsw = DataAbort::decode(abort(true, 2, true, 1, true, false));
        assert_eq!(ldrsw.load_value(0x8000_0000), 0xffff_ffff_8000_0000);
        // LDR x: all 64 bits
        let ldr = DataAbort::decode(abort(true, 3, false, 1, true, false));
        assert_eq!(ldr.load_value(u64::MAX), u64::MAX);
    }

    fn sysreg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64, rt: u64, read: bool) -> u64 {
        (0x18 << 26) | (op0 << 20) | (op2 << 17) | (op1 << 14) | (crn << 10) | (rt << 5) | (crm << 1) | read as u64
    }

    #[test]
    fn trapped_sysreg_fields_are_decoded() {
        let sgi = SysRegAccess::decode(sysreg(3, 0, 12, 11, 5, 3, false));
        assert_eq!(sgi, SysRegAccess { op0: 3, op1: 0, crn: 12, crm: 11, op2: 5, rt: 3, read: false });
        // MDSCR_EL1 (op0 2, CRn 0, CRm 2, op2 2) read into x7.
        let mdscr = SysRegAccess::decode(sysreg(2, 0, 0, 2, 2, 7, true));
        assert_eq!(mdscr, SysRegAccess { op0: 2, op1: 0, crn: 0, crm: 2, op2: 2, rt: 7, read: true });
    }

    #[test]
    fn fault_status_level_and_direction() {
        // Translation fault, level 0, write (what a guest sees for an unmapped VA).
        let translation = Esr(0x9600_0044);
        assert_eq!(translation.ec(), 0x25);
        assert_eq!(translation.fault_status(), 0x04);
        assert!(translation.is_write());
        assert_eq!(fault_level(translation.fault_status()), Some(0));
        // Synchronous external abort (not on a table walk): no level.
        assert_eq!(fault_level(0x10), None);
        // External abort on a level-3 table walk.
        assert_eq!(fault_level(0x17), Some(3));
    }

    #[test]
    fn external_aborts_are_injected_as_the_guest_would_take_them() {
        let el1h = 0x3c5;
        let el0 = 0x0;
        // A fetch from an IPA with nothing behind it at EL1: EC 0x21, IFSC 0x10.
        let fetch = (0x20 << 26) | (1 << 25) | 0x06;
        assert_eq!(injected_external_abort(fetch, el1h, None), 0x8600_0010);
        assert_eq!(injected_external_abort(fetch, el0, None), 0x8200_0010);
        // A store from EL1: EC 0x25, WnR kept, DFSC 0x10 (ISV and SRT dropped).
        let store = (0x24 << 26) | (1 << 25) | (1 << 24) | (3 << 16) | (1 << 6) | 0x07;
        assert_eq!(injected_external_abort(store, el1h, None), 0x9600_0050);
        // A DC CIVAC (CM, WnR) from EL0: EC 0x24.
        let cmo = (0x24 << 26) | (1 << 25) | (1 << 8) | (1 << 6) | 0x05;
        assert_eq!(injected_external_abort(cmo, el0, None), 0x9200_0150);
        // A stage-1 walk for a load hit a hole: DFSC 0b0101LL at the stage-1 level.
        let walk = (0x24 << 26) | (1 << 25) | ISS_S1PTW | 0x06;
        assert!(is_s1ptw(walk) && !is_s1ptw(store));
        assert_eq!(injected_external_abort(walk, el1h, Some(2)), 0x9600_0016);
        assert_eq!(injected_external_abort(walk, el1h, Some(0)) & 0x3f, 0x14);
        // ... and for a fetch: IFSC 0b0101LL.
        let fetch_walk = (0x20 << 26) | (1 << 25) | ISS_S1PTW | 0x06;
        assert_eq!(injected_external_abort(fetch_walk, el1h, Some(3)), 0x8600_0017);
    }

    #[test]
    fn hvc_and_unallocated_classes() {
        assert_eq!(ExceptionClass::from_esr(0x16 << 26), ExceptionClass::Hvc64);
        assert_eq!(ExceptionClass::from_esr(0x3f << 26), ExceptionClass::Other(0x3f));
        assert!(format!("{}", Esr(0x3f << 26)).contains("unallocated"));
    }
}
