//! A vCPU's architectural state beyond its general-purpose registers (which
//! live in its `TrapFrame`): the EL1 system registers a guest kernel uses,
//! FP/SIMD, the virtual timer and the virtual GIC CPU interface. Saved and
//! restored only when a physical CPU switches vCPUs; a trap that returns to
//! the same vCPU touches none of it.
//!
//! FP/SIMD is switched eagerly: the hypervisor is built without FP/SIMD
//! (softfloat), so the registers are the running vCPU's the whole time, and
//! a switch costs 34 loads and stores, cheaper than a trap to switch lazily.

use super::exception::TrapFrame;
use super::gic::HwListRegisters;
use super::sysreg::{read_sysreg, write_sysreg};

/// SPSR for a vCPU's first entry: EL1h, all of DAIF masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// SCTLR_EL1 at reset: MMU and caches off, RES1 bits set.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// FP/SIMD state: V0..V31, FPCR, FPSR.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default)]
pub struct FpState {
    pub v: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
}

extern "C" {
    fn fp_save(state: *mut FpState);
    fn fp_restore(state: *const FpState);
    /// Loads `frame` as the guest's registers on a fresh EL2 stack at
    /// `stack_top` and returns to the guest (see vectors.S).
    fn enter_guest(frame: *const TrapFrame, stack_top: usize) -> !;
}

core::arch::global_asm!(
    ".arch_extension fp",
    ".arch_extension simd",
    ".global fp_save",
    "fp_save:",
    "stp q0, q1, [x0, #0x000]",
    "stp q2, q3, [x0, #0x020]",
    "stp q4, q5, [x0, #0x040]",
    "stp q6, q7, [x0, #0x060]",
    "stp q8, q9, [x0, #0x080]",
    "stp q10, q11, [x0, #0x0a0]",
    "stp q12, q13, [x0, #0x0c0]",
    "stp q14, q15, [x0, #0x0e0]",
    "stp q16, q17, [x0, #0x100]",
    "stp q18, q19, [x0, #0x120]",
    "stp q20, q21, [x0, #0x140]",
    "stp q22, q23, [x0, #0x160]",
    "stp q24, q25, [x0, #0x180]",
    "stp q26, q27, [x0, #0x1a0]",
    "stp q28, q29, [x0, #0x1c0]",
    "stp q30, q31, [x0, #0x1e0]",
    "mrs x1, fpcr",
    "mrs x2, fpsr",
    "add x0, x0, #0x200",
    "stp x1, x2, [x0]",
    "ret",
    ".global fp_restore",
    "fp_restore:",
    "ldp q0, q1, [x0, #0x000]",
    "ldp q2, q3, [x0, #0x020]",
    "ldp q4, q5, [x0, #0x040]",
    "ldp q6, q7, [x0, #0x060]",
    "ldp q8, q9, [x0, #0x080]",
    "ldp q10, q11, [x0, #0x0a0]",
    "ldp q12, q13, [x0, #0x0c0]",
    "ldp q14, q15, [x0, #0x0e0]",
    "ldp q16, q17, [x0, #0x100]",
    "ldp q18, q19, [x0, #0x120]",
    "ldp q20, q21, [x0, #0x140]",
    "ldp q22, q23, [x0, #0x160]",
    "ldp q24, q25, [x0, #0x180]",
    "ldp q26, q27, [x0, #0x1a0]",
    "ldp q28, q29, [x0, #0x1c0]",
    "ldp q30, q31, [x0, #0x1e0]",
    "add x0, x0, #0x200",
    "ldp x1, x2, [x0]",
    "msr fpcr, x1",
    "msr fpsr, x2",
    "ret",
);

const _: () = assert!(core::mem::offset_of!(FpState, fpcr) == 0x200);

/// EL1 system registers, virtual timer and virtual CPU interface state.
#[derive(Clone, Copy)]
pub struct El1Context {
    sctlr: u64,
    ttbr0: u64,
    ttbr1: u64,
    tcr: u64,
    mair: u64,
    amair: u64,
    vbar: u64,
    contextidr: u64,
    tpidr_el0: u64,
    tpidrro_el0: u64,
    tpidr_el1: u64,
    sp_el0: u64,
    sp_el1: u64,
    elr_el1: u64,
    spsr_el1: u64,
    esr_el1: u64,
    far_el1: u64,
    afsr0: u64,
    afsr1: u64,
    par: u64,
    cpacr: u64,
    csselr: u64,
    cntkctl: u64,
    cntv_ctl: u64,
    cntv_cval: u64,
    cntvoff: u64,
    vmpidr: u64,
    vgic_vmcr: u64,
    fp: FpState,
}

impl El1Context {
    /// State of a vCPU that has never run: as after reset.
    pub fn reset(vmpidr: u64, cntvoff: u64) -> Self {
        El1Context {
            sctlr: SCTLR_EL1_RESET,
            ttbr0: 0,
            ttbr1: 0,
            tcr: 0,
            mair: 0,
            amair: 0,
            vbar: 0,
            contextidr: 0,
            tpidr_el0: 0,
            tpidrro_el0: 0,
            tpidr_el1: 0,
            sp_el0: 0,
            sp_el1: 0,
            elr_el1: 0,
            spsr_el1: 0,
            esr_el1: 0,
            far_el1: 0,
            afsr0: 0,
            afsr1: 0,
            par: 0,
            cpacr: 0,
            csselr: 0,
            cntkctl: 0,
            cntv_ctl: 0,
            cntv_cval: 0,
            cntvoff,
            vmpidr: vmpidr | (1 << 31),
            vgic_vmcr: 0,
            fp: FpState::default(),
        }
    }

    /// Saves the running vCPU's state from the CPU.
    pub fn save(&mut self) {
        self.sctlr = read_sysreg!("sctlr_el1");
        self.ttbr0 = read_sysreg!("ttbr0_el1");
        self.ttbr1 = read_sysreg!("ttbr1_el1");
        self.tcr = read_sysreg!("tcr_el1");
        self.mair = read_sysreg!("mair_el1");
        self.amair = read_sysreg!("amair_el1");
        self.vbar = read_sysreg!("vbar_el1");
        self.contextidr = read_sysreg!("contextidr_el1");
        self.tpidr_el0 = read_sysreg!("tpidr_el0");
        self.tpidrro_el0 = read_sysreg!("tpidrro_el0");
        self.tpidr_el1 = read_sysreg!("tpidr_el1");
        self.sp_el0 = read_sysreg!("sp_el0");
        self.sp_el1 = read_sysreg!("sp_el1");
        self.elr_el1 = read_sysreg!("elr_el1");
        self.spsr_el1 = read_sysreg!("spsr_el1");
        self.esr_el1 = read_sysreg!("esr_el1");
        self.far_el1 = read_sysreg!("far_el1");
        self.afsr0 = read_sysreg!("afsr0_el1");
        self.afsr1 = read_sysreg!("afsr1_el1");
        self.par = read_sysreg!("par_el1");
        self.cpacr = read_sysreg!("cpacr_el1");
        self.csselr = read_sysreg!("csselr_el1");
        self.cntkctl = read_sysreg!("cntkctl_el1");
        // Stop the timer before reading CVAL so it cannot fire for the
        // wrong vCPU once the next one runs.
        self.cntv_ctl = read_sysreg!("cntv_ctl_el0");
        write_sysreg!("cntv_ctl_el0", 0);
        self.cntv_cval = read_sysreg!("cntv_cval_el0");
        self.cntvoff = read_sysreg!("cntvoff_el2");
        self.vmpidr = read_sysreg!("vmpidr_el2");
        self.vgic_vmcr = HwListRegisters.vmcr();
        // SAFETY: `fp` is a properly aligned FpState owned by this context.
        unsafe { fp_save(&mut self.fp) };
    }

    /// Loads this vCPU's state into the CPU.
    pub fn restore(&self) {
        write_sysreg!("sctlr_el1", self.sctlr);
        write_sysreg!("ttbr0_el1", self.ttbr0);
        write_sysreg!("ttbr1_el1", self.ttbr1);
        write_sysreg!("tcr_el1", self.tcr);
        write_sysreg!("mair_el1", self.mair);
        write_sysreg!("amair_el1", self.amair);
        write_sysreg!("vbar_el1", self.vbar);
        write_sysreg!("contextidr_el1", self.contextidr);
        write_sysreg!("tpidr_el0", self.tpidr_el0);
        write_sysreg!("tpidrro_el0", self.tpidrro_el0);
        write_sysreg!("tpidr_el1", self.tpidr_el1);
        write_sysreg!("sp_el0", self.sp_el0);
        write_sysreg!("sp_el1", self.sp_el1);
        write_sysreg!("elr_el1", self.elr_el1);
        write_sysreg!("spsr_el1", self.spsr_el1);
        write_sysreg!("esr_el1", self.esr_el1);
        write_sysreg!("far_el1", self.far_el1);
        write_sysreg!("afsr0_el1", self.afsr0);
        write_sysreg!("afsr1_el1", self.afsr1);
        write_sysreg!("par_el1", self.par);
        write_sysreg!("cpacr_el1", self.cpacr);
        write_sysreg!("csselr_el1", self.csselr);
        write_sysreg!("cntkctl_el1", self.cntkctl);
        write_sysreg!("cntvoff_el2", self.cntvoff);
        write_sysreg!("cntv_cval_el0", self.cntv_cval);
        write_sysreg!("cntv_ctl_el0", self.cntv_ctl);
        write_sysreg!("vmpidr_el2", self.vmpidr);
        HwListRegisters.set_vmcr(self.vgic_vmcr);
        // SAFETY: `fp` is a properly aligned FpState owned by this context.
        unsafe { fp_restore(&self.fp) };
    }
}

/// Enters the guest with `frame` as its registers, on the EL2 stack whose
/// top is `stack_top` (everything on it is discarded).
pub fn enter(frame: &TrapFrame, stack_top: usize) -> ! {
    // SAFETY: `frame` is a valid TrapFrame; `stack_top` is this CPU's own
    // EL2 stack, which holds nothing the caller needs (this never returns).
    unsafe { enter_guest(frame, stack_top) }
}
