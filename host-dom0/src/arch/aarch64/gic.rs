//! The GIC, v2 (GICD + GICC MMIO) or v3 (GICD + GICR MMIO, ICC_* system
//! registers), programmed as the GIC architecture specification (IHI 0048B,
//! IHI 0069) describes, since under the hypervisor every register is emulated.
//!
//! All interrupts are Group 1 (non-secure) at one priority; SPIs go to the
//! boot CPU. Handlers are registered per INTID in a small lock-free table.

use hv_mmio as mmio;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use spin::Once;

use super::cpu::{self, MAX_CPUS};
use hv_devtree::platform::{Gic as GicDesc, GicVersion, MemRegion};

/// Priority of every enabled interrupt (lower is more urgent).
const PRIORITY: u8 = 0xa0;
/// Priority mask: let everything more urgent than 0xf0 through.
const PMR: u32 = 0xf0;

// Distributor (both versions).
const GICD_CTLR: usize = 0x000;
const GICD_TYPER: usize = 0x004;
const GICD_IGROUPR: usize = 0x080;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_ICPENDR: usize = 0x280;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_ICFGR: usize = 0xc00;
const GICD_IROUTER: usize = 0x6000;
const GICD_CTLR_ENABLE_G1: u32 = 1 << 0; // v2 NS view / v3: EnableGrp1(NS) (single security state: Grp0)
const GICD_CTLR_ENABLE_G1A: u32 = 1 << 1; // v3: EnableGrp1A (single security state: Grp1)
const GICD_CTLR_ARE_NS: u32 = 1 << 4;
const GICD_CTLR_RWP: u32 = 1 << 31;

// v2 CPU interface.
const GICC_CTLR: usize = 0x00;
const GICC_PMR: usize = 0x04;
const GICC_BPR: usize = 0x08;
const GICC_IAR: usize = 0x0c;
const GICC_EOIR: usize = 0x10;

// v3 redistributor: RD_base frame, then SGI_base frame 64 KiB above.
const GICR_CTLR: usize = 0x0000;
const GICR_TYPER: usize = 0x0008;
const GICR_WAKER: usize = 0x0014;
const GICR_SGI: usize = 0x1_0000;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_CTLR_RWP: u32 = 1 << 3;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_TYPER_LAST: u64 = 1 << 4;

/// INTIDs 1020..=1023 are special (spurious, etc.).
const SPECIAL_INTID: u32 = 1020;

/// A window of 32-bit (and some 8/64-bit) MMIO registers.
#[derive(Clone, Copy)]
struct Mmio(usize);

impl Mmio {
    /// # Safety
    /// `base` must be the identity-mapped, Device-memory address of a GIC
    /// register frame that only this module drives.
    unsafe fn new(base: u64) -> Self {
        Self(base as usize)
    }
    fn read32(self, off: usize) -> u32 {
        // SAFETY: `new`'s contract: a GIC frame, mapped; offsets are the spec's.
        unsafe { mmio::read32(self.0 + off) }
    }
    fn write32(self, off: usize, v: u32) {
        // SAFETY: as in `read32`.
        unsafe { mmio::write32(self.0 + off, v) }
    }
    fn write8(self, off: usize, v: u8) {
        // SAFETY: as in `read32`; IPRIORITYR and ITARGETSR are byte-accessible.
        unsafe { mmio::write8(self.0 + off, v) }
    }
    fn read8(self, off: usize) -> u8 {
        // SAFETY: as in `write8`.
        unsafe { mmio::read8(self.0 + off) }
    }
    fn read64(self, off: usize) -> u64 {
        // SAFETY: as in `read32`; GICR_TYPER and GICD_IROUTER are 64-bit registers.
        unsafe { mmio::read64(self.0 + off) }
    }
    fn write64(self, off: usize, v: u64) {
        // SAFETY: as in `read64`.
        unsafe { mmio::write64(self.0 + off, v) }
    }
}

enum Cpu {
    V2 {
        gicc: Mmio,
    },
    V3 {
        gicr: [AtomicUsize; MAX_CPUS],
        regions: [(u64, u64); 4],
    },
}

struct Gic {
    gicd: Mmio,
    lines: u32,
    cpu: Cpu,
}

static GIC: Once<Gic> = Once::new();

/// One registered handler.
struct Slot {
    intid: AtomicU32,
    handler: AtomicUsize,
}

const FREE: u32 = u32::MAX;
static HANDLERS: [Slot; 16] = [const {
    Slot {
        intid: AtomicU32::new(FREE),
        handler: AtomicUsize::new(0),
    }
}; 16];
/// IRQs taken that had no handler (they are disabled when seen).
static UNHANDLED: AtomicUsize = AtomicUsize::new(0);

/// Initialises the distributor and the boot CPU's interface.
pub fn init(desc: &GicDesc) -> Result<(), &'static str> {
    // SAFETY: the addresses come from the device tree's GIC node and are
    // mapped Device by the identity map; dom0 owns the (virtual) GIC.
    let gicd = unsafe { Mmio::new(desc.gicd.base.as_u64()) };
    let lines = ((gicd.read32(GICD_TYPER) & 0x1f) + 1) * 32;
    let lines = lines.min(SPECIAL_INTID);
    let cpu = match desc.version {
        GicVersion::V2 => {
            let gicc = desc.gicc.ok_or("GICv2 without a CPU interface")?;
            // SAFETY: as above, for the CPU interface frame.
            let gicc = unsafe { Mmio::new(gicc.base.as_u64()) };
            Cpu::V2 { gicc }
        }
        GicVersion::V3 => {
            let mut regions = [(0, 0); 4];
            for (slot, r) in regions.iter_mut().zip(desc.gicr.iter()) {
                *slot = (r.base.as_u64(), r.size);
            }
            if desc.gicr.is_empty() {
                return Err("GICv3 without redistributors");
            }
            Cpu::V3 {
                gicr: [const { AtomicUsize::new(0) }; MAX_CPUS],
                regions,
            }
        }
    };
    let gic = GIC.call_once(|| Gic { gicd, lines, cpu });
    gic.init_distributor();
    gic.init_cpu()
}

/// Initialises the running CPU's interface (secondary CPUs).
pub fn init_cpu() -> Result<(), &'static str> {
    GIC.get().ok_or("no GIC")?.init_cpu()
}

/// Registers `handler` for `intid` and enables it (SPIs go to this CPU; PPIs
/// are enabled on this CPU only).
pub fn enable(intid: u32, level_triggered: bool, handler: fn()) -> Result<(), &'static str> {
    let gic = GIC.get().ok_or("no GIC")?;
    if intid >= gic.lines.max(32) {
        return Err("interrupt number beyond what the GIC implements");
    }
    let slot = HANDLERS
        .iter()
        .find(|s| {
            s.intid
                .compare_exchange(FREE, intid, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
        .ok_or("interrupt handler table full")?;
    slot.handler.store(handler as usize, Ordering::Release);
    gic.enable(intid, level_triggered);
    Ok(())
}

/// Enables PPI `intid`, whose handler is already registered with
/// [`enable`] on another CPU, on this CPU too.
pub fn enable_ppi_here(intid: u32, level_triggered: bool) -> Result<(), &'static str> {
    let gic = GIC.get().ok_or("no GIC")?;
    if !(16..32).contains(&intid) {
        return Err("not a PPI");
    }
    if !HANDLERS.iter().any(|s| s.intid.load(Ordering::Acquire) == intid) {
        return Err("no handler registered");
    }
    gic.enable(intid, level_triggered);
    Ok(())
}

/// IRQ entry: acknowledges, dispatches and ends every pending interrupt.
pub fn handle_irq() {
    let Some(gic) = GIC.get() else { return };
    loop {
        let iar = gic.acknowledge();
        let intid = iar & 0xff_ffff;
        if (SPECIAL_INTID..SPECIAL_INTID + 4).contains(&intid) {
            return;
        }
        let handler = HANDLERS
            .iter()
            .find(|s| s.intid.load(Ordering::Acquire) == intid)
            .map(|s| s.handler.load(Ordering::Acquire))
            .filter(|&h| h != 0);
        match handler {
            Some(h) => {
                // SAFETY: only `enable` stores into `handler`, always a `fn()`.
                let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(h) };
                f();
            }
            None => {
                UNHANDLED.fetch_add(1, Ordering::Relaxed);
                gic.disable(intid);
            }
        }
        gic.end(iar);
    }
}

/// Number of interrupts taken without a handler.
pub fn unhandled() -> usize {
    UNHANDLED.load(Ordering::Relaxed)
}

/// The v3 redistributor regions (for `info`), or the v2 CPU interface.
pub fn describe(desc: &GicDesc) -> (&'static str, u64, &'static str, Option<MemRegion>) {
    match desc.version {
        GicVersion::V2 => ("v2", desc.gicd.base.as_u64(), "gicc", desc.gicc),
        GicVersion::V3 => (
            "v3",
            desc.gicd.base.as_u64(),
            "gicr",
            desc.gicr.first().copied(),
        ),
    }
}

impl Gic {
    fn init_distributor(&self) {
        let d = self.gicd;
        d.write32(GICD_CTLR, 0);
        self.wait_dist_rwp();
        let v3 = matches!(self.cpu, Cpu::V3 { .. });
        for n in (32..self.lines).step_by(32) {
            let reg = (n / 32) as usize * 4;
            if v3 {
                // v3: everything Group 1 (IGRPEN1/IAR1). v2 keeps the groups
                // firmware left: non-secure software cannot change them, and
                // without Security Extensions Group 0 is what GICD_CTLR bit 0
                // and GICC_IAR serve.
                d.write32(GICD_IGROUPR + reg, u32::MAX);
            }
            d.write32(GICD_ICENABLER + reg, u32::MAX);
            d.write32(GICD_ICPENDR + reg, u32::MAX);
        }
        for n in 32..self.lines {
            d.write8(GICD_IPRIORITYR + n as usize, PRIORITY);
        }
        match self.cpu {
            Cpu::V2 { .. } => {
                // Bit 0: EnableGrp1 in the non-secure view of a GIC with
                // Security Extensions, EnableGrp0 in one without (IHI 0048B 4.3.1).
                d.write32(GICD_CTLR, GICD_CTLR_ENABLE_G1);
            }
            Cpu::V3 { .. } => {
                // Affinity routing first, then the groups (IHI 0069 12.9.4:
                // ARE must not change while groups are enabled).
                d.write32(GICD_CTLR, GICD_CTLR_ARE_NS);
                self.wait_dist_rwp();
                d.write32(
                    GICD_CTLR,
                    GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1A | GICD_CTLR_ENABLE_G1,
                );
                self.wait_dist_rwp();
            }
        }
    }

    fn wait_dist_rwp(&self) {
        if let Cpu::V3 { .. } = self.cpu {
            while self.gicd.read32(GICD_CTLR) & GICD_CTLR_RWP != 0 {
                core::hint::spin_loop();
            }
        }
    }

    fn init_cpu(&self) -> Result<(), &'static str> {
        match &self.cpu {
            Cpu::V2 { gicc } => {
                let d = self.gicd;
                // SGIs and PPIs are banked per CPU: disable PPIs, set priorities.
                d.write32(GICD_ICENABLER, 0xffff_0000);
                for n in 0..32 {
                    d.write8(GICD_IPRIORITYR + n, PRIORITY);
                }
                gicc.write32(GICC_PMR, PMR);
                gicc.write32(GICC_BPR, 0);
                gicc.write32(GICC_CTLR, 1);
            }
            Cpu::V3 { gicr, regions } => {
                let rd = find_redistributor(regions).ok_or("no redistributor for this CPU")?;
                gicr[cpu::index()].store(rd.0, Ordering::Release);
                // Wake the redistributor (IHI 0069 9.2).
                let waker = rd.read32(GICR_WAKER);
                rd.write32(GICR_WAKER, waker & !GICR_WAKER_PROCESSOR_SLEEP);
                while rd.read32(GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP != 0 {
                    core::hint::spin_loop();
                }
                let sgi = Mmio(rd.0 + GICR_SGI);
                sgi.write32(GICD_IGROUPR, u32::MAX);
                sgi.write32(GICD_ICENABLER, 0xffff_0000);
                while rd.read32(GICR_CTLR) & GICR_CTLR_RWP != 0 {
                    core::hint::spin_loop();
                }
                for n in 0..32 {
                    sgi.write8(GICD_IPRIORITYR + n, PRIORITY);
                }
                // SAFETY: ICC_* system registers of this CPU's interface;
                // SRE first so the others are accessible (IHI 0069 12.1.5).
                unsafe {
                    core::arch::asm!(
                        "mrs {t}, icc_sre_el1",
                        "orr {t}, {t}, #1",
                        "msr icc_sre_el1, {t}",
                        "isb",
                        "msr icc_pmr_el1, {pmr}",
                        "msr icc_bpr1_el1, xzr",
                        "msr icc_ctlr_el1, xzr",
                        "mov {t}, #1",
                        "msr icc_igrpen1_el1, {t}",
                        "isb",
                        t = out(reg) _,
                        pmr = in(reg) u64::from(PMR),
                        options(nostack),
                    );
                }
            }
        }
        Ok(())
    }

    /// The frame holding SGI/PPI registers for this CPU (v2: the banked GICD).
    fn banked(&self) -> Mmio {
        match &self.cpu {
            Cpu::V2 { .. } => self.gicd,
            Cpu::V3 { gicr, .. } => Mmio(gicr[cpu::index()].load(Ordering::Acquire) + GICR_SGI),
        }
    }

    fn enable(&self, intid: u32, level_triggered: bool) {
        let n = intid as usize;
        let regs = if intid < 32 { self.banked() } else { self.gicd };
        regs.write8(GICD_IPRIORITYR + n, PRIORITY);
        if intid >= 16 {
            // ICFGR: 2 bits per INTID, bit 1 of the field set = edge.
            let (reg, shift) = (GICD_ICFGR + n / 16 * 4, (n % 16) * 2 + 1);
            let cfg = regs.read32(reg) & !(1 << shift);
            regs.write32(reg, cfg | (u32::from(!level_triggered) << shift));
        }
        if intid >= 32 {
            match self.cpu {
                Cpu::V2 { .. } => {
                    // This CPU's bit: any of its banked SGI/PPI target bytes (IHI 0048B 4.3.12).
                    let me = (0..32)
                        .map(|i| self.gicd.read8(GICD_ITARGETSR + i))
                        .find(|&b| b != 0)
                        .unwrap_or(1);
                    self.gicd.write8(GICD_ITARGETSR + n, me);
                }
                Cpu::V3 { .. } => {
                    let m = cpu::mpidr();
                    let aff = (m & 0xff_ffff) | ((m >> 32) & 0xff) << 32;
                    self.gicd.write64(GICD_IROUTER + n * 8, aff);
                }
            }
        }
        regs.write32(GICD_ISENABLER + n / 32 * 4, 1 << (n % 32));
    }

    fn disable(&self, intid: u32) {
        let n = intid as usize;
        let regs = if intid < 32 { self.banked() } else { self.gicd };
        regs.write32(GICD_ICENABLER + n / 32 * 4, 1 << (n % 32));
    }

    fn acknowledge(&self) -> u32 {
        match &self.cpu {
            Cpu::V2 { gicc } => gicc.read32(GICC_IAR),
            Cpu::V3 { .. } => {
                let iar: u64;
                // SAFETY: reading ICC_IAR1_EL1 acknowledges the interrupt we then handle.
                unsafe { core::arch::asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nostack)) };
                iar as u32
            }
        }
    }

    fn end(&self, iar: u32) {
        match &self.cpu {
            Cpu::V2 { gicc } => gicc.write32(GICC_EOIR, iar),
            Cpu::V3 { .. } => {
                // SAFETY: ends the interrupt `acknowledge` returned.
                unsafe {
                    core::arch::asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(iar), options(nostack))
                };
            }
        }
    }
}

/// Walks the redistributor frames for the one whose GICR_TYPER affinity is this CPU's.
fn find_redistributor(regions: &[(u64, u64)]) -> Option<Mmio> {
    let m = cpu::mpidr();
    let want = (m & 0xff_ffff) | ((m >> 32) & 0xff) << 24;
    for &(base, size) in regions.iter().filter(|r| r.1 != 0) {
        let mut at = base;
        while at + 0x2_0000 <= base + size {
            // SAFETY: a frame inside a redistributor region from the device tree.
            let rd = unsafe { Mmio::new(at) };
            let typer = rd.read64(GICR_TYPER);
            if typer >> 32 == want {
                return Some(rd);
            }
            if typer & GICR_TYPER_LAST != 0 {
                break;
            }
            at += if typer & GICR_TYPER_VLPIS != 0 {
                0x4_0000
            } else {
                0x2_0000
            };
        }
    }
    None
}

/// The distributor's address (for `bench`).
pub fn distributor_base() -> usize {
    GIC.get().map_or(0, |g| g.gicd.0)
}
