//! The physical GIC, owned by the hypervisor: distributor set-up, each
//! CPU's interface, interrupt acknowledge/priority-drop/deactivate (EOImode
//! 1, so a guest's EOI of a hardware-linked virtual interrupt deactivates the
//! physical one), SGIs between physical CPUs, and the virtual CPU interface's
//! list registers (GICv2 GICH frame, GICv3 ICH_*_EL2). Register offsets and
//! fields are `hv_arm::gic`'s.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::cpu;
use aarch64_cpu::registers::*;

// aarch64-cpu does not define ICC_PMR/BPR1/IGRPEN1/IAR1/EOIR1/DIR/SGI1R_EL1
// and ICH_ELRSR_EL2, and defines ICC_CTLR_EL1 read-only: those go through
// the by-name accessors.
use super::sysreg::{read_sysreg, write_sysreg};
use hv_arm::gic::{gicc, gicd, gich, gicr, Sgi1r, GICC_CTLR, GICD_CTLR, GICD_SGIR, GICH_HCR, GICH_VTR, GICR_TYPER, GICR_WAKER};
use hv_arm::gic::{distributor_lines, redistributor_affinity, FIRST_SPECIAL_INTID};
use crate::platform::{Gic, GicVersion};
use crate::vgic::ListRegisters;

/// The SGI the hypervisor uses to make another physical CPU look at its
/// vCPU's pending interrupts.
pub const SGI_KICK: u32 = 0;
pub use hv_arm::gic::SPURIOUS;
/// Priority given to every physical interrupt (all equal: no preemption at EL2).
const DEFAULT_PRIORITY: u8 = 0xa0;

struct State {
    version: AtomicU8,
    gicd: AtomicUsize,
    gicc: AtomicUsize,
    gich: AtomicUsize,
    /// Number of list registers.
    lrs: AtomicUsize,
    /// Interrupt lines the distributor implements (32 * (ITLinesNumber + 1)).
    lines: AtomicUsize,
}

static GIC: State = State {
    version: AtomicU8::new(0),
    gicd: AtomicUsize::new(0),
    gicc: AtomicUsize::new(0),
    gich: AtomicUsize::new(0),
    lrs: AtomicUsize::new(0),
    lines: AtomicUsize::new(0),
};

/// Per physical CPU: GICv2 CPU-interface mask (for SGIR targets) or GICv3
/// redistributor frame address.
static CPU_IF: [AtomicUsize; cpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; cpu::MAX_CPUS];
/// Per physical CPU: MPIDR affinity (GICv3 SGI targets).
static CPU_MPIDR: [AtomicUsize; cpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; cpu::MAX_CPUS];

fn is_v3() -> bool {
    GIC.version.load(Ordering::Relaxed) == 3
}

fn reg32(base: &AtomicUsize, offset: usize) -> *mut u32 {
    (base.load(Ordering::Relaxed) + offset) as *mut u32
}

fn read32(base: &AtomicUsize, offset: usize) -> u32 {
    // SAFETY: GIC frames are mapped as device memory at boot (boot::map_gic)
    // before `init`; offsets are within the frames per the GIC spec.
    unsafe { reg32(base, offset).read_volatile() }
}

fn write32(base: &AtomicUsize, offset: usize, value: u32) {
    // SAFETY: as in `read32`; the hypervisor is the GIC's only driver.
    unsafe { reg32(base, offset).write_volatile(value) }
}

fn write64(base: usize, offset: usize, value: u64) {
    // SAFETY: as in `read32`; GICD_IROUTER and GICR_TYPER are 64-bit registers.
    unsafe { ((base + offset) as *mut u64).write_volatile(value) }
}

fn read64(base: usize, offset: usize) -> u64 {
    // SAFETY: as in `write64`.
    unsafe { ((base + offset) as *const u64).read_volatile() }
}

fn byte_write(base: &AtomicUsize, offset: usize, value: u8) {
    // SAFETY: as in `read32`; IPRIORITYR and ITARGETSR are byte-accessible.
    unsafe { ((base.load(Ordering::Relaxed) + offset) as *mut u8).write_volatile(value) }
}

fn wait_rwp() {
    while GICD_CTLR::RWP.is_set(read32(&GIC.gicd, gicd::CTLR)) {
        core::hint::spin_loop();
    }
}

/// Sets up the distributor: every SPI disabled, group 1, default priority,
/// routed to the boot CPU. Called once, on the boot CPU.
pub fn init(gic: &Gic) {
    let version = match gic.version {
        GicVersion::V2 => 2,
        GicVersion::V3 => 3,
    };
    GIC.version.store(version, Ordering::Relaxed);
    GIC.gicd.store(gic.gicd.base.as_u64() as usize, Ordering::Relaxed);
    GIC.gicc.store(gic.gicc.map_or(0, |r| r.base.as_u64() as usize), Ordering::Relaxed);
    GIC.gich.store(gic.gich.map_or(0, |r| r.base.as_u64() as usize), Ordering::Relaxed);
    let lines = distributor_lines(read32(&GIC.gicd, gicd::TYPER)) as usize;
    GIC.lines.store(lines, Ordering::Relaxed);

    write32(&GIC.gicd, gicd::CTLR, 0);
    if is_v3() {
        wait_rwp();
    }
    for word in 1..lines / 32 {
        write32(&GIC.gicd, gicd::ICENABLER + 4 * word, u32::MAX);
        write32(&GIC.gicd, gicd::ICPENDR + 4 * word, u32::MAX);
        write32(&GIC.gicd, gicd::ICACTIVER + 4 * word, u32::MAX);
        if version == 3 {
            // GICv3: group 1 (non-secure), taken through ICC_IAR1_EL1.
            // GICv2 keeps the groups it has: group 0 on a GIC without
            // security extensions (QEMU virt), where GICC_IAR only
            // acknowledges group 0; group 1 as the firmware set it up on
            // the Pi, whose non-secure GICC_IAR acknowledges group 1.
            write32(&GIC.gicd, gicd::IGROUPR + 4 * word, u32::MAX);
        }
    }
    for intid in 32..lines {
        byte_write(&GIC.gicd, gicd::IPRIORITYR + intid, DEFAULT_PRIORITY);
    }
    if !is_v3() {
        // Every SPI to the boot CPU until someone routes it elsewhere.
        let boot = read32(&GIC.gicd, gicd::ITARGETSR) & 0xff;
        for intid in 32..lines {
            byte_write(&GIC.gicd, gicd::ITARGETSR + intid, boot as u8);
        }
    }
    if is_v3() {
        wait_rwp();
        let boot = cpu::mpidr();
        for intid in 32..lines {
            write64(GIC.gicd.load(Ordering::Relaxed), gicd::IROUTER + 8 * intid, boot);
        }
        // Affinity routing, both groups enabled (GICD_CTLR with DS = 1:
        // ARE, EnableGrp1, EnableGrp0; with DS = 0 the non-secure view has
        // ARE_NS, EnableGrp1A and EnableGrp1 at the same bits).
        write32(&GIC.gicd, gicd::CTLR, (GICD_CTLR::ARE::SET + GICD_CTLR::EnableGrp1::SET + GICD_CTLR::EnableGrp0::SET).value);
        wait_rwp();
    } else {
        write32(&GIC.gicd, gicd::CTLR, (GICD_CTLR::EnableGrp1::SET + GICD_CTLR::EnableGrp0::SET).value);
    }
}

/// Sets up this CPU's interface (and, for GICv3, its redistributor) and the
/// virtual interface control. Called on every CPU, boot CPU first.
pub fn init_cpu(gic: &Gic) {
    let index = cpu::index();
    CPU_MPIDR[index].store(cpu::mpidr() as usize, Ordering::Relaxed);
    if is_v3() {
        init_cpu_v3(gic, index);
    } else {
        init_cpu_v2(index);
    }
}

fn init_cpu_v2(index: usize) {
    // ITARGETSR0..7 read back this CPU's own interface mask (IHI 0048 4.3.12).
    let mask = read32(&GIC.gicd, gicd::ITARGETSR) & 0xff;
    CPU_IF[index].store(mask as usize, Ordering::Relaxed);
    write32(&GIC.gicd, gicd::ICENABLER, u32::MAX);
    for intid in 0..32 {
        byte_write(&GIC.gicd, gicd::IPRIORITYR + intid, DEFAULT_PRIORITY);
    }
    write32(&GIC.gicc, gicc::PMR, 0xff);
    write32(&GIC.gicc, gicc::BPR, 0);
    // Enable both groups with split priority drop / deactivate (EOImode)
    // in the view of a GIC without security extensions (QEMU virt); in the
    // non-secure view (Pi 4) bits 0 and 9 are EnableGrp1 and EOImodeNS,
    // and the others are ignored.
    let ctlr = GICC_CTLR::EnableGrp0::SET + GICC_CTLR::EnableGrp1::SET + GICC_CTLR::EOImodeS::SET + GICC_CTLR::EOImodeNS::SET;
    write32(&GIC.gicc, gicc::CTLR, ctlr.value);
    let lrs = GICH_VTR::ListRegs.read(read32(&GIC.gich, gich::VTR)) as usize + 1;
    GIC.lrs.store(lrs, Ordering::Relaxed);
    for i in 0..lrs {
        write32(&GIC.gich, gich::LR0 + 4 * i, 0);
    }
    write32(&GIC.gich, gich::APR, 0);
    write32(&GIC.gich, gich::HCR, GICH_HCR::En::SET.value);
}

fn init_cpu_v3(gic: &Gic, index: usize) {
    let mpidr = cpu::mpidr();
    let want = redistributor_affinity(mpidr);
    let mut found = 0;
    'regions: for region in &gic.gicr {
        let mut frame = region.base.as_u64() as usize;
        let end = frame + region.size as usize;
        while frame < end {
            let typer = read64(frame, gicr::TYPER);
            if GICR_TYPER::AffinityValue.read(typer) == want {
                found = frame;
                break 'regions;
            }
            if GICR_TYPER::Last.is_set(typer) {
                break;
            }
            frame += gicr::STRIDE;
        }
    }
    assert!(found != 0, "no GICv3 redistributor for MPIDR {mpidr:#x}");
    CPU_IF[index].store(found, Ordering::Relaxed);
    let rd = AtomicUsize::new(found);
    // Wake the redistributor (IHI 0069 12.11.42 GICR_WAKER).
    write32(&rd, gicr::WAKER, read32(&rd, gicr::WAKER) & !GICR_WAKER::ProcessorSleep::SET.value);
    while GICR_WAKER::ChildrenAsleep.is_set(read32(&rd, gicr::WAKER)) {
        core::hint::spin_loop();
    }
    write32(&rd, gicr::SGI_BASE + gicr::sgi::ICENABLER0, u32::MAX);
    write32(&rd, gicr::SGI_BASE + gicr::sgi::IGROUPR0, u32::MAX);
    for intid in 0..32 {
        byte_write(&rd, gicr::SGI_BASE + gicr::sgi::IPRIORITYR + intid, DEFAULT_PRIORITY);
    }
    // System-register interface at EL2 and EL1 (ICC_SRE_EL2: SRE | Enable).
    ICC_SRE_EL2.set(ICC_SRE_EL2.get() | 0b1001);
    barrier_isb();
    write_sysreg!("icc_pmr_el1", 0xff);
    write_sysreg!("icc_bpr1_el1", 0);
    write_sysreg!("icc_ctlr_el1", 1 << 1); // EOImode (aarch64-cpu defines ICC_CTLR_EL1 read-only): EOIR drops priority, DIR deactivates
    write_sysreg!("icc_igrpen1_el1", 1);
    barrier_isb();
    let lrs = (ICH_VTR_EL2.get() & 0x1f) as usize + 1;
    GIC.lrs.store(lrs, Ordering::Relaxed);
    for i in 0..lrs {
        write_lr_v3(i, 0);
    }
    ICH_AP1R0_EL2.set(0);
    write_sysreg!("ich_ap0r0_el2", 0);
    ICH_HCR_EL2.set(GICH_HCR::En::SET.value as u64);
    barrier_isb();
}

fn barrier_isb() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Acknowledges the highest-priority pending interrupt (SPURIOUS if none).
/// Returns the raw IAR value (GICv2 includes the SGI source CPU).
pub fn acknowledge() -> u32 {
    if is_v3() {
        read_sysreg!("icc_iar1_el1") as u32
    } else {
        read32(&GIC.gicc, gicc::IAR)
    }
}

/// Priority drop: the CPU may take other interrupts; the interrupt stays
/// active until `deactivate` (or a guest's EOI through a hardware-linked
/// list register).
pub fn priority_drop(iar: u32) {
    if is_v3() {
        write_sysreg!("icc_eoir1_el1", iar as u64);
    } else {
        write32(&GIC.gicc, gicc::EOIR, iar);
    }
}

pub fn deactivate(iar: u32) {
    if is_v3() {
        write_sysreg!("icc_dir_el1", iar as u64);
    } else {
        write32(&GIC.gicc, gicc::DIR, iar);
    }
}

fn private_base() -> (AtomicUsize, usize) {
    if is_v3() {
        (AtomicUsize::new(CPU_IF[cpu::index()].load(Ordering::Relaxed)), gicr::SGI_BASE)
    } else {
        (AtomicUsize::new(GIC.gicd.load(Ordering::Relaxed)), 0)
    }
}

/// Enables or disables `intid` (a PPI/SGI on this CPU, or an SPI).
pub fn set_enabled(intid: u32, enabled: bool) {
    let word = 4 * (intid as usize / 32);
    let bit = 1 << (intid % 32);
    // The SGI_base frame has the distributor's offsets for INTIDs 0..32.
    let reg = if enabled { gicd::ISENABLER } else { gicd::ICENABLER };
    if intid < 32 {
        let (base, off) = private_base();
        write32(&base, off + reg + word, bit);
    } else if (intid as usize) < GIC.lines.load(Ordering::Relaxed) {
        write32(&GIC.gicd, reg + word, bit);
    }
}

/// Sets an interrupt's priority.
pub fn set_priority(intid: u32, priority: u8) {
    if intid < 32 {
        let (base, off) = private_base();
        byte_write(&base, off + gicd::IPRIORITYR + intid as usize, priority);
    } else if (intid as usize) < GIC.lines.load(Ordering::Relaxed) {
        byte_write(&GIC.gicd, gicd::IPRIORITYR + intid as usize, priority);
    }
}

/// Edge (true) or level (false) triggering of an SPI.
pub fn set_edge(intid: u32, edge: bool) {
    if intid < 32 || intid as usize >= GIC.lines.load(Ordering::Relaxed) {
        return;
    }
    let offset = gicd::ICFGR + 4 * (intid as usize / 16);
    let shift = 2 * (intid % 16) + 1;
    let value = read32(&GIC.gicd, offset) & !(1 << shift) | ((edge as u32) << shift);
    write32(&GIC.gicd, offset, value);
}

/// Routes an SPI to the physical CPU `target`.
pub fn route_spi(intid: u32, target: usize) {
    if intid < 32 || intid as usize >= GIC.lines.load(Ordering::Relaxed) || target >= cpu::MAX_CPUS {
        return;
    }
    if is_v3() {
        let mpidr = CPU_MPIDR[target].load(Ordering::Relaxed) as u64;
        write64(GIC.gicd.load(Ordering::Relaxed), gicd::IROUTER + 8 * intid as usize, mpidr);
    } else {
        let mask = CPU_IF[target].load(Ordering::Relaxed) as u8;
        byte_write(&GIC.gicd, gicd::ITARGETSR + intid as usize, mask);
    }
}

/// Sends SGI `intid` to physical CPU `target`.
pub fn send_sgi(intid: u32, target: usize) {
    if is_v3() {
        let mpidr = CPU_MPIDR[target].load(Ordering::Relaxed) as u64;
        write_sysreg!("icc_sgi1r_el1", Sgi1r::to_pe(intid, mpidr).encode());
        barrier_isb();
    } else {
        let mask = CPU_IF[target].load(Ordering::Relaxed) as u32;
        write32(&GIC.gicd, gicd::SGIR, (GICD_SGIR::CPUTargetList.val(mask) + GICD_SGIR::SGIINTID.val(intid & 0xf)).value);
    }
}

/// Number of lines the distributor implements.
pub fn lines() -> usize {
    GIC.lines.load(Ordering::Relaxed)
}

pub fn version() -> GicVersion {
    if is_v3() {
        GicVersion::V3
    } else {
        GicVersion::V2
    }
}

/// The running CPU's list registers and virtual interface control.
pub struct HwListRegisters;

/// Applies `$op` to ICH_LR<i>_EL2 (one typed register each, so a match).
macro_rules! with_lr {
    ($i:expr, $reg:ident => $op:expr, $default:expr) => {
        with_lr!(@ $i, $reg => $op, $default; 0 => ICH_LR0_EL2, 1 => ICH_LR1_EL2, 2 => ICH_LR2_EL2, 3 => ICH_LR3_EL2, 4 => ICH_LR4_EL2, 5 => ICH_LR5_EL2, 6 => ICH_LR6_EL2, 7 => ICH_LR7_EL2, 8 => ICH_LR8_EL2, 9 => ICH_LR9_EL2, 10 => ICH_LR10_EL2, 11 => ICH_LR11_EL2, 12 => ICH_LR12_EL2, 13 => ICH_LR13_EL2, 14 => ICH_LR14_EL2, 15 => ICH_LR15_EL2)
    };
    (@ $i:expr, $reg:ident => $op:expr, $default:expr; $($n:literal => $r:ident),*) => {
        match $i {
            $($n => { let $reg = &$r; $op })*
            _ => $default,
        }
    };
}

fn write_lr_v3(i: usize, value: u64) {
    with_lr!(i, lr => lr.set(value), ())
}

fn read_lr_v3(i: usize) -> u64 {
    with_lr!(i, lr => lr.get(), 0)
}

impl ListRegisters for HwListRegisters {
    fn count(&self) -> usize {
        GIC.lrs.load(Ordering::Relaxed)
    }

    fn read(&self, i: usize) -> u64 {
        if is_v3() {
            read_lr_v3(i)
        } else {
            read32(&GIC.gich, gich::LR0 + 4 * i) as u64
        }
    }

    fn write(&mut self, i: usize, value: u64) {
        if is_v3() {
            write_lr_v3(i, value);
        } else {
            write32(&GIC.gich, gich::LR0 + 4 * i, value as u32);
        }
    }

    /// Turns the "list registers (nearly) empty" maintenance interrupt on or
    /// off (GICH_HCR.UIE / ICH_HCR_EL2.UIE, bit 1 in both).
    fn set_underflow_irq(&mut self, on: bool) {
        if is_v3() {
            let uie = u64::from(GICH_HCR::UIE::SET.value);
            let hcr = ICH_HCR_EL2.get() & !uie | if on { uie } else { 0 };
            ICH_HCR_EL2.set(hcr);
        } else {
            let hcr = GICH_HCR::UIE.val(on.into()).modify(read32(&GIC.gich, gich::HCR));
            write32(&GIC.gich, gich::HCR, hcr);
        }
    }

    /// The VM's view of its CPU interface (GICH_VMCR / ICH_VMCR_EL2).
    fn vmcr(&self) -> u64 {
        if is_v3() {
            ICH_VMCR_EL2.get()
        } else {
            read32(&GIC.gich, gich::VMCR) as u64
        }
    }
}

impl HwListRegisters {
    /// The maintenance interrupt status (GICH_MISR / ICH_MISR_EL2).
    pub fn misr(&self) -> u64 {
        if is_v3() {
            ICH_MISR_EL2.get()
        } else {
            read32(&GIC.gich, gich::MISR) as u64
        }
    }

    /// Whether the underflow maintenance interrupt is on (GICH_HCR.UIE /
    /// ICH_HCR_EL2.UIE): part of the loaded vCPU's state.
    pub fn underflow_irq(&self) -> bool {
        let uie = GICH_HCR::UIE::SET.value;
        if is_v3() {
            ICH_HCR_EL2.get() & u64::from(uie) != 0
        } else {
            read32(&GIC.gich, gich::HCR) & uie != 0
        }
    }

    /// Restores the VM's view of its CPU interface (`ListRegisters::vmcr`
    /// saves it) on vCPU switches.
    pub fn set_vmcr(&mut self, value: u64) {
        if is_v3() {
            ICH_VMCR_EL2.set(value);
        } else {
            write32(&GIC.gich, gich::VMCR, value as u32);
        }
    }

    /// Bit i set: list register i is empty (GICH_ELRSR0 / ICH_ELRSR_EL2).
    pub fn empty_mask(&self) -> u64 {
        if is_v3() {
            read_sysreg!("ich_elrsr_el2")
        } else {
            read32(&GIC.gich, gich::ELRSR0) as u64
        }
    }
}

/// On an idle CPU: acknowledges one pending interrupt (only kicks are
/// expected), ends it, and says whether there was one.
pub fn acknowledge_and_drop_kick() -> bool {
    let iar = acknowledge();
    if iar & gicc::IAR_INTID_MASK >= FIRST_SPECIAL_INTID {
        return false;
    }
    priority_drop(iar);
    deactivate(iar);
    true
}

/// Is private interrupt `intid` (a PPI of this CPU) active?
pub fn is_active(intid: u32) -> bool {
    let (base, off) = private_base();
    read32(&base, off + gicd::ISACTIVER) & (1 << (intid % 32)) != 0
}

/// Sets or clears the active state of private interrupt `intid` (saving and
/// restoring a vCPU's hardware-linked timer interrupt across a switch).
pub fn set_active(intid: u32, active: bool) {
    let (base, off) = private_base();
    let reg = if active { gicd::ISACTIVER } else { gicd::ICACTIVER };
    write32(&base, off + reg + 4 * (intid as usize / 32), 1 << (intid % 32));
}

/// The virtual CPU interface's active priorities, part of a vCPU's state:
/// GICH_APR, or ICH_AP0R0_EL2 (high half) and ICH_AP1R0_EL2 (low half).
/// Both groups: a guest may enable group 0 and acknowledge through
/// ICC_IAR0_EL1 without a trap, and its active priorities must not stay
/// behind as the next vCPU's running priority.
pub fn active_priorities() -> u64 {
    if is_v3() {
        (read_sysreg!("ich_ap0r0_el2") << 32) | (ICH_AP1R0_EL2.get() & 0xffff_ffff)
    } else {
        read32(&GIC.gich, gich::APR) as u64
    }
}

pub fn set_active_priorities(value: u64) {
    if is_v3() {
        write_sysreg!("ich_ap0r0_el2", value >> 32);
        ICH_AP1R0_EL2.set(value & 0xffff_ffff);
    } else {
        write32(&GIC.gich, gich::APR, value as u32);
    }
}
