//! The GIC, v2 (GICD + GICC MMIO) or v3 (GICD + GICR MMIO, ICC_* system
//! registers), programmed as the GIC architecture specification (IHI 0048B,
//! IHI 0069) describes, since under the hypervisor every register is emulated.
//!
//! All interrupts are Group 1 (non-secure), at one priority but for bulk
//! work (`enable_bulk`), which waits behind them; SPIs go to the boot CPU. Handlers are registered per INTID in a small lock-free table.
//! Register offsets and fields are `hv_arm::gic`'s; every access is one
//! `hv-mmio` load or store, which the hypervisor can emulate.

use hv_arm::gic::{gicc, gicd, gicr, irouter_affinity, redistributor_affinity, Sgi1r, FIRST_SPECIAL_INTID, GICD_SGIR};
use hv_arm::gic::{GICC_CTLR, GICD_CTLR, GICR_CTLR, GICR_TYPER, GICR_WAKER};
use hv_mmio as mmio;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use spin::Once;

use super::cpu::{self, MAX_CPUS};
use hv_devtree::addr::PhysAddr;
use hv_devtree::platform::{Gic as GicDesc, GicVersion, MemRegion};

/// Priority of every enabled interrupt (lower is more urgent).
const PRIORITY: u8 = 0xa0;
/// Priority of bulk work's interrupt (the hypervisor's IO event): a
/// device's (the console's receive interrupt) goes first when both are
/// pending, or a steady stream of guest requests would keep it waiting.
const BULK_PRIORITY: u8 = 0xb0;
/// Priority mask: let everything more urgent than 0xf0 through.
const PMR: u32 = 0xf0;

/// PPIs (bit = INTID) enabled at the bulk priority.
static BULK_PPIS: AtomicU32 = AtomicU32::new(0);

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
        /// Redistributor regions from the device tree; unused slots are empty.
        regions: [MemRegion; 4],
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
/// Each CPU's way of being named as an SGI target, written by the CPU
/// itself in `init_cpu`: its MPIDR (GICv3) or its CPU-interface bit
/// (GICv2); `u64::MAX` until then.
static SGI_TARGET: [core::sync::atomic::AtomicU64; MAX_CPUS] = [const { core::sync::atomic::AtomicU64::new(u64::MAX) }; MAX_CPUS];

/// IRQs taken that had no handler (they are disabled when seen).
static UNHANDLED: AtomicUsize = AtomicUsize::new(0);

/// Initialises the distributor and the boot CPU's interface.
pub fn init(desc: &GicDesc) -> Result<(), &'static str> {
    // SAFETY: the addresses come from the device tree's GIC node and are
    // mapped Device by the identity map; dom0 owns the (virtual) GIC.
    let gicd = unsafe { Mmio::new(desc.gicd.base.as_u64()) };
    let lines = hv_arm::gic::distributor_lines(gicd.read32(gicd::TYPER));
    let cpu = match desc.version {
        GicVersion::V2 => {
            let gicc = desc.gicc.ok_or("GICv2 without a CPU interface")?;
            // SAFETY: as above, for the CPU interface frame.
            let gicc = unsafe { Mmio::new(gicc.base.as_u64()) };
            Cpu::V2 { gicc }
        }
        GicVersion::V3 => {
            let mut regions = [MemRegion { base: PhysAddr::new(0), size: 0 }; 4];
            for (slot, r) in regions.iter_mut().zip(desc.gicr.iter()) {
                *slot = *r;
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
    gic.init_cpu()?;
    gic.record_sgi_target();
    Ok(())
}

/// Initialises the running CPU's interface (secondary CPUs).
pub fn init_cpu() -> Result<(), &'static str> {
    let gic = GIC.get().ok_or("no GIC")?;
    gic.init_cpu()?;
    gic.record_sgi_target();
    Ok(())
}

/// Registers `handler` for `intid` and enables it (SPIs go to this CPU; PPIs
/// are enabled on this CPU only).
pub fn enable(intid: u32, level_triggered: bool, handler: fn()) -> Result<(), &'static str> {
    let gic = GIC.get().ok_or("no GIC")?;
    if intid >= gic.lines.max(32) {
        return Err("interrupt number beyond what the GIC implements");
    }
    register(intid, handler)?;
    gic.enable(intid, level_triggered);
    Ok(())
}

/// [`enable`] at the bulk-work priority (below the devices'), on this CPU
/// for a PPI: what the other CPUs take with [`enable_ppi_here`] keeps it.
pub fn enable_bulk(intid: u32, level_triggered: bool, handler: fn()) -> Result<(), &'static str> {
    enable(intid, level_triggered, handler)?;
    GIC.get().ok_or("no GIC")?.set_priority(intid, BULK_PRIORITY);
    Ok(())
}

/// Puts `handler` for `intid` in a free slot of the handler table.
fn register(intid: u32, handler: fn()) -> Result<(), &'static str> {
    let slot = HANDLERS
        .iter()
        .find(|s| s.intid.compare_exchange(FREE, intid, Ordering::AcqRel, Ordering::Acquire).is_ok())
        .ok_or("interrupt handler table full")?;
    slot.handler.store(handler as usize, Ordering::Release);
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
    if BULK_PPIS.load(Ordering::Acquire) & (1 << intid) != 0 {
        gic.set_priority(intid, BULK_PRIORITY);
    }
    Ok(())
}

/// Registers `handler` for SGI `intid` (0..15) and enables it on this CPU
/// (each CPU that should take it calls this; the handler table keeps one
/// entry per INTID).
pub fn enable_sgi_here(intid: u32, handler: fn()) -> Result<(), &'static str> {
    let gic = GIC.get().ok_or("no GIC")?;
    if intid >= 16 {
        return Err("not an SGI");
    }
    if !HANDLERS.iter().any(|s| s.intid.load(Ordering::Acquire) == intid) {
        register(intid, handler)?;
    }
    gic.enable(intid, false);
    Ok(())
}

/// Sends SGI `intid` (0..15) to dom0's CPU `target` (its index). `Err` if
/// that CPU has not set up its GIC interface.
pub fn send_sgi(intid: u32, target: usize) -> Result<(), &'static str> {
    let gic = GIC.get().ok_or("no GIC")?;
    let t = SGI_TARGET.get(target).map(|t| t.load(Ordering::Acquire)).filter(|&t| t != u64::MAX);
    let t = t.ok_or("target CPU has no GIC interface yet")?;
    match gic.cpu {
        Cpu::V3 { .. } => {
            let value = Sgi1r::to_pe(intid & 0xf, t).encode();
            // SAFETY: generating an SGI only makes it pending at the target;
            // the barrier orders the caller's stores before it.
            unsafe { core::arch::asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack)) };
        }
        Cpu::V2 { .. } => {
            // SAFETY: a barrier has no memory-safety effect.
            unsafe { core::arch::asm!("dsb ishst", options(nostack)) };
            let sgir = GICD_SGIR::CPUTargetList.val(t as u32) + GICD_SGIR::SGIINTID.val(intid & 0xf);
            gic.gicd.write32(gicd::SGIR, sgir.value);
        }
    }
    Ok(())
}

/// IRQ entry: acknowledges, dispatches and ends every pending interrupt.
pub fn handle_irq() {
    let Some(gic) = GIC.get() else { return };
    loop {
        let iar = gic.acknowledge();
        let intid = iar & 0xff_ffff;
        if (FIRST_SPECIAL_INTID..FIRST_SPECIAL_INTID + 4).contains(&intid) {
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
        d.write32(gicd::CTLR, 0);
        self.wait_dist_rwp();
        let v3 = matches!(self.cpu, Cpu::V3 { .. });
        for n in (32..self.lines).step_by(32) {
            let reg = (n / 32) as usize * 4;
            if v3 {
                // v3: everything Group 1 (IGRPEN1/IAR1). v2 keeps the groups
                // firmware left: non-secure software cannot change them, and
                // without Security Extensions Group 0 is what GICD_CTLR bit 0
                // and GICC_IAR serve.
                d.write32(gicd::IGROUPR + reg, u32::MAX);
            }
            d.write32(gicd::ICENABLER + reg, u32::MAX);
            d.write32(gicd::ICPENDR + reg, u32::MAX);
        }
        for n in 32..self.lines {
            d.write8(gicd::IPRIORITYR + n as usize, PRIORITY);
        }
        match self.cpu {
            Cpu::V2 { .. } => {
                // Bit 0: EnableGrp1 in the non-secure view of a GIC with
                // Security Extensions, EnableGrp0 in one without (IHI 0048B 4.3.1).
                d.write32(gicd::CTLR, GICD_CTLR::EnableGrp1NS::SET.value);
            }
            Cpu::V3 { .. } => {
                // Affinity routing first, then the groups (IHI 0069 12.9.4:
                // ARE must not change while groups are enabled).
                d.write32(gicd::CTLR, GICD_CTLR::ARE_NS::SET.value);
                self.wait_dist_rwp();
                d.write32(
                    gicd::CTLR,
                    (GICD_CTLR::ARE_NS::SET + GICD_CTLR::EnableGrp1A::SET + GICD_CTLR::EnableGrp1NS::SET).value,
                );
                self.wait_dist_rwp();
            }
        }
    }

    fn wait_dist_rwp(&self) {
        if let Cpu::V3 { .. } = self.cpu {
            while GICD_CTLR::RWP.is_set(self.gicd.read32(gicd::CTLR)) {
                core::hint::spin_loop();
            }
        }
    }

    fn init_cpu(&self) -> Result<(), &'static str> {
        match &self.cpu {
            Cpu::V2 { gicc } => {
                let d = self.gicd;
                // SGIs and PPIs are banked per CPU: disable PPIs, set priorities.
                d.write32(gicd::ICENABLER, 0xffff_0000);
                for n in 0..32 {
                    d.write8(gicd::IPRIORITYR + n, PRIORITY);
                }
                gicc.write32(gicc::PMR, PMR);
                gicc.write32(gicc::BPR, 0);
                gicc.write32(gicc::CTLR, GICC_CTLR::EnableGrp1NS::SET.value);
            }
            Cpu::V3 { gicr, regions } => {
                let rd = find_redistributor(regions).ok_or("no redistributor for this CPU")?;
                gicr[cpu::index()].store(rd.0, Ordering::Release);
                // Wake the redistributor (IHI 0069 9.2).
                let waker = rd.read32(gicr::WAKER);
                rd.write32(gicr::WAKER, waker & !GICR_WAKER::ProcessorSleep::SET.value);
                while GICR_WAKER::ChildrenAsleep.is_set(rd.read32(gicr::WAKER)) {
                    core::hint::spin_loop();
                }
                let sgi = Mmio(rd.0 + gicr::SGI_BASE);
                sgi.write32(gicr::sgi::IGROUPR0, u32::MAX);
                sgi.write32(gicr::sgi::ICENABLER0, 0xffff_0000);
                while GICR_CTLR::RWP.is_set(rd.read32(gicr::CTLR)) {
                    core::hint::spin_loop();
                }
                for n in 0..32 {
                    sgi.write8(gicr::sgi::IPRIORITYR + n, PRIORITY);
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
            Cpu::V3 { gicr, .. } => Mmio(gicr[cpu::index()].load(Ordering::Acquire) + gicr::SGI_BASE),
        }
    }

    /// Sets `intid`'s priority (a PPI's on this CPU); remembers bulk PPIs
    /// for the other CPUs' `enable_ppi_here`.
    fn set_priority(&self, intid: u32, priority: u8) {
        let regs = if intid < 32 { self.banked() } else { self.gicd };
        regs.write8(gicd::IPRIORITYR + intid as usize, priority);
        if (16..32).contains(&intid) && priority == BULK_PRIORITY {
            BULK_PPIS.fetch_or(1 << intid, Ordering::AcqRel);
        }
    }

    fn enable(&self, intid: u32, level_triggered: bool) {
        let n = intid as usize;
        let regs = if intid < 32 { self.banked() } else { self.gicd };
        regs.write8(gicd::IPRIORITYR + n, PRIORITY);
        if intid >= 16 {
            // ICFGR: 2 bits per INTID, bit 1 of the field set = edge.
            let (reg, shift) = (gicd::ICFGR + n / 16 * 4, (n % 16) * 2 + 1);
            let cfg = regs.read32(reg) & !(1 << shift);
            regs.write32(reg, cfg | (u32::from(!level_triggered) << shift));
        }
        if intid >= 32 {
            match self.cpu {
                Cpu::V2 { .. } => self.gicd.write8(gicd::ITARGETSR + n, self.v2_cpu_bit()),
                Cpu::V3 { .. } => {
                    self.gicd.write64(gicd::IROUTER + n * 8, irouter_affinity(cpu::mpidr()));
                }
            }
        }
        regs.write32(gicd::ISENABLER + n / 32 * 4, 1 << (n % 32));
    }

    /// GICv2: this CPU's interface bit, read from any of its banked SGI/PPI
    /// target bytes (IHI 0048B 4.3.12).
    fn v2_cpu_bit(&self) -> u8 {
        (0..32).map(|i| self.gicd.read8(gicd::ITARGETSR + i)).find(|&b| b != 0).unwrap_or(1)
    }

    /// Notes how other CPUs name this one as an SGI target.
    fn record_sgi_target(&self) {
        let t = match self.cpu {
            Cpu::V3 { .. } => cpu::mpidr(),
            Cpu::V2 { .. } => u64::from(self.v2_cpu_bit()),
        };
        SGI_TARGET[cpu::index()].store(t, Ordering::Release);
    }

    fn disable(&self, intid: u32) {
        let n = intid as usize;
        let regs = if intid < 32 { self.banked() } else { self.gicd };
        regs.write32(gicd::ICENABLER + n / 32 * 4, 1 << (n % 32));
    }

    fn acknowledge(&self) -> u32 {
        match &self.cpu {
            Cpu::V2 { gicc } => gicc.read32(gicc::IAR),
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
            Cpu::V2 { gicc } => gicc.write32(gicc::EOIR, iar),
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
fn find_redistributor(regions: &[MemRegion]) -> Option<Mmio> {
    let m = cpu::mpidr();
    let want = redistributor_affinity(m);
    for region in regions.iter().filter(|r| r.size != 0) {
        let (base, size) = (region.base.as_u64(), region.size);
        let mut at = base;
        while at + gicr::STRIDE as u64 <= base + size {
            // SAFETY: a frame inside a redistributor region from the device tree.
            let rd = unsafe { Mmio::new(at) };
            let typer = rd.read64(gicr::TYPER);
            if GICR_TYPER::AffinityValue.read(typer) == want {
                return Some(rd);
            }
            if GICR_TYPER::Last.is_set(typer) {
                break;
            }
            at += if GICR_TYPER::VLPIS.is_set(typer) {
                gicr::STRIDE_VLPIS
            } else {
                gicr::STRIDE
            } as u64;
        }
    }
    None
}

/// The distributor's address (for `bench`).
pub fn distributor_base() -> usize {
    GIC.get().map_or(0, |g| g.gicd.0)
}
