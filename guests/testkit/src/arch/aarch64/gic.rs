//! Just enough of the GIC for SGIs and PPIs on every vCPU, and SPIs routed
//! to one vCPU: GICv2 (memory-mapped CPU interface, GICD_SGIR, GICD_ITARGETSR)
//! or GICv3 (redistributors, system-register CPU interface, ICC_SGI1R_EL1,
//! GICD_IROUTER), chosen by the device tree. Interrupts are dispatched to
//! handlers registered per INTID, for INTIDs below [`MAX_INTID`] (SGIs,
//! PPIs and the first 96 SPIs, which cover QEMU virt's UART, RTC, GPIO and
//! virtio-mmio lines); [`enable_spi`] refuses the others, so an interrupt
//! without a possible handler is never enabled.
//!
//! Register offsets: GICv2 IHI 0048B "Distributor register map"; GICv3
//! IHI 0069 "The GIC Distributor register map"
//! (GICD_IGROUPR<n> 0x080, GICD_ISENABLER<n> 0x100, GICD_ICENABLER<n> 0x180,
//! GICD_IPRIORITYR<n> 0x400, GICD_ITARGETSR<n> 0x800, GICD_ICFGR<n> 0xC00,
//! GICD_IROUTER<n> 0x6000 + 8n).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

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
static HANDLERS: spin::RwLock<[Option<Handler>; MAX_INTID as usize]> = spin::RwLock::new([None; MAX_INTID as usize]);

// Distributor (both versions).
const GICD_CTLR: u64 = 0x0;
const GICD_TYPER: u64 = 0x4;
const GICD_IGROUPR: u64 = 0x080;
const GICD_ISENABLER: u64 = 0x100;
const GICD_ICENABLER: u64 = 0x180;
const GICD_IPRIORITYR: u64 = 0x400;
const GICD_ITARGETSR: u64 = 0x800;
const GICD_ICFGR: u64 = 0xc00;
const GICD_SGIR: u64 = 0xf00;
// GICv3 only: 64-bit, one per SPI (n = INTID), Aff3 [39:32], IRM [31],
// Aff2 [23:16], Aff1 [15:8], Aff0 [7:0].
const GICD_IROUTER: u64 = 0x6000;
// GICv2 CPU interface.
const GICC_CTLR: u64 = 0x0;
const GICC_PMR: u64 = 0x4;
const GICC_IAR: u64 = 0xc;
const GICC_EOIR: u64 = 0x10;
// GICv3 redistributor: RD_base frame, then SGI_base frame 64 KiB above.
const GICR_TYPER: u64 = 0x8;
const GICR_WAKER: u64 = 0x14;
const GICR_SGI: u64 = 0x1_0000;
const GICR_IGROUPR0: u64 = GICR_SGI + 0x80;
const GICR_ISENABLER0: u64 = GICR_SGI + 0x100;
const GICR_IPRIORITYR: u64 = GICR_SGI + 0x400;

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
        // ARE at bit 4); for the non-secure view of v3: EnableGrp1 |
        // EnableGrp1A | ARE_NS. 0x13 says yes to each meaning.
        GicVersion::V3 => {
            write32(s.gicd + GICD_CTLR, 0x13);
            wait_rwp(s.gicd)?;
        }
        GicVersion::V2 => write32(s.gicd + GICD_CTLR, 0x3),
    }
    init_cpu()
}

fn wait_rwp(gicd: u64) -> Result<(), &'static str> {
    for _ in 0..1_000_000 {
        if read32(gicd + GICD_CTLR) & (1 << 31) == 0 {
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
            write32(rd + GICR_WAKER, read32(rd + GICR_WAKER) & !(1 << 1));
            let mut awake = false;
            for _ in 0..1_000_000 {
                if read32(rd + GICR_WAKER) & (1 << 2) == 0 {
                    awake = true;
                    break;
                }
            }
            if !awake {
                return Err("GICR_WAKER.ChildrenAsleep stuck");
            }
            write32(rd + GICR_IGROUPR0, 0xffff_ffff);
            for n in 0..8 {
                write32(rd + GICR_IPRIORITYR + 4 * n, 0x8080_8080);
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
            let mask = read32(s.gicd + GICD_ITARGETSR) as u8;
            if mask == 0 {
                return Err("GICD_ITARGETSR0 reads 0 (uniprocessor GIC?)");
            }
            IFACE_MASK[me].store(mask, Ordering::SeqCst);
            for n in 0..8 {
                write32(s.gicd + GICD_IPRIORITYR + 4 * n, 0x8080_8080);
            }
            write32(s.gicc + GICC_PMR, 0xff);
            // EnableGrp0 | EnableGrp1 | AckCtl: take whatever group the
            // interrupt is in (all are group 0 after reset).
            write32(s.gicc + GICC_CTLR, 0x7);
        }
    }
    MPIDR[me].store(mpidr, Ordering::SeqCst);
    Ok(())
}

fn find_redistributor(s: &State, mpidr: u64) -> Option<u64> {
    let affinity = (((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff)) as u32;
    for &(base, size) in s.gicr.iter().filter(|r| r.1 > 0) {
        let mut frame = base;
        while frame + 0x2_0000 <= base + size {
            let typer_lo = read32(frame + GICR_TYPER);
            if read32(frame + GICR_TYPER + 4) == affinity {
                return Some(frame);
            }
            if typer_lo & (1 << 4) != 0 {
                break; // Last
            }
            frame += if typer_lo & (1 << 1) != 0 { 0x4_0000 } else { 0x2_0000 };
        }
    }
    None
}

/// Registers `handler` for `intid` (on every vCPU); INTIDs from
/// [`MAX_INTID`] up are ignored.
pub fn set_handler(intid: u32, handler: Handler) {
    if let Some(slot) = HANDLERS.write().get_mut(intid as usize) {
        *slot = Some(handler);
    }
}

/// This vCPU's SGI and PPI pending bits: GICR_ISPENDR0 of its own
/// redistributor (v3) or the banked GICD_ISPENDR0 (v2).
pub fn private_pending() -> u32 {
    let s = state();
    match s.version {
        GicVersion::V3 => read32(REDIST[cpu::index()].load(Ordering::SeqCst) + GICR_SGI + 0x200),
        GicVersion::V2 => read32(s.gicd + 0x200),
    }
}

/// Enables SGI/PPI `intid` on this vCPU.
pub fn enable(intid: u32) {
    let s = state();
    let bit = 1u32 << (intid % 32);
    match s.version {
        GicVersion::V3 => write32(REDIST[cpu::index()].load(Ordering::SeqCst) + GICR_ISENABLER0, bit),
        GicVersion::V2 => write32(s.gicd + GICD_ISENABLER, bit),
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
    let lines = 32 * ((read32(s.gicd + GICD_TYPER) & 0x1f) + 1);
    if intid >= lines {
        return Err("INTID beyond GICD_TYPER.ITLinesNumber");
    }
    disable_spi(intid)?;
    let word = u64::from(intid / 32) * 4;
    let bit = 1u32 << (intid % 32);
    // Trigger: two bits per INTID, Int_config in the upper one (1 = edge).
    let cfg = s.gicd + GICD_ICFGR + u64::from(intid / 16) * 4;
    let edge_bit = 1u32 << (2 * (intid % 16) + 1);
    let old = read32(cfg);
    write32(cfg, if level { old & !edge_bit } else { old | edge_bit });
    write32(s.gicd + GICD_IGROUPR + word, read32(s.gicd + GICD_IGROUPR + word) | bit);
    // Priority and GICv2 targets: one byte per INTID, updated within the
    // word (32-bit accesses work on every implementation).
    let byte_reg = |base: u64, value: u8| {
        let reg = s.gicd + base + u64::from(intid & !3);
        let shift = 8 * (intid % 4);
        write32(reg, (read32(reg) & !(0xff << shift)) | u32::from(value) << shift);
    };
    byte_reg(GICD_IPRIORITYR, 0x80);
    let me = cpu::index();
    match s.version {
        GicVersion::V3 => {
            let affinity = cpu::mpidr(); // Aff3..Aff0 in IROUTER's positions; IRM = 0
            // SAFETY: GICD_IROUTER<intid> of the distributor the device tree
            // gave, a 64-bit register; writing it only routes the interrupt.
            unsafe { hv_mmio::write64((s.gicd + GICD_IROUTER + 8 * u64::from(intid)) as usize, affinity) };
        }
        GicVersion::V2 => {
            let mask = IFACE_MASK[me].load(Ordering::SeqCst);
            if mask == 0 {
                return Err("this vCPU has no GIC interface yet");
            }
            byte_reg(GICD_ITARGETSR, mask);
        }
    }
    write32(s.gicd + GICD_ISENABLER + word, bit);
    Ok(())
}

/// Disables SPI `intid` (GICD_ICENABLER; on GICv3 waits for GICD_CTLR.RWP,
/// so the interrupt can no longer be signalled when this returns).
pub fn disable_spi(intid: u32) -> Result<(), &'static str> {
    let s = state();
    if intid < 32 {
        return Err("not an SPI");
    }
    write32(s.gicd + GICD_ICENABLER + u64::from(intid / 32) * 4, 1 << (intid % 32));
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
            let value = ((mpidr >> 32) & 0xff) << 48
                | ((mpidr >> 16) & 0xff) << 32
                | (intid as u64 & 0xf) << 24
                | ((mpidr >> 8) & 0xff) << 16
                | 1 << aff0;
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
            write32(s.gicd + GICD_SGIR, (mask as u32) << 16 | (intid & 0xf));
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
            GicVersion::V2 => read32(s.gicc + GICC_IAR),
        };
        let intid = iar & 0xff_ffff & if s.version == GicVersion::V2 { 0x3ff } else { !0 };
        if (1020..1024).contains(&intid) {
            return;
        }
        let handler = HANDLERS.read().get(intid as usize).copied().flatten();
        if let Some(h) = handler {
            h(intid);
        }
        match s.version {
            // SAFETY: ends the interrupt acknowledged above.
            GicVersion::V3 => unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar as u64, options(nostack)) },
            GicVersion::V2 => write32(s.gicc + GICC_EOIR, iar),
        }
    }
}
