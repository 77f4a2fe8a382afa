//! The physical GIC, owned by the hypervisor: distributor set-up, each
//! CPU's interface, interrupt acknowledge/priority-drop/deactivate (EOImode
//! 1, so a guest's EOI of a hardware-linked virtual interrupt deactivates the
//! physical one), SGIs between physical CPUs, and the virtual CPU interface's
//! list registers (GICv2 GICH frame, GICv3 ICH_*_EL2).

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::cpu;
use super::sysreg::{read_sysreg, write_sysreg};
use crate::platform::{Gic, GicVersion};
use crate::vgic::ListRegisters;

/// The SGI the hypervisor uses to make another physical CPU look at its
/// vCPU's pending interrupts.
pub const SGI_KICK: u32 = 0;
/// INTIDs 1020..=1023 are special; 1023 means "nothing pending".
pub const SPURIOUS: u32 = 1023;
/// Priority given to every physical interrupt (all equal: no preemption at EL2).
const DEFAULT_PRIORITY: u8 = 0xa0;

// Distributor registers (GICv2 IHI 0048 4.3, GICv3 IHI 0069 12.9).
const GICD_CTLR: usize = 0x000;
const GICD_TYPER: usize = 0x004;
const GICD_IGROUPR: usize = 0x080;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_ICPENDR: usize = 0x280;
const GICD_ICACTIVER: usize = 0x380;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_ICFGR: usize = 0xc00;
const GICD_SGIR: usize = 0xf00;
const GICD_IROUTER: usize = 0x6000;
const GICD_CTLR_RWP: u32 = 1 << 31;

// GICv2 CPU interface (IHI 0048 4.4) and virtual interface control (5.3).
const GICC_CTLR: usize = 0x00;
const GICC_PMR: usize = 0x04;
const GICC_BPR: usize = 0x08;
const GICC_IAR: usize = 0x0c;
const GICC_EOIR: usize = 0x10;
const GICC_DIR: usize = 0x1000;
const GICH_HCR: usize = 0x00;
const GICH_VTR: usize = 0x04;
const GICH_VMCR: usize = 0x08;
const GICH_MISR: usize = 0x10;
const GICH_ELRSR0: usize = 0x30;
const GICH_APR: usize = 0xf0;
const GICH_LR0: usize = 0x100;

// GICv3 redistributor (IHI 0069 12.10/12.11): RD_base then SGI_base.
const GICR_FRAME: usize = 0x20000;
const GICR_TYPER: usize = 0x0008;
const GICR_WAKER: usize = 0x0014;
const GICR_SGI_BASE: usize = 0x10000;
const GICR_TYPER_LAST: u64 = 1 << 4;

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
    while read32(&GIC.gicd, GICD_CTLR) & GICD_CTLR_RWP != 0 {
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
    let lines = 32 * ((read32(&GIC.gicd, GICD_TYPER) as usize & 0x1f) + 1);
    let lines = lines.min(1020);
    GIC.lines.store(lines, Ordering::Relaxed);

    write32(&GIC.gicd, GICD_CTLR, 0);
    if is_v3() {
        wait_rwp();
    }
    for word in 1..lines / 32 {
        write32(&GIC.gicd, GICD_ICENABLER + 4 * word, u32::MAX);
        write32(&GIC.gicd, GICD_ICPENDR + 4 * word, u32::MAX);
        write32(&GIC.gicd, GICD_ICACTIVER + 4 * word, u32::MAX);
        if version == 3 {
            // GICv3: group 1 (non-secure), taken through ICC_IAR1_EL1.
            // GICv2 keeps the groups it has: group 0 on a GIC without
            // security extensions (QEMU virt), where GICC_IAR only
            // acknowledges group 0; group 1 as the firmware set it up on
            // the Pi, whose non-secure GICC_IAR acknowledges group 1.
            write32(&GIC.gicd, GICD_IGROUPR + 4 * word, u32::MAX);
        }
    }
    for intid in 32..lines {
        byte_write(&GIC.gicd, GICD_IPRIORITYR + intid, DEFAULT_PRIORITY);
    }
    if !is_v3() {
        // Every SPI to the boot CPU until someone routes it elsewhere.
        let boot = read32(&GIC.gicd, GICD_ITARGETSR) & 0xff;
        for intid in 32..lines {
            byte_write(&GIC.gicd, GICD_ITARGETSR + intid, boot as u8);
        }
    }
    if is_v3() {
        wait_rwp();
        let boot = cpu::mpidr();
        for intid in 32..lines {
            write64(GIC.gicd.load(Ordering::Relaxed), GICD_IROUTER + 8 * intid, boot);
        }
        // Affinity routing, both groups enabled (GICD_CTLR with DS = 1:
        // ARE bit 4, EnableGrp1 bit 1, EnableGrp0 bit 0; with DS = 0 the
        // non-secure view has ARE_NS at bit 4 and EnableGrp1A at bit 1).
        write32(&GIC.gicd, GICD_CTLR, (1 << 4) | 0b11);
        wait_rwp();
    } else {
        write32(&GIC.gicd, GICD_CTLR, 0b11);
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
    let mask = read32(&GIC.gicd, GICD_ITARGETSR) & 0xff;
    CPU_IF[index].store(mask as usize, Ordering::Relaxed);
    write32(&GIC.gicd, GICD_ICENABLER, u32::MAX);
    for intid in 0..32 {
        byte_write(&GIC.gicd, GICD_IPRIORITYR + intid, DEFAULT_PRIORITY);
    }
    write32(&GIC.gicc, GICC_PMR, 0xff);
    write32(&GIC.gicc, GICC_BPR, 0);
    // Enable both groups with split priority drop / deactivate (EOImode):
    // bits 0, 1, 9, 10 in the view of a GIC without security extensions
    // (QEMU virt); in the non-secure view (Pi 4) bit 0 and bit 9 are
    // EnableGrp1 and EOImodeNS, and the others are ignored.
    write32(&GIC.gicc, GICC_CTLR, (1 << 0) | (1 << 1) | (1 << 9) | (1 << 10));
    let lrs = (read32(&GIC.gich, GICH_VTR) & 0x3f) as usize + 1;
    GIC.lrs.store(lrs, Ordering::Relaxed);
    for i in 0..lrs {
        write32(&GIC.gich, GICH_LR0 + 4 * i, 0);
    }
    write32(&GIC.gich, GICH_APR, 0);
    write32(&GIC.gich, GICH_HCR, 1); // En
}

fn init_cpu_v3(gic: &Gic, index: usize) {
    let mpidr = cpu::mpidr();
    let want = ((mpidr >> 32 & 0xff) << 24) | (mpidr & 0xff_ffff);
    let mut found = 0;
    'regions: for region in &gic.gicr {
        let mut frame = region.base.as_u64() as usize;
        let end = frame + region.size as usize;
        while frame < end {
            let typer = read64(frame, GICR_TYPER);
            if typer >> 32 == want {
                found = frame;
                break 'regions;
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            frame += GICR_FRAME;
        }
    }
    assert!(found != 0, "no GICv3 redistributor for MPIDR {mpidr:#x}");
    CPU_IF[index].store(found, Ordering::Relaxed);
    let rd = AtomicUsize::new(found);
    // Wake the redistributor (IHI 0069 12.11.42 GICR_WAKER).
    write32(&rd, GICR_WAKER, read32(&rd, GICR_WAKER) & !(1 << 1));
    while read32(&rd, GICR_WAKER) & (1 << 2) != 0 {
        core::hint::spin_loop();
    }
    write32(&rd, GICR_SGI_BASE + GICD_ICENABLER, u32::MAX);
    write32(&rd, GICR_SGI_BASE + GICD_IGROUPR, u32::MAX);
    for intid in 0..32 {
        byte_write(&rd, GICR_SGI_BASE + GICD_IPRIORITYR + intid, DEFAULT_PRIORITY);
    }
    // System-register interface at EL2 and EL1 (ICC_SRE_EL2: SRE | Enable).
    write_sysreg!("icc_sre_el2", read_sysreg!("icc_sre_el2") | 0b1001);
    barrier_isb();
    write_sysreg!("icc_pmr_el1", 0xff);
    write_sysreg!("icc_bpr1_el1", 0);
    write_sysreg!("icc_ctlr_el1", 1 << 1); // EOImode: EOIR drops priority, DIR deactivates
    write_sysreg!("icc_igrpen1_el1", 1);
    barrier_isb();
    let lrs = (read_sysreg!("ich_vtr_el2") & 0x1f) as usize + 1;
    GIC.lrs.store(lrs, Ordering::Relaxed);
    for i in 0..lrs {
        write_lr_v3(i, 0);
    }
    write_sysreg!("ich_ap1r0_el2", 0);
    write_sysreg!("ich_hcr_el2", 1); // En
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
        read32(&GIC.gicc, GICC_IAR)
    }
}

/// Priority drop: the CPU may take other interrupts; the interrupt stays
/// active until `deactivate` (or a guest's EOI through a hardware-linked
/// list register).
pub fn priority_drop(iar: u32) {
    if is_v3() {
        write_sysreg!("icc_eoir1_el1", iar as u64);
    } else {
        write32(&GIC.gicc, GICC_EOIR, iar);
    }
}

pub fn deactivate(iar: u32) {
    if is_v3() {
        write_sysreg!("icc_dir_el1", iar as u64);
    } else {
        write32(&GIC.gicc, GICC_DIR, iar);
    }
}

fn private_base() -> (AtomicUsize, usize) {
    if is_v3() {
        (AtomicUsize::new(CPU_IF[cpu::index()].load(Ordering::Relaxed)), GICR_SGI_BASE)
    } else {
        (AtomicUsize::new(GIC.gicd.load(Ordering::Relaxed)), 0)
    }
}

/// Enables or disables `intid` (a PPI/SGI on this CPU, or an SPI).
pub fn set_enabled(intid: u32, enabled: bool) {
    let word = 4 * (intid as usize / 32);
    let bit = 1 << (intid % 32);
    let reg = if enabled { GICD_ISENABLER } else { GICD_ICENABLER };
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
        byte_write(&base, off + GICD_IPRIORITYR + intid as usize, priority);
    } else if (intid as usize) < GIC.lines.load(Ordering::Relaxed) {
        byte_write(&GIC.gicd, GICD_IPRIORITYR + intid as usize, priority);
    }
}

/// Edge (true) or level (false) triggering of an SPI.
pub fn set_edge(intid: u32, edge: bool) {
    if intid < 32 || intid as usize >= GIC.lines.load(Ordering::Relaxed) {
        return;
    }
    let offset = GICD_ICFGR + 4 * (intid as usize / 16);
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
        write64(GIC.gicd.load(Ordering::Relaxed), GICD_IROUTER + 8 * intid as usize, mpidr);
    } else {
        let mask = CPU_IF[target].load(Ordering::Relaxed) as u8;
        byte_write(&GIC.gicd, GICD_ITARGETSR + intid as usize, mask);
    }
}

/// Sends SGI `intid` to physical CPU `target`.
pub fn send_sgi(intid: u32, target: usize) {
    if is_v3() {
        let mpidr = CPU_MPIDR[target].load(Ordering::Relaxed) as u64;
        let aff1 = (mpidr >> 8) & 0xff;
        let aff2 = (mpidr >> 16) & 0xff;
        let aff3 = (mpidr >> 32) & 0xff;
        let target_list = 1u64 << (mpidr & 0xf);
        let value = (aff3 << 48) | (aff2 << 32) | ((intid as u64 & 0xf) << 24) | (aff1 << 16) | target_list;
        write_sysreg!("icc_sgi1r_el1", value);
        barrier_isb();
    } else {
        let mask = CPU_IF[target].load(Ordering::Relaxed) as u32;
        write32(&GIC.gicd, GICD_SGIR, (mask << 16) | (intid & 0xf));
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

fn write_lr_v3(i: usize, value: u64) {
    macro_rules! lr {
        ($($n:literal),*) => {
            match i {
                $($n => write_sysreg!(concat!("ich_lr", $n, "_el2"), value),)*
                _ => {}
            }
        };
    }
    lr!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

fn read_lr_v3(i: usize) -> u64 {
    macro_rules! lr {
        ($($n:literal),*) => {
            match i {
                $($n => read_sysreg!(concat!("ich_lr", $n, "_el2")),)*
                _ => 0,
            }
        };
    }
    lr!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

impl ListRegisters for HwListRegisters {
    fn count(&self) -> usize {
        GIC.lrs.load(Ordering::Relaxed)
    }

    fn read(&self, i: usize) -> u64 {
        if is_v3() {
            read_lr_v3(i)
        } else {
            read32(&GIC.gich, GICH_LR0 + 4 * i) as u64
        }
    }

    fn write(&mut self, i: usize, value: u64) {
        if is_v3() {
            write_lr_v3(i, value);
        } else {
            write32(&GIC.gich, GICH_LR0 + 4 * i, value as u32);
        }
    }

    /// Turns the "list registers (nearly) empty" maintenance interrupt on or
    /// off (GICH_HCR.UIE / ICH_HCR_EL2.UIE, bit 1 in both).
    fn set_underflow_irq(&mut self, on: bool) {
        if is_v3() {
            let hcr = read_sysreg!("ich_hcr_el2") & !(1 << 1) | ((on as u64) << 1);
            write_sysreg!("ich_hcr_el2", hcr);
        } else {
            let hcr = read32(&GIC.gich, GICH_HCR) & !(1 << 1) | ((on as u32) << 1);
            write32(&GIC.gich, GICH_HCR, hcr);
        }
    }
}

impl HwListRegisters {
    /// The maintenance interrupt status (GICH_MISR / ICH_MISR_EL2).
    pub fn misr(&self) -> u64 {
        if is_v3() {
            read_sysreg!("ich_misr_el2")
        } else {
            read32(&GIC.gich, GICH_MISR) as u64
        }
    }

    /// The VM's view of its CPU interface (GICH_VMCR / ICH_VMCR_EL2), saved
    /// and restored on vCPU switches.
    pub fn vmcr(&self) -> u64 {
        if is_v3() {
            read_sysreg!("ich_vmcr_el2")
        } else {
            read32(&GIC.gich, GICH_VMCR) as u64
        }
    }

    pub fn set_vmcr(&mut self, value: u64) {
        if is_v3() {
            write_sysreg!("ich_vmcr_el2", value);
        } else {
            write32(&GIC.gich, GICH_VMCR, value as u32);
        }
    }

    /// Bit i set: list register i is empty (GICH_ELRSR0 / ICH_ELRSR_EL2).
    pub fn empty_mask(&self) -> u64 {
        if is_v3() {
            read_sysreg!("ich_elrsr_el2")
        } else {
            read32(&GIC.gich, GICH_ELRSR0) as u64
        }
    }
}

/// On an idle CPU: acknowledges one pending interrupt (only kicks are
/// expected), ends it, and says whether there was one.
pub fn acknowledge_and_drop_kick() -> bool {
    let iar = acknowledge();
    if iar & 0x3ff >= 1020 {
        return false;
    }
    priority_drop(iar);
    deactivate(iar);
    true
}

const GICD_ISACTIVER: usize = 0x300;

/// Is private interrupt `intid` (a PPI of this CPU) active?
pub fn is_active(intid: u32) -> bool {
    let (base, off) = private_base();
    read32(&base, off + GICD_ISACTIVER) & (1 << (intid % 32)) != 0
}

/// Sets or clears the active state of private interrupt `intid` (saving and
/// restoring a vCPU's hardware-linked timer interrupt across a switch).
pub fn set_active(intid: u32, active: bool) {
    let (base, off) = private_base();
    let reg = if active { GICD_ISACTIVER } else { GICD_ICACTIVER };
    write32(&base, off + reg + 4 * (intid as usize / 32), 1 << (intid % 32));
}

/// The virtual CPU interface's active priorities (GICH_APR /
/// ICH_AP1R0_EL2), part of a vCPU's state.
pub fn active_priorities() -> u64 {
    if is_v3() {
        read_sysreg!("ich_ap1r0_el2")
    } else {
        read32(&GIC.gich, GICH_APR) as u64
    }
}

pub fn set_active_priorities(value: u64) {
    if is_v3() {
        write_sysreg!("ich_ap1r0_el2", value);
    } else {
        write32(&GIC.gich, GICH_APR, value as u32);
    }
}
