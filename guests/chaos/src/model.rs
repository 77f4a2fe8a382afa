//! The chaos guest's model, arch-neutral and host-tested: its random
//! numbers, the operations it draws, and for each operation the outcomes
//! the architecture (and the hypervisor's documented answers,
//! docs/security-model.md) allow. The guest (main.rs) carries the
//! operations out and judges each outcome with [`Expect::allows`].
#![cfg_attr(not(test), no_std)]

/// SplitMix64: small, seedable, good enough to spread choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the bias of a modulo is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `n` in 256.
    pub fn chance(&mut self, n: u64) -> bool {
        self.below(256) < n
    }

    /// An argument a fuzzer would pass: small numbers, all-ones, sign bits,
    /// addresses in RAM and outside it, or anything.
    pub fn argument(&mut self, ram: (u64, u64)) -> u64 {
        match self.below(8) {
            0 => self.below(16),
            1 => u64::MAX - self.below(4),
            2 => 1 << self.below(64),
            3 => ram.0 + self.below(ram.1) / 8 * 8,
            4 => ram.0 + ram.1 + self.below(1 << 20),
            5 => self.below(1 << 32),
            _ => self.next_u64(),
        }
    }
}

/// Exception classes (ESR_EL1.EC) the guest meets.
pub mod ec {
    pub const UNKNOWN: u8 = 0x00;
    pub const FP_ACCESS: u8 = 0x07;
    pub const SYSREG: u8 = 0x18;
    pub const SVE: u8 = 0x19;
    pub const SME: u8 = 0x1d;
    pub const INSTRUCTION_ABORT: u8 = 0x21;
    pub const PC_ALIGNMENT: u8 = 0x22;
    pub const DATA_ABORT: u8 = 0x25;
    pub const SP_ALIGNMENT: u8 = 0x26;
    pub const SERROR: u8 = 0x2f;
}

/// What an operation ended with: no exception, or the syndrome of the one
/// the guest took (and skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Exception { esr: u64 },
}

impl Outcome {
    pub fn class(self) -> Option<u8> {
        match self {
            Outcome::Completed => None,
            Outcome::Exception { esr } => Some(((esr >> 26) & 0x3f) as u8),
        }
    }
}

/// The outcomes allowed for one operation. `value` is what the operation
/// returned (a load's or MRS's register, a call's x0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No exception.
    Completes,
    /// No exception, or a synchronous data abort (a device may refuse an
    /// access: a width or offset it does not implement, no syndrome).
    CompletesOrDataAbort,
    /// A synchronous data abort: nothing is there.
    DataAbort,
    /// UNDEFINED (EC 0).
    Undefined,
    /// No exception and, for a read, 0: a register the hypervisor hides.
    ReadsAsZero,
    /// Read as zero, or UNDEFINED where the CPU does not have the register.
    ReadsAsZeroOrUndefined,
    /// Any value, or UNDEFINED.
    CompletesOrUndefined,
    /// An arbitrary system register: it exists (no exception), is
    /// UNDEFINED, or belongs to a feature whose traps to EL1 are on (FP,
    /// SVE, SME, or a trapped-to-EL1 register, EC 0x18).
    AnySysReg,
    /// No exception, and the call returned one of these (as `i64`).
    Returns(&'static [i64]),
    /// No exception, and the call returned exactly this.
    Value(u64),
}

impl Expect {
    pub fn allows(self, outcome: Outcome, value: u64) -> bool {
        let class = outcome.class();
        match self {
            Expect::Completes => class.is_none(),
            Expect::CompletesOrDataAbort => matches!(class, None | Some(ec::DATA_ABORT)),
            Expect::DataAbort => class == Some(ec::DATA_ABORT),
            Expect::Undefined => class == Some(ec::UNKNOWN),
            Expect::ReadsAsZero => class.is_none() && value == 0,
            Expect::ReadsAsZeroOrUndefined => (class.is_none() && value == 0) || class == Some(ec::UNKNOWN),
            Expect::CompletesOrUndefined => matches!(class, None | Some(ec::UNKNOWN)),
            Expect::AnySysReg => {
                matches!(class, None | Some(ec::UNKNOWN | ec::FP_ACCESS | ec::SYSREG | ec::SVE | ec::SME))
            }
            Expect::Returns(codes) => class.is_none() && codes.contains(&(value as i64)),
            Expect::Value(want) => class.is_none() && value == want,
        }
    }
}

/// What the guest does, one counter row each in its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    Hypercall,
    Psci,
    Smc,
    Load,
    Store,
    CacheByAddress,
    CacheBySetWay,
    SysRegRead,
    SysRegWrite,
    WaitStorm,
    TimerStorm,
    SgiStorm,
    CpuOffOn,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::Hypercall,
        Kind::Psci,
        Kind::Smc,
        Kind::Load,
        Kind::Store,
        Kind::CacheByAddress,
        Kind::CacheBySetWay,
        Kind::SysRegRead,
        Kind::SysRegWrite,
        Kind::WaitStorm,
        Kind::TimerStorm,
        Kind::SgiStorm,
        Kind::CpuOffOn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Hypercall => "hypercall",
            Kind::Psci => "psci",
            Kind::Smc => "smc",
            Kind::Load => "load",
            Kind::Store => "store",
            Kind::CacheByAddress => "dc-by-va",
            Kind::CacheBySetWay => "dc-by-set-way",
            Kind::SysRegRead => "mrs",
            Kind::SysRegWrite => "msr",
            Kind::WaitStorm => "wfi-wfe-storm",
            Kind::TimerStorm => "timer-storm",
            Kind::SgiStorm => "sgi-storm",
            Kind::CpuOffOn => "cpu-off-on",
        }
    }

    /// Draws the next operation: weights favour the cheap, many-outcome
    /// ones (accesses, calls, registers) over the storms.
    pub fn draw(rng: &mut Rng) -> Kind {
        const WEIGHTS: [(Kind, u64); 13] = [
            (Kind::Hypercall, 12),
            (Kind::Psci, 8),
            (Kind::Smc, 6),
            (Kind::Load, 20),
            (Kind::Store, 14),
            (Kind::CacheByAddress, 6),
            (Kind::CacheBySetWay, 4),
            (Kind::SysRegRead, 14),
            (Kind::SysRegWrite, 8),
            (Kind::WaitStorm, 2),
            (Kind::TimerStorm, 2),
            (Kind::SgiStorm, 2),
            (Kind::CpuOffOn, 1),
        ];
        let total: u64 = WEIGHTS.iter().map(|w| w.1).sum();
        let mut at = rng.below(total);
        for (kind, weight) in WEIGHTS {
            if at < weight {
                return kind;
            }
            at -= weight;
        }
        Kind::Load
    }
}

/// A system register encoding (op0, op1, CRn, CRm, op2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysReg {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

const fn reg(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> SysReg {
    SysReg { op0, op1, crn, crm, op2 }
}

impl SysReg {
    fn fields(self) -> u32 {
        ((self.op0 as u32 & 1) << 19)
            | ((self.op1 as u32 & 7) << 16)
            | ((self.crn as u32 & 15) << 12)
            | ((self.crm as u32 & 15) << 8)
            | ((self.op2 as u32 & 7) << 5)
    }

    /// `MRS x<rt>, S<op0>_<op1>_C<n>_C<m>_<op2>` (op0 is 2 or 3).
    pub fn mrs(self, rt: u32) -> u32 {
        0xd530_0000 | self.fields() | (rt & 31)
    }

    /// `MSR S<op0>_<op1>_C<n>_C<m>_<op2>, x<rt>`.
    pub fn msr(self, rt: u32) -> u32 {
        0xd510_0000 | self.fields() | (rt & 31)
    }

    /// Reads with side effects the guest cannot afford: acknowledging an
    /// interrupt (ICC_IAR0/IAR1/NMIAR1_EL1) leaves it active for ever.
    pub fn read_acknowledges(self) -> bool {
        matches!((self.op0, self.op1, self.crn, self.crm, self.op2), (3, 0, 12, 8, 0) | (3, 0, 12, 12, 0) | (3, 0, 12, 9, 5))
    }

    fn implementation_defined(self) -> bool {
        self.op0 == 3 && (self.crn == 11 || self.crn == 15)
    }
}

/// Registers the hypervisor traps and hides (RAZ/WI, security model):
/// PMU (MDCR_EL2.TPM), the EL1 physical timer (CNTHCTL_EL2), ACTLR_EL1
/// (HCR_EL2.TACR), the group 0 / alias SGI registers.
const HIDDEN: [SysReg; 9] = [
    reg(3, 3, 9, 12, 0),  // PMCR_EL0
    reg(3, 3, 9, 13, 0),  // PMCCNTR_EL0
    reg(3, 3, 14, 8, 0),  // PMEVCNTR0_EL0
    reg(3, 3, 14, 15, 7), // PMCCFILTR_EL0
    reg(3, 3, 14, 2, 0),  // CNTP_TVAL_EL0
    reg(3, 3, 14, 2, 1),  // CNTP_CTL_EL0
    reg(3, 3, 14, 2, 2),  // CNTP_CVAL_EL0
    reg(3, 0, 1, 0, 1),   // ACTLR_EL1
    reg(3, 0, 9, 14, 1),  // PMINTENSET_EL1
];

/// Debug registers (op0 2, MDCR_EL2.TDA/TDOSA) and RAS error records
/// (HCR_EL2.TERR): hidden when the CPU has them, UNDEFINED when it does not.
const HIDDEN_OR_ABSENT: [SysReg; 5] = [
    reg(2, 0, 0, 2, 2), // MDSCR_EL1
    reg(2, 0, 0, 0, 4), // DBGBVR0_EL1
    reg(2, 0, 1, 1, 4), // OSLSR_EL1
    reg(3, 0, 5, 3, 0), // ERRIDR_EL1
    reg(3, 0, 5, 3, 1), // ERRSELR_EL1
];

/// Registers any EL1 reads, trapped (ID registers, sanitised) or not.
const READABLE: [SysReg; 12] = [
    reg(3, 0, 0, 0, 0),  // MIDR_EL1
    reg(3, 0, 0, 0, 5),  // MPIDR_EL1
    reg(3, 0, 0, 4, 0),  // ID_AA64PFR0_EL1
    reg(3, 0, 0, 6, 0),  // ID_AA64ISAR0_EL1
    reg(3, 0, 0, 7, 0),  // ID_AA64MMFR0_EL1
    reg(3, 0, 1, 0, 0),  // SCTLR_EL1
    reg(3, 0, 2, 0, 2),  // TCR_EL1
    reg(3, 0, 10, 2, 0), // MAIR_EL1
    reg(3, 3, 14, 0, 0), // CNTFRQ_EL0
    reg(3, 3, 14, 0, 2), // CNTVCT_EL0
    reg(3, 3, 14, 3, 1), // CNTV_CTL_EL0
    reg(3, 3, 13, 0, 2), // TPIDR_EL0
];

/// EL1 registers that nothing the guest runs depends on: writes of any
/// value complete.
const SCRATCH_WRITABLE: [SysReg; 6] = [
    reg(3, 3, 13, 0, 2), // TPIDR_EL0
    reg(3, 3, 13, 0, 3), // TPIDRRO_EL0
    reg(3, 0, 13, 0, 1), // CONTEXTIDR_EL1
    reg(3, 0, 5, 1, 0),  // AFSR0_EL1
    reg(3, 0, 5, 1, 1),  // AFSR1_EL1
    reg(3, 0, 4, 1, 0),  // SP_EL0 (the guest runs on SP_EL1)
];

const ICC_SGI1R_EL1: SysReg = reg(3, 0, 12, 11, 5);

fn random_reg(rng: &mut Rng, op0: u8) -> SysReg {
    reg(op0, rng.below(8) as u8, rng.below(16) as u8, rng.below(16) as u8, rng.below(8) as u8)
}

/// An MRS to draw, and what it may give.
pub fn sysreg_read(rng: &mut Rng) -> (SysReg, Expect) {
    match rng.below(8) {
        0 => (rng.pick(&HIDDEN), Expect::ReadsAsZero),
        1 => (rng.pick(&HIDDEN_OR_ABSENT), Expect::ReadsAsZeroOrUndefined),
        2 => (rng.pick(&READABLE), Expect::Completes),
        3 => {
            // EL2 and EL3 registers (op1 4 and 6) and the EL12 aliases
            // (op1 5): UNDEFINED at EL1 without nested virtualisation.
            let mut r = random_reg(rng, 3);
            r.op1 = rng.pick(&[4, 5, 6]);
            (r, Expect::Undefined)
        }
        4 => {
            // Implementation-defined (HCR_EL2.TIDCP): UNDEFINED.
            let mut r = random_reg(rng, 3);
            r.crn = rng.pick(&[11, 15]);
            (r, Expect::Undefined)
        }
        _ => loop {
            let op0 = rng.pick(&[2, 3]);
            let r = random_reg(rng, op0);
            if !r.read_acknowledges() {
                break (r, if r.implementation_defined() { Expect::Undefined } else { Expect::AnySysReg });
            }
        },
    }
}

/// An MSR to draw and its allowed outcomes. Writes are never random
/// encodings in the space the guest runs on (SCTLR_EL1, VBAR_EL1, the
/// translation registers would end it): only registers it does not use,
/// hidden ones, ID registers, and encodings that are UNDEFINED at EL1.
pub fn sysreg_write(rng: &mut Rng, gic_v3: bool) -> (SysReg, Expect) {
    match rng.below(7) {
        0 => (rng.pick(&HIDDEN), Expect::Completes),
        1 => (rng.pick(&HIDDEN_OR_ABSENT), Expect::CompletesOrUndefined),
        2 => (rng.pick(&SCRATCH_WRITABLE), Expect::Completes),
        3 => {
            // ID registers are read-only.
            let r = reg(3, 0, 0, 1 + rng.below(7) as u8, rng.below(8) as u8);
            (r, Expect::Undefined)
        }
        4 => (ICC_SGI1R_EL1, if gic_v3 { Expect::Completes } else { Expect::CompletesOrUndefined }),
        5 => {
            let mut r = random_reg(rng, 3);
            r.crn = rng.pick(&[11, 15]);
            (r, Expect::Undefined)
        }
        _ => {
            let mut r = random_reg(rng, 3);
            r.op1 = rng.pick(&[4, 5, 6]);
            (r, Expect::Undefined)
        }
    }
}

/// PSCI and SMCCC function IDs (Arm DEN 0022, DEN 0028).
pub mod psci {
    pub const VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND: u32 = 0xc400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON: u32 = 0xc400_0003;
    pub const AFFINITY_INFO: u32 = 0xc400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const FEATURES: u32 = 0x8400_000a;
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INVALID_ADDRESS: i64 = -9;

    /// The calls that end or stop the caller: never drawn at random (the
    /// guest ends with SYSTEM_OFF, and CPU_OFF is its own operation).
    pub fn is_terminal(id: u32) -> bool {
        matches!(id, CPU_OFF | SYSTEM_OFF | SYSTEM_RESET)
    }
}

/// A random SMCCC function ID for `HVC #0` or `SMC #0` that is none of
/// the calls the guest issues on purpose: unknown services, unknown PSCI
/// and SMCCC functions, yielding calls. Upper 32 bits random (SMCCC
/// ignores them). Everything it can be is answered NOT_SUPPORTED, apart
/// from the known PSCI/SMCCC calls in the returned expectation.
pub fn unknown_smccc_call(rng: &mut Rng) -> (u64, Expect) {
    loop {
        let low: u32 = match rng.below(4) {
            0 => 0x8400_0000 | rng.below(0x40) as u32 | if rng.chance(128) { 0x4000_0000 } else { 0 },
            1 => 0x8000_0000 | rng.below(0x10) as u32 | if rng.chance(128) { 0x4000_0000 } else { 0 },
            2 => (rng.below(0x40) as u32) << 24 | rng.below(0x100) as u32 | 0x8000_0000,
            _ => rng.next_u64() as u32,
        };
        if psci::is_terminal(low) || low == psci::CPU_ON || low == psci::CPU_SUSPEND || low & 0xffff_0000 == 0xc600_0000 {
            continue;
        }
        let expect = match low {
            psci::VERSION | psci::SMCCC_VERSION => Expect::Value(0x1_0001),
            psci::MIGRATE_INFO_TYPE => Expect::Value(2),
            // x1 random: supported or not.
            psci::FEATURES | psci::SMCCC_ARCH_FEATURES => Expect::Returns(&[0, psci::NOT_SUPPORTED]),
            psci::AFFINITY_INFO => Expect::Returns(&[0, 1, 2, psci::INVALID_PARAMETERS]),
            _ => Expect::Value(psci::NOT_SUPPORTED as u64),
        };
        let high = if rng.chance(64) { rng.next_u64() << 32 } else { 0 };
        return (high | low as u64, expect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysreg_encodings_match_the_assembler() {
        // mrs x0, tpidr_el0; msr tpidr_el0, x3; mrs x5, mdscr_el1.
        assert_eq!(reg(3, 3, 13, 0, 2).mrs(0), 0xd53b_d040);
        assert_eq!(reg(3, 3, 13, 0, 2).msr(3), 0xd51b_d043);
        assert_eq!(reg(2, 0, 0, 2, 2).mrs(5), 0xd530_0245);
        // msr icc_sgi1r_el1, x0.
        assert_eq!(ICC_SGI1R_EL1.msr(0), 0xd518_cba0);
    }

    #[test]
    fn random_reads_never_acknowledge_interrupts_and_writes_stay_off_live_registers() {
        let mut rng = Rng::new(7);
        for _ in 0..100_000 {
            let (r, _) = sysreg_read(&mut rng);
            assert!(!r.read_acknowledges(), "{r:?}");
            let (w, expect) = sysreg_write(&mut rng, true);
            // Every write is to a listed register or expected UNDEFINED.
            let listed = HIDDEN.contains(&w) || HIDDEN_OR_ABSENT.contains(&w) || SCRATCH_WRITABLE.contains(&w) || w == ICC_SGI1R_EL1;
            assert!(listed || expect == Expect::Undefined, "{w:?} {expect:?}");
            if expect == Expect::Undefined {
                assert!(w.op1 >= 4 || w.implementation_defined() || (w.op1 == 0 && w.crn == 0), "{w:?}");
            }
        }
    }

    #[test]
    fn unknown_calls_are_never_terminal_and_expect_not_supported() {
        let mut rng = Rng::new(3);
        for _ in 0..100_000 {
            let (id, expect) = unknown_smccc_call(&mut rng);
            let low = id as u32;
            assert!(!psci::is_terminal(low) && low != psci::CPU_ON && low != psci::CPU_SUSPEND);
            assert_ne!(low & 0xffff_0000, 0xc600_0000);
            if ![psci::VERSION, psci::SMCCC_VERSION, psci::MIGRATE_INFO_TYPE, psci::FEATURES, psci::SMCCC_ARCH_FEATURES, psci::AFFINITY_INFO]
                .contains(&low)
            {
                assert_eq!(expect, Expect::Value(u64::MAX));
            }
        }
    }

    #[test]
    fn expectations_accept_exactly_their_outcomes() {
        let undef = Outcome::Exception { esr: 0x0200_0000 };
        let dabt = Outcome::Exception { esr: 0x9600_0010 };
        let ok = Outcome::Completed;
        assert!(Expect::DataAbort.allows(dabt, 0) && !Expect::DataAbort.allows(ok, 0));
        assert!(Expect::Undefined.allows(undef, 0) && !Expect::Undefined.allows(ok, 0) && !Expect::Undefined.allows(dabt, 0));
        assert!(Expect::ReadsAsZero.allows(ok, 0) && !Expect::ReadsAsZero.allows(ok, 5) && !Expect::ReadsAsZero.allows(undef, 0));
        assert!(Expect::ReadsAsZeroOrUndefined.allows(undef, 9) && !Expect::ReadsAsZeroOrUndefined.allows(ok, 9));
        assert!(Expect::CompletesOrDataAbort.allows(dabt, 0) && !Expect::CompletesOrDataAbort.allows(undef, 0));
        assert!(Expect::AnySysReg.allows(undef, 0) && !Expect::AnySysReg.allows(dabt, 0));
        assert!(Expect::Returns(&[-3]).allows(ok, (-3i64) as u64) && !Expect::Returns(&[-3]).allows(ok, 0));
        assert!(!Expect::Returns(&[-3]).allows(undef, (-3i64) as u64));
        assert!(Expect::Value(2).allows(ok, 2) && !Expect::Value(2).allows(ok, 3));
    }

    #[test]
    fn draws_cover_every_kind() {
        let mut rng = Rng::new(1);
        let mut seen = [false; Kind::ALL.len()];
        for _ in 0..10_000 {
            seen[Kind::draw(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert!(Kind::ALL.iter().enumerate().all(|(i, k)| *k as usize == i));
    }
}
