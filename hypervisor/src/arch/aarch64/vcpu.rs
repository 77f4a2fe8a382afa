//! A vCPU's architectural state beyond its general-purpose registers (which
//! live in its `TrapFrame`): the EL1 system registers a guest kernel uses,
//! FP/SIMD, the virtual timer and the virtual GIC CPU interface. Saved and
//! restored only when a physical CPU switches vCPUs; a trap that returns to
//! the same vCPU touches none of it.
//!
//! Pointer-authentication keys are switched on CPUs with FEAT_PAuth (guests
//! use PAuth natively: HCR_EL2.API/APK), and a virtual SError stays with
//! its vCPU until taken (HCR_EL2.VSE, VSESR_EL2, VDISR_EL2 with FEAT_RAS).
//!
//! FP/SIMD is switched eagerly: the hypervisor is built without FP/SIMD
//! (softfloat), so the registers are the running vCPU's the whole time, and
//! a switch costs 34 loads and stores, cheaper than a trap to switch lazily.

use super::exception::TrapFrame;
use super::gic::{self, HwListRegisters};
use super::timer::VTIMER_PPI;
use crate::vgic::ListRegisters;
use aarch64_cpu::registers::{Readable, Writeable, HCR_EL2, CNTKCTL_EL1, CNTVOFF_EL2, CNTV_CTL_EL0, CNTV_CVAL_EL0, CPACR_EL1, CSSELR_EL1, ELR_EL1, ESR_EL1, FAR_EL1, MAIR_EL1, PAR_EL1, SCTLR_EL1, SPSR_EL1, SP_EL0, SP_EL1, TCR_EL1, TPIDRRO_EL0, TPIDR_EL0, TPIDR_EL1, TTBR0_EL1, TTBR1_EL1, VBAR_EL1};

// aarch64-cpu does not define AMAIR_EL1, CONTEXTIDR_EL1, AFSR0/1_EL1 and
// VMPIDR_EL2: those go through the by-name accessors.
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

/// What this CPU implements that decides which vCPU state exists to be
/// switched (read once from the ID registers; every CPU of the machine is
/// taken to be the same).
#[derive(Clone, Copy)]
struct CpuFeatures {
    /// FEAT_PAuth: the five key registers exist (reading them elsewhere is
    /// UNDEFINED).
    pauth: bool,
    /// FEAT_RAS: VSESR_EL2 and VDISR_EL2 exist.
    ras: bool,
}

static FEATURES: spin::Once<CpuFeatures> = spin::Once::new();

fn features() -> CpuFeatures {
    *FEATURES.call_once(|| {
        let isar1 = read_sysreg!("id_aa64isar1_el1");
        let isar2 = read_sysreg!("s3_0_c0_c6_2"); // ID_AA64ISAR2_EL1
        let pfr0 = read_sysreg!("id_aa64pfr0_el1");
        // APA [7:4], API [11:8], GPA [27:24], GPI [31:28]; ISAR2 APA3 [15:12], GPA3 [11:8].
        let pauth = isar1 & 0xff00_0ff0 != 0 || isar2 & 0xff00 != 0;
        let ras = (pfr0 >> 28) & 0xf != 0;
        CpuFeatures { pauth, ras }
    })
}

/// Does this CPU have FEAT_PAuth (and so per-vCPU keys)?
pub fn has_pauth() -> bool {
    features().pauth
}

/// HCR_EL2.VSE: a virtual SError is pending.
const HCR_VSE: u64 = 1 << 8;

/// Makes a virtual SError with ISS `syndrome` pending for the loaded vCPU,
/// or (None) none.
pub fn set_pending_serror(syndrome: Option<u64>) {
    let hcr = HCR_EL2.get();
    match syndrome {
        Some(iss) => {
            if features().ras {
                write_sysreg!("s3_4_c5_c2_3", iss); // VSESR_EL2
            }
            HCR_EL2.set(hcr | HCR_VSE);
        }
        None => HCR_EL2.set(hcr & !HCR_VSE),
    }
}

/// The loaded vCPU's pending virtual SError (its syndrome; 0 without RAS).
fn pending_serror() -> Option<u64> {
    if HCR_EL2.get() & HCR_VSE == 0 {
        return None;
    }
    Some(if features().ras { read_sysreg!("s3_4_c5_c2_3") } else { 0 })
}

/// Pointer-authentication keys: APIA, APIB, APDA, APDB, APGA, each Lo/Hi
/// (only switched on CPUs with FEAT_PAuth).
#[derive(Clone, Copy, Default)]
struct PauthKeys([u64; 10]);

impl PauthKeys {
    fn save(&mut self) {
        let k = &mut self.0;
        k[0] = read_sysreg!("s3_0_c2_c1_0"); // APIAKeyLo_EL1
        k[1] = read_sysreg!("s3_0_c2_c1_1"); // APIAKeyHi_EL1
        k[2] = read_sysreg!("s3_0_c2_c1_2"); // APIBKeyLo_EL1
        k[3] = read_sysreg!("s3_0_c2_c1_3"); // APIBKeyHi_EL1
        k[4] = read_sysreg!("s3_0_c2_c2_0"); // APDAKeyLo_EL1
        k[5] = read_sysreg!("s3_0_c2_c2_1"); // APDAKeyHi_EL1
        k[6] = read_sysreg!("s3_0_c2_c2_2"); // APDBKeyLo_EL1
        k[7] = read_sysreg!("s3_0_c2_c2_3"); // APDBKeyHi_EL1
        k[8] = read_sysreg!("s3_0_c2_c3_0"); // APGAKeyLo_EL1
        k[9] = read_sysreg!("s3_0_c2_c3_1"); // APGAKeyHi_EL1
    }

    fn restore(&self) {
        let k = &self.0;
        write_sysreg!("s3_0_c2_c1_0", k[0]);
        write_sysreg!("s3_0_c2_c1_1", k[1]);
        write_sysreg!("s3_0_c2_c1_2", k[2]);
        write_sysreg!("s3_0_c2_c1_3", k[3]);
        write_sysreg!("s3_0_c2_c2_0", k[4]);
        write_sysreg!("s3_0_c2_c2_1", k[5]);
        write_sysreg!("s3_0_c2_c2_2", k[6]);
        write_sysreg!("s3_0_c2_c2_3", k[7]);
        write_sysreg!("s3_0_c2_c3_0", k[8]);
        write_sysreg!("s3_0_c2_c3_1", k[9]);
    }
}

/// EL1 system registers, virtual timer and virtual CPU interface state.
#[derive(Clone, Copy)]
struct El1Context {
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
    /// Pointer-authentication keys (FEAT_PAuth only).
    pauth: PauthKeys,
    /// VDISR_EL2: a virtual SError deferred by the guest's ESB (FEAT_RAS only).
    vdisr: u64,
    /// A virtual SError injected and not yet taken (its ISS).
    serror: Option<u64>,
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
            pauth: PauthKeys::default(),
            vdisr: 0,
            serror: None,
            fp: FpState::default(),
        }
    }

    /// Saves the running vCPU's state from the CPU.
    pub fn save(&mut self) {
        self.sctlr = SCTLR_EL1.get();
        self.ttbr0 = TTBR0_EL1.get();
        self.ttbr1 = TTBR1_EL1.get();
        self.tcr = TCR_EL1.get();
        self.mair = MAIR_EL1.get();
        self.amair = read_sysreg!("amair_el1");
        self.vbar = VBAR_EL1.get();
        self.contextidr = read_sysreg!("contextidr_el1");
        self.tpidr_el0 = TPIDR_EL0.get();
        self.tpidrro_el0 = TPIDRRO_EL0.get();
        self.tpidr_el1 = TPIDR_EL1.get();
        self.sp_el0 = SP_EL0.get();
        self.sp_el1 = SP_EL1.get();
        self.elr_el1 = ELR_EL1.get();
        self.spsr_el1 = SPSR_EL1.get();
        self.esr_el1 = ESR_EL1.get();
        self.far_el1 = FAR_EL1.get();
        self.afsr0 = read_sysreg!("afsr0_el1");
        self.afsr1 = read_sysreg!("afsr1_el1");
        self.par = PAR_EL1.get();
        self.cpacr = CPACR_EL1.get();
        self.csselr = CSSELR_EL1.get();
        self.cntkctl = CNTKCTL_EL1.get();
        // Stop the timer before reading CVAL so it cannot fire for the
        // wrong vCPU once the next one runs.
        self.cntv_ctl = CNTV_CTL_EL0.get();
        CNTV_CTL_EL0.set(0);
        self.cntv_cval = CNTV_CVAL_EL0.get();
        self.cntvoff = CNTVOFF_EL2.get();
        self.vmpidr = read_sysreg!("vmpidr_el2");
        self.vgic_vmcr = HwListRegisters.vmcr();
        let f = features();
        if f.pauth {
            self.pauth.save();
        }
        if f.ras {
            self.vdisr = read_sysreg!("s3_4_c12_c1_1"); // VDISR_EL2
        }
        self.serror = pending_serror();
        set_pending_serror(None);
        // SAFETY: `fp` is a properly aligned FpState owned by this context.
        unsafe { fp_save(&mut self.fp) };
    }

    /// Loads this vCPU's state into the CPU.
    pub fn restore(&self) {
        SCTLR_EL1.set(self.sctlr);
        TTBR0_EL1.set(self.ttbr0);
        TTBR1_EL1.set(self.ttbr1);
        TCR_EL1.set(self.tcr);
        MAIR_EL1.set(self.mair);
        write_sysreg!("amair_el1", self.amair);
        VBAR_EL1.set(self.vbar);
        write_sysreg!("contextidr_el1", self.contextidr);
        TPIDR_EL0.set(self.tpidr_el0);
        TPIDRRO_EL0.set(self.tpidrro_el0);
        TPIDR_EL1.set(self.tpidr_el1);
        SP_EL0.set(self.sp_el0);
        SP_EL1.set(self.sp_el1);
        ELR_EL1.set(self.elr_el1);
        SPSR_EL1.set(self.spsr_el1);
        ESR_EL1.set(self.esr_el1);
        FAR_EL1.set(self.far_el1);
        write_sysreg!("afsr0_el1", self.afsr0);
        write_sysreg!("afsr1_el1", self.afsr1);
        PAR_EL1.set(self.par);
        CPACR_EL1.set(self.cpacr);
        CSSELR_EL1.set(self.csselr);
        CNTKCTL_EL1.set(self.cntkctl);
        CNTVOFF_EL2.set(self.cntvoff);
        CNTV_CVAL_EL0.set(self.cntv_cval);
        CNTV_CTL_EL0.set(self.cntv_ctl);
        write_sysreg!("vmpidr_el2", self.vmpidr);
        HwListRegisters.set_vmcr(self.vgic_vmcr);
        let f = features();
        if f.pauth {
            self.pauth.restore();
        }
        if f.ras {
            write_sysreg!("s3_4_c12_c1_1", self.vdisr);
        }
        // After `el2::configure_vm_traps` wrote HCR_EL2 for this vCPU.
        set_pending_serror(self.serror);
        // SAFETY: `fp` is a properly aligned FpState owned by this context.
        unsafe { fp_restore(&self.fp) };
    }
}

/// Everything of a vCPU's state that is architecture-specific: its EL1
/// system registers, FP/SIMD, virtual timer, and its share of the virtual
/// GIC CPU interface (list registers, active priorities, the physical
/// timer interrupt's active state). Generic code keeps it as
/// `VcpuContext::arch` and only ever asks it to save or load itself.
#[derive(Clone, Copy)]
pub struct VcpuArch {
    el1: El1Context,
    /// List registers and active priorities while the vCPU is not loaded.
    lrs: [u64; 16],
    apr: u64,
    /// The underflow maintenance interrupt was on (interrupts wait for a
    /// list register). Off while the vCPU is not loaded: with its list
    /// registers emptied it would fire at once, for whichever vCPU, or for
    /// none, runs next.
    underflow: bool,
    /// The physical virtual-timer PPI was active (the vCPU had not yet
    /// EOIed its timer interrupt) when it was switched out.
    vtimer_active: bool,
}

impl VcpuArch {
    /// As after reset: MPIDR `vmpidr`, virtual counter offset `cntvoff`.
    pub fn reset(vmpidr: u64, cntvoff: u64) -> Self {
        VcpuArch { el1: El1Context::reset(vmpidr, cntvoff), lrs: [0; 16], apr: 0, underflow: false, vtimer_active: false }
    }

    /// Saves the state of the vCPU this CPU was running and leaves the
    /// virtual CPU interface empty for the next one.
    pub fn save(&mut self) {
        self.el1.save();
        let mut lrs = HwListRegisters;
        for i in 0..lrs.count().min(16) {
            self.lrs[i] = lrs.read(i);
            lrs.write(i, 0);
        }
        self.underflow = lrs.underflow_irq();
        lrs.set_underflow_irq(false);
        self.apr = gic::active_priorities();
        gic::set_active_priorities(0);
        self.vtimer_active = gic::is_active(VTIMER_PPI);
        if self.vtimer_active {
            gic::set_active(VTIMER_PPI, false);
        }
    }

    /// Loads this vCPU's state into the CPU (the inverse of `save`).
    pub fn load(&self) {
        if self.vtimer_active {
            gic::set_active(VTIMER_PPI, true);
        }
        gic::set_active_priorities(self.apr);
        let mut lrs = HwListRegisters;
        for i in 0..lrs.count().min(16) {
            lrs.write(i, self.lrs[i]);
        }
        lrs.set_underflow_irq(self.underflow);
        self.el1.restore();
    }
}

/// The loaded vCPU's stage-1 translation registers (TTBR0/1_EL1, TCR_EL1),
/// read while it is trapped at EL2.
pub fn loaded_stage1() -> crate::s1walk::Stage1Regs {
    crate::s1walk::Stage1Regs { ttbr0: TTBR0_EL1.get(), ttbr1: TTBR1_EL1.get(), tcr: TCR_EL1.get() }
}

/// Enters the guest with `frame` as its registers, on the EL2 stack whose
/// top is `stack_top` (everything on it is discarded).
pub fn enter(frame: &TrapFrame, stack_top: usize) -> ! {
    // SAFETY: `frame` is a valid TrapFrame; `stack_top` is this CPU's own
    // EL2 stack, which holds nothing the caller needs (this never returns).
    unsafe { enter_guest(frame, stack_top) }
}
