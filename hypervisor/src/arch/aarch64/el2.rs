//! EL2 control registers for running VMs. Every bit the hypervisor sets is
//! explained where it is set; nothing else writes these registers.

use aarch64_cpu::asm::barrier;

use aarch64_cpu::registers::{Readable, Writeable, CNTHCTL_EL2, CNTVOFF_EL2, CPTR_EL2, HCR_EL2, HPFAR_EL2, ID_AA64MMFR0_EL1, MIDR_EL1, VTCR_EL2, VTTBR_EL2};

// aarch64-cpu does not define MDCR_EL2, PMCR_EL0, VPIDR_EL2 and VMPIDR_EL2.
use super::sysreg::{read_sysreg, write_sysreg};
use crate::addr::PhysAddr;

/// HCR_EL2 while a VM runs (Arm ARM D23.2 "HCR_EL2").
pub const HCR_VM: u64 = {
    let vm = 1 << 0; // VM: stage-2 translation on.
    let swio = 1 << 1; // SWIO: a VM's DC ISW acts as DC CISW, so it can never discard another VM's dirty lines.
    let fmo = 1 << 3; // FMO: physical FIQs go to EL2; virtual FIQs to the VM.
    let imo = 1 << 4; // IMO: physical IRQs go to EL2; the VM gets virtual IRQs (and ICC_SGI1R_EL1 writes trap).
    let amo = 1 << 5; // AMO: physical SErrors go to EL2; virtual SErrors to the VM.
    let fb = 1 << 9; // FB: TLB and I-cache maintenance broadcast to the inner shareable domain, so a vCPU that moves between CPUs leaves no stale entries.
    let bsu_inner = 1 << 10; // BSU = 01: barriers are at least inner shareable, for the same reason.
    let twi = 1 << 13; // TWI: WFI traps, so a vCPU waiting for an interrupt gives its CPU back.
    // TWE: WFE traps too, so a vCPU spinning on a lock lets the others of its CPU (the holder
    // among them, perhaps) run; alone on its CPU it goes straight back (`sched::wait_for_event`).
    let twe = 1 << 14;
    let tsc = 1 << 19; // TSC: SMC traps; PSCI through SMC is emulated, anything else is NOT_SUPPORTED.
    let tid3 = 1 << 18; // TID3: ID group 3 registers trap; the VM sees the features the hypervisor supports (idregs.rs).
    let tidcp = 1 << 20; // TIDCP: implementation-defined system registers trap (UNDEF for the VM).
    let tacr = 1 << 21; // TACR: ACTLR_EL1 accesses trap (implementation-defined controls stay the hypervisor's).
    // TSW (bit 22) = 0: set/way maintenance runs natively; SWIO above makes it safe.
    let rw = 1 << 31; // RW: EL1 is AArch64.
    let apk = 1 << 40; // APK: pointer-authentication key registers do not trap.
    let terr = 1 << 36; // TERR: RAS error record registers trap (no records: they read as zero).
    let api = 1 << 41; // API: pointer-authentication instructions do not trap (the keys are switched per vCPU).
    // ATA (bit 56) = 0: no allocation-tag access (MTE is hidden).
    vm | swio | fmo | imo | amo | fb | bsu_inner | twi | twe | tid3 | tsc | tidcp | tacr | rw | terr | apk | api
};

/// MDCR_EL2 while a VM runs: debug and PMU registers trap, and the
/// hypervisor answers them (reads as zero, writes ignored), so VMs can
/// neither see nor disturb each other's or the hypervisor's counters and
/// breakpoints.
fn mdcr_value() -> u64 {
    let hpmn = (read_sysreg!("pmcr_el0") >> 11) & 0x1f; // HPMN: keep the reset partition (all counters "EL1's")
    let tpmcr = 1 << 5; // TPMCR: PMCR_EL0 accesses trap.
    let tpm = 1 << 6; // TPM: all other PMU accesses trap.
    let tde = 0; // TDE = 0: debug exceptions are not routed to EL2.
    let tda = 1 << 9; // TDA: debug register accesses trap.
    let tdosa = 1 << 10; // TDOSA: OS lock / power-down register accesses trap.
    let tdra = 1 << 11; // TDRA: debug ROM register accesses trap.
    hpmn | tpmcr | tpm | tde | tda | tdosa | tdra
}

/// CPTR_EL2 while a VM runs (E2H = 0 layout).
const CPTR_VM: u64 = {
    let res1 = 0x32ff; // RES1 bits [13:12], [9], [7:0].
    let tz = 1 << 8; // TZ: SVE traps (its larger register state is not switched); the VM gets UNDEF.
    // TFP (bit 10) = 0: FP/SIMD does not trap; the hypervisor itself never uses FP/SIMD registers (softfloat build), and a vCPU switch saves and restores them.
    // Bit 12 (RES1 above) is TSM with FEAT_SME: SME traps; the VM gets UNDEF.
    let tta = 1 << 20; // TTA: trace register accesses trap.
    let tam = 1 << 30; // TAM: activity monitor accesses trap (AMU is hidden); the VM gets UNDEF.
    // TCPAC (bit 31) = 0: the VM manages its own CPACR_EL1 (it enables FP for itself).
    res1 | tz | tta | tam
};

/// CNTHCTL_EL2 (E2H = 0 layout): the VM reads the physical counter but its
/// accesses to the EL1 physical timer trap; VMs use the virtual timer, which
/// each vCPU owns, and the hypervisor consistently denies the physical one.
const CNTHCTL_VM: u64 = {
    let el1pcten = 1 << 0; // EL1PCTEN: CNTPCT_EL0 readable at EL1/EL0.
    // EL1PCEN (bit 1) = 0: CNTP_CTL/CVAL/TVAL_EL0 trap.
    // EVNTEN (bit 2) = 0: no event stream.
    el1pcten
};

/// Programs the trap controls for running VMs on this CPU.
pub fn configure_vm_traps() {
    HCR_EL2.set(HCR_VM);
    write_sysreg!("mdcr_el2", mdcr_value());
    CPTR_EL2.set(CPTR_VM);
    CNTHCTL_EL2.set(CNTHCTL_VM);
    // VPIDR_EL2: the VM sees the real MIDR (errata workarounds need it).
    write_sysreg!("vpidr_el2", MIDR_EL1.get());
    barrier::isb(barrier::SY);
}

/// Points stage-2 translation at a VM's tables (VTTBR_EL2: VMID in bits
/// [55:48], table base below), with its VTCR_EL2.
pub fn set_stage2(vmid: u16, root: PhysAddr, vtcr: u64) {
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(((vmid as u64 & 0xff) << 48) | root.as_u64());
    barrier::isb(barrier::SY);
}

/// The MPIDR_EL1 value the running vCPU reads (VMPIDR_EL2); bit 31 is RES1.
pub fn set_vcpu_mpidr(mpidr: u64) {
    write_sysreg!("vmpidr_el2", mpidr | (1 << 31));
}

/// CNTVOFF_EL2: the VM's virtual counter = physical counter - offset.
pub fn set_virtual_counter_offset(offset: u64) {
    CNTVOFF_EL2.set(offset);
}

/// The faulting IPA of a stage-2 abort: HPFAR_EL2.FIPA (bits [43:4] hold
/// IPA[51:12]) plus the page offset from FAR_EL2.
pub fn fault_ipa(far: u64) -> u64 {
    ((HPFAR_EL2.get() & 0x0fff_ffff_fff0) << 8) | (far & 0xfff)
}

/// VTCR_EL2 for an IPA size of `ipa_bits` walked from `start_level`
/// (D23.2 "VTCR_EL2"), 4 KiB granule, cacheable inner-shareable walks.
pub fn vtcr_value(ipa_bits: u32, start_level: u8, pa_range: u64) -> u64 {
    let t0sz = 64 - ipa_bits as u64;
    let sl0 = match start_level {
        0 => 2,
        1 => 1,
        _ => 0,
    };
    let irgn0 = 1 << 8; // write-back read/write-allocate walks
    let orgn0 = 1 << 10;
    let sh0 = 3 << 12; // inner shareable
    let tg0_4k = 0 << 14;
    let ps = (pa_range & 7) << 16;
    let res1 = 1 << 31;
    t0sz | (sl0 << 6) | irgn0 | orgn0 | sh0 | tg0_4k | ps | res1
}

/// IPA size and stage-2 start level from ID_AA64MMFR0_EL1.PARange: the IPA
/// space as large as the physical one (dom0 is mapped 1:1), at most 48 bits.
pub fn stage2_geometry() -> (u32, u8, u64) {
    let pa_range = ID_AA64MMFR0_EL1.get() & 0xf;
    let bits = match pa_range {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    };
    let start_level = if bits >= 40 { 0 } else { 1 };
    (bits, start_level, pa_range.min(5))
}

/// Invalidates the stage-2 TLB and walk-cache entries for `ipa` of the VM
/// whose VMID is loaded in VTTBR_EL2, on all CPUs, and waits until done.
pub fn invalidate_ipa(ipa: u64) {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe { core::arch::asm!("dsb ishst", "tlbi ipas2e1is, {0}", "dsb ish", in(reg) ipa >> 12, options(nostack)) };
}

/// Invalidates every stage-1 and stage-2 TLB entry of the VM whose VMID is
/// loaded in VTTBR_EL2, on all CPUs.
pub fn flush_vm_tlbs() {
    // SAFETY: TLB invalidation only drops cached translations.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
}

/// Makes stage-2 entries just written visible to table walks on every CPU
/// (DSB ISHST); only invalid entries were changed, so no TLB maintenance.
pub fn publish_stage2_entries() {
    barrier::dsb(barrier::ISHST);
}
