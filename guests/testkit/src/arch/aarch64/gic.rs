//! Just enough of the GIC for SGIs and PPIs on every vCPU, and SPIs routed
//! to one vCPU: GICv2 (memory-mapped CPU interface, GICD_SGIR, GICD_ITARGETSR)
//! or GICv3 (redistributors, system-register CPU interface, ICC_SGI1R_EL1,
//! GICD_IROUTER), chosen by the device tree. Interrupts are dispatched to
//! handlers registered per INTID, for INTIDs below [`MAX_INTID`] (SGIs,
//! PPIs and the first 96 SPIs, which cover QEMU virt's UART, RTC, GPIO and
//! virtio-mmio lines); [`enable_spi`] refuses the others, so an interrupt
//! without a possible handler is never enabled.
//!
//! Register offsets and fields are `hv_arm::gic`'s (GICv2 IHI 0048B, GICv3
//! IHI 0069); every access is one `hv-mmio` load or store, which the
//! hypervisor can emulate.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use hv_arm::gic::{gicc, gicd, gicr, redistributor_affinity, Sgi1r};
use hv_arm::gic::{GICC_CTLR, GICD_CTLR, GICD_SGIR, GICR_TYPER, GICR_WAKER};
use hv_devtree::platform::{Gic as GicNode, GicVersion};

use super::cpu::{self, MAX_CPUS};

/// A handler gets the INTID it was registered for.
pub type Handler = fn(intid: u32);

struct State {
    version: GicVersion,
    gicd: u64,
    /// v2 CPU interface.
    gicc: u64,
    /// v3 redistributor regions (base, size).
    gicr: [(u64, u64); 4],
}

static STATE: spin::Once<State> = spin::Once::new();
/// v3: each vCPU's redistributor (RD_base); v2: unused.
static REDIST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// v2: each vCPU's CPU interface bit (GICD_ITARGETSR0 as that vCPU reads it).
static IFACE_MASK: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
/// Each vCPU's MPIDR affinity, once it has run `init_cpu`.
static MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
/// Handlers exist for INTIDs `0..MAX_INTID`: SGIs (0..15), PPIs (16..31) and
/// SPIs 32..127. A bounded table keeps the lookup in the IRQ path trivial.
pub const MAX_INTID: u32 = 128;
/// [`time_eoi`]: while set, `handle_irq` times each EOI write on the
/// virtual counter (for the bench guest); per vCPU: ticks summed, EOIs.
static TIME_EOI: AtomicBool = AtomicBool::new(false);
static EOI_TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static EOI_COUNT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static HANDLERS: spin::RwLock<[Option<Handler>; MAX_INTID as usize]> = spin::RwLock::new([None; MAX_INTID as usize]);

/// A register's address: a frame's base plus an `hv_arm::gic` offset.
fn at(base: u64, offset: usize) -> u64 {
    base + offset as u64
}

fn read32(addr: u64) -> u32 {
    // SAFETY: `addr` is a GIC register inside a window the device tree
    // gave (identity-mapped Device memory); reading it has no memory effects.
    unsafe { hv_mmio::read32(addr as usize) }
}

fn write32(addr: u64, value: u32) {
    // SAFETY: as `read32`; the GIC registers written here only change
    // interrupt state.
    unsafe { hv_mmio::write32(addr as usize, value) }
}

fn state() -> &'static State {
    STATE.get().expect("gic::init runs before any other GIC call")
}

pub fn version() -> Option<GicVersion> {
    STATE.get().map(|s| s.version)
}

/// Enables the distributor and this (the boot) vCPU's interface.
pub fn init(node: &GicNode) -> Result<(), &'static str> {
    let mut gicr = [(0, 0); 4];
    for (slot, r) in gicr.iter_mut().zip(node.gicr.iter()) {
        *slot = (r.base.as_u64(), r.size);
    }
    let gicc = match (node.version, node.gicc) {
        (GicVersion::V2, None) => return Err("GICv2 without a CPU interface in the device tree"),
        (_, c) => c.map_or(0, |c| c.base.as_u64()),
    };
    if node.version == GicVersion::V3 && node.gicr.is_empty() {
        return Err("GICv3 without redistributors in the device tree");
    }
    let s = STATE.call_once(|| State { version: node.version, gicd: node.gicd.base.as_u64(), gicc, gicr });
    match s.version {
        // EnableGrp0 | EnableGrp1 (v2, or v3 with one security state: also
        // ARE); for the non-secure view of v3 the same bits are EnableGrp1 |
        // EnableGrp1A | ARE_NS: the value says yes to each meaning.
        GicVersion::V3 => {
            let ctlr = GICD_CTLR::EnableGrp0::SET + GICD_CTLR::EnableGrp1::SET + GICD_CTLR::ARE::SET;
            write32(at(s.gicd, gicd::CTLR), ctlr.value);
            wait_rwp(s.gicd)?;
        }
        GicVersion::V2 => write32(at(s.gicd, gicd::CTLR), (GICD_CTLR::EnableGrp0::SET + GICD_CTLR::EnableGrp1::SET).value),
    }
    init_cpu()
}

fn wait_rwp(gicd: u64) -> Result<(), &'static str> {
    for _ in 0..1_000_000 {
        if !GICD_CTLR::RWP.is_set(read32(at(gicd, gicd::CTLR))) {
            return Ok(());
        }
    }
    Err("GICD_CTLR.RWP stuck")
}

/// Sets up this vCPU's CPU interface (and v3 redistributor): SGIs/PPIs group
/// 1 (v3) at priority 0x80, priority mask open. Each vCPU calls it once.
pub fn init_cpu() -> Result<(), &'static str> {
    let s = state();
    let me = cpu::index();
    let mpidr = cpu::mpidr();
    match s.version {
        GicVersion::V3 => {
            let rd = find_redistributor(s, mpidr).ok_or("no redistributor for this vCPU's MPIDR")?;
            REDIST[me].store(rd, Ordering::SeqCst);
            let waker = at(rd, gicr::WAKER);
            write32(waker, read32(waker) & !GICR_WAKER::ProcessorSleep::SET.value);
            let mut awake = false;
            for _ in 0..1_000_000 {
                if !GICR_WAKER::ChildrenAsleep.is_set(read32(waker)) {
                    awake = true;
                    break;
                }
            }
            if !awake {
                return Err("GICR_WAKER.ChildrenAsleep stuck");
            }
            write32(at(rd, gicr::SGI_BASE + gicr::sgi::IGROUPR0), 0xffff_ffff);
            for n in 0..8 {
                write32(at(rd, gicr::SGI_BASE + gicr::sgi::IPRIORITYR + 4 * n), 0x8080_8080);
            }
            // SAFETY: enabling the system-register interface and group 1
            // only lets interrupts the GIC forwards reach PSTATE.I, which is
            // still masked unless the caller unmasked it.
            unsafe {
                asm!(
                    "mrs {t}, icc_sre_el1",
                    "orr {t}, {t}, #1",
                    "msr icc_sre_el1, {t}",
                    "isb",
                    "mov {t}, #0xff",
                    "msr icc_pmr_el1, {t}",
                    "msr icc_bpr1_el1, xzr",
                    "mov {t}, #1",
                    "msr icc_igrpen1_el1, {t}",
                    "isb",
                    t = out(reg) _,
                    options(nostack)
                )
            };
        }
        GicVersion::V2 => {
            // GICD_ITARGETSR0..7 are banked and read as this interface's bit.
            let mask = read32(at(s.gicd, gicd::ITARGETSR)) as u8;
            if mask == 0 {
                return Err("GICD_ITARGETSR0 reads 0 (uniprocessor GIC?)");
            }
            IFACE_MASK[me].store(mask, Ordering::SeqCst);
            for n in 0..8 {
                write32(at(s.gicd, gicd::IPRIORITYR + 4 * n), 0x8080_8080);
            }
            write32(at(s.gicc, gicc::PMR), 0xff);
            // EnableGrp0 | EnableGrp1 | AckCtl: take whatever group the
            // interrupt is in (all are group 0 after reset).
            let ctlr = GICC_CTLR::EnableGrp0::SET + GICC_CTLR::EnableGrp1::SET + GICC_CTLR::AckCtl::SET;
            write32(at(s.gicc, gicc::CTLR), ctlr.value);
        }
    }
    MPIDR[me].store(mpidr, Ordering::SeqCst);
    Ok(())
}

fn find_redistributor(s: &State, mpidr: u64) -> Option<u64> {
    // GICR_TYPER read as two words: AffinityValue is the high one.
    let affinity = redistributor_affinity(mpidr) as u32;
    for &(base, size) in s.gicr.iter().filter(|r| r.1 > 0) {
        let mut frame = base;
        while frame + gicr::STRIDE as u64 <= base + size {
            let typer_lo = u64::from(read32(at(frame, gicr::TYPER)));
            if read32(at(frame, gicr::TYPER + 4)) == affinity {
                return Some(frame);
            }
            if GICR_TYPER::Last.is_set(typer_lo) {
                break;
            }
            frame += if GICR_TYPER::VLPIS.is_set(typer_lo) { gicr::STRIDE_VLPIS } else { gicr::STRIDE } as u64;
        }
    }
    None
}

/// Registers `handler` for `intid` (on every vCPU); INTIDs from
/// [`MAX_INTID`] up are ignored.
pub fn set_handler(intid: u32, handler: Handler) {
    // `handle_irq` takes the read lock: an IRQ taken here while this vCPU
    // holds the write lock would spin on it for ever (the chaos guest
    // restarts its timer, and so sets its handler, with IRQs on).
    cpu::without_irqs(|| {
        if let Some(slot) = HANDLERS.write().get_mut(intid as usize) {
            *slot = Some(handler);
        }
    });
}

/// This vCPU's SGI and PPI pending bits: GICR_ISPENDR0 of its own
/// redistributor (v3) or the banked GICD_ISPENDR0 (v2).
pub fn private_pending() -> u32 {
    let s = state();
    match s.version {
        GicVersion::V3 => read32(at(REDIST[cpu::index()].load(Ordering::SeqCst), gicr::SGI_BASE + gicr::sgi::ISPENDR0)),
        GicVersion::V2 => read32(at(s.gicd, gicd::ISPENDR)),
    }
}

/// Enables SGI/PPI `intid` on this vCPU.
pub fn enable(intid: u32) {
    let s = state();
    let bit = 1u32 << (intid % 32);
    match s.version {
        GicVersion::V3 => write32(at(REDIST[cpu::index()].load(Ordering::SeqCst), gicr::SGI_BASE + gicr::sgi::ISENABLER0), bit),
        GicVersion::V2 => write32(at(s.gicd, gicd::ISENABLER), bit),
    }
}

/// Enables SPI `intid` (32..[`MAX_INTID`]), routed to the calling vCPU:
/// level-sensitive if `level`, else edge-triggered (GICD_ICFGR), group 1
/// (GICD_IGROUPR; the CPU interfaces take group 1 on both versions),
/// priority 0x80, then GICD_ISENABLER. Routing: GICv3 GICD_IROUTER<n> = this
/// vCPU's affinity with IRM = 0; GICv2 the GICD_ITARGETSR byte = this vCPU's
/// CPU interface bit. The interrupt stays disabled while it is configured,
/// as the architecture asks for ICFGR changes (IHI 0069 GICD_ICFGR<n>).
/// `Err` if the INTID is not an SPI this distributor implements
/// (GICD_TYPER.ITLinesNumber) or has no handler slot.
pub fn enable_spi(intid: u32, level: bool) -> Result<(), &'static str> {
    let s = state();
    if !(32..MAX_INTID).contains(&intid) {
        return Err("not an SPI the testkit handles (32..MAX_INTID)");
    }
    let lines = hv_arm::gic::distributor_lines(read32(at(s.gicd, gicd::TYPER)));
    if intid >= lines {
        return Err("INTID beyond GICD_TYPER.ITLinesNumber");
    }
    disable_spi(intid)?;
    let word = u64::from(intid / 32) * 4;
    let bit = 1u32 << (intid % 32);
    // Trigger: two bits per INTID, Int_config in the upper one (1 = edge).
    let cfg = at(s.gicd, gicd::ICFGR + intid as usize / 16 * 4);
    let edge_bit = 1u32 << (2 * (intid % 16) + 1);
    let old = read32(cfg);
    write32(cfg, if level { old & !edge_bit } else { old | edge_bit });
    let group = at(s.gicd, gicd::IGROUPR) + word;
    write32(group, read32(group) | bit);
    // Priority and GICv2 targets: one byte per INTID, updated within the
    // word (32-bit accesses work on every implementation).
    let byte_reg = |array: usize, value: u8| {
        let reg = at(s.gicd, array) + u64::from(intid & !3);
        let shift = 8 * (intid % 4);
        write32(reg, (read32(reg) & !(0xff << shift)) | u32::from(value) << shift);
    };
    byte_reg(gicd::IPRIORITYR, 0x80);
    let me = cpu::index();
    match s.version {
        GicVersion::V3 => {
            let affinity = cpu::mpidr(); // Aff3..Aff0 in IROUTER's positions; IRM = 0
            // SAFETY: GICD_IROUTER<intid> of the distributor the device tree
            // gave, a 64-bit register; writing it only routes the interrupt.
            unsafe { hv_mmio::write64((at(s.gicd, gicd::IROUTER) + 8 * u64::from(intid)) as usize, affinity) };
        }
        GicVersion::V2 => {
            let mask = IFACE_MASK[me].load(Ordering::SeqCst);
            if mask == 0 {
                return Err("this vCPU has no GIC interface yet");
            }
            byte_reg(gicd::ITARGETSR, mask);
        }
    }
    write32(at(s.gicd, gicd::ISENABLER) + word, bit);
    Ok(())
}

/// Clears SPI `intid`'s pending state (GICD_ICPENDR): an edge that was
/// latched while the interrupt was not yet wanted is forgotten.
pub fn clear_pending_spi(intid: u32) -> Result<(), &'static str> {
    let s = state();
    if !(32..MAX_INTID).contains(&intid) {
        return Err("not an SPI the testkit handles (32..MAX_INTID)");
    }
    write32(at(s.gicd, gicd::ICPENDR + intid as usize / 32 * 4), 1 << (intid % 32));
    Ok(())
}

/// Disables SPI `intid` (GICD_ICENABLER; on GICv3 waits for GICD_CTLR.RWP,
/// so the interrupt can no longer be signalled when this returns).
pub fn disable_spi(intid: u32) -> Result<(), &'static str> {
    let s = state();
    if intid < 32 {
        return Err("not an SPI");
    }
    write32(at(s.gicd, gicd::ICENABLER + intid as usize / 32 * 4), 1 << (intid % 32));
    match s.version {
        GicVersion::V3 => wait_rwp(s.gicd),
        GicVersion::V2 => Ok(()),
    }
}

/// Sends SGI `intid` (0..15) to the vCPU with index `target`. `Err` if that
/// vCPU has not set up its GIC interface yet.
pub fn send_sgi(intid: u32, target: usize) -> Result<(), &'static str> {
    let s = state();
    match s.version {
        GicVersion::V3 => {
            let mpidr = MPIDR[target % MAX_CPUS].load(Ordering::SeqCst);
            if mpidr == u64::MAX {
                return Err("target vCPU has no GIC interface yet");
            }
            let aff0 = mpidr & 0xff;
            if aff0 >= 16 {
                return Err("target Aff0 >= 16 cannot be named in ICC_SGI1R_EL1");
            }
            let value = Sgi1r::to_pe(intid, mpidr).encode();
            // SAFETY: generating an SGI only makes it pending at the target.
            unsafe { asm!("dsb ishst", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack)) };
        }
        GicVersion::V2 => {
            let mask = IFACE_MASK[target % MAX_CPUS].load(Ordering::SeqCst);
            if mask == 0 {
                return Err("target vCPU has no GIC interface yet");
            }
            // SAFETY: a barrier has no memory-safety effect.
            unsafe { asm!("dsb ishst", options(nostack)) };
            let sgir = GICD_SGIR::CPUTargetList.val(mask.into()) + GICD_SGIR::SGIINTID.val(intid & 0xf);
            write32(at(s.gicd, gicd::SGIR), sgir.value);
        }
    }
    Ok(())
}

/// Acknowledges and dispatches pending interrupts (from the IRQ vector).
pub fn handle_irq() {
    let Some(s) = STATE.get() else { return };
    loop {
        let iar = match s.version {
            GicVersion::V3 => {
                let v: u64;
                // SAFETY: acknowledging makes the interrupt active; we EOI it below.
                unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) v, options(nostack)) };
                v as u32
            }
            GicVersion::V2 => read32(at(s.gicc, gicc::IAR)),
        };
        let intid = iar & 0xff_ffff & if s.version == GicVersion::V2 { 0x3ff } else { !0 };
        if (1020..1024).contains(&intid) {
            return;
        }
        let handler = HANDLERS.read().get(intid as usize).copied().flatten();
        if let Some(h) = handler {
            h(intid);
        }
        let timed = TIME_EOI.load(Ordering::Relaxed);
        let start = if timed { cpu::counter() } else { 0 };
        match s.version {
            // SAFETY: ends the interrupt acknowledged above.
            GicVersion::V3 => unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar as u64, options(nostack)) },
            GicVersion::V2 => write32(at(s.gicc, gicc::EOIR), iar),
        }
        if timed {
            let me = cpu::index();
            EOI_TICKS[me].fetch_add(cpu::counter() - start, Ordering::Relaxed);
            EOI_COUNT[me].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts (and zeroes) or stops timing EOI writes: each one is bracketed by
/// two [`cpu::counter`] reads, so a caller subtracts the cost of two
/// back-to-back reads.
pub fn time_eoi(on: bool) {
    if on {
        for (t, n) in EOI_TICKS.iter().zip(&EOI_COUNT) {
            t.store(0, Ordering::SeqCst);
            n.store(0, Ordering::SeqCst);
        }
    }
    TIME_EOI.store(on, Ordering::SeqCst);
}

/// Counter ticks spent in timed EOI writes on `vcpu`, and how many.
pub fn eoi_ticks(vcpu: usize) -> (u64, u64) {
    (EOI_TICKS[vcpu % MAX_CPUS].load(Ordering::SeqCst), EOI_COUNT[vcpu % MAX_CPUS].load(Ordering::SeqCst))
}
