//! Distributor emulation: GICD_* for v2 (IHI 0048B, "Distributor register
//! map" and "Distributor register descriptions") and v3 (IHI 0069, "The GIC
//! Distributor register map" and "The GIC Distributor register
//! descriptions").
//!
//! The v3 distributor presents the single-Security-state view (GICD_CTLR.DS
//! = 1) with affinity routing always on (ARE RAO/WI; legacy operation is
//! optional in GICv3), so its SGI/PPI words, ITARGETSR, SGIR and the
//! {C,S}PENDSGIR registers are RAZ/WI: those interrupts are programmed
//! through the redistributors.

use hv_arm::gic::{gicd, GICD_CTLR, GICD_IROUTER, GICD_TYPER, ID_REGISTERS_FROM_END, IROUTER_AFFINITY_MASK};

use super::{AccessSize, Effect, Effects, Irq, Vgic, VgicError, VgicVersion, MAX_PHYS_EFFECTS};

/// GICv2 distributor frame size (4 KiB).
pub const V2_DIST_SIZE: u64 = gicd::V2_FRAME_SIZE as u64;
/// GICv3 distributor frame size (64 KiB).
pub const V3_DIST_SIZE: u64 = gicd::V3_FRAME_SIZE as u64;

/// GICD_IIDR / GICR_IIDR: Implementer = Arm (JEP106 0x43B), product 0.
pub(super) const IIDR: u32 = 0x43b;
/// The whole defined part of GICD_IROUTER<n>: Aff3, IRM, Aff2, Aff1, Aff0.
const IROUTER_MASK: u64 = IROUTER_AFFINITY_MASK | GICD_IROUTER::IRM::SET.value;

/// The bit-per-interrupt register arrays, in register-map order from
/// GICD_IGROUPR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

impl BitReg {
    /// For an offset in GICD_IGROUPR..GICD_IPRIORITYR of a GICD or
    /// SGI_base frame (which has the same offsets for INTIDs 0..32): the
    /// array and the first INTID of the word.
    pub(super) fn at(offset: u64) -> Option<(BitReg, u32)> {
        use BitReg::*;
        let offset = offset as usize;
        let (reg, base) = match offset {
            gicd::IGROUPR..gicd::ISENABLER => (Group, gicd::IGROUPR),
            gicd::ISENABLER..gicd::ICENABLER => (SetEnable, gicd::ISENABLER),
            gicd::ICENABLER..gicd::ISPENDR => (ClearEnable, gicd::ICENABLER),
            gicd::ISPENDR..gicd::ICPENDR => (SetPending, gicd::ISPENDR),
            gicd::ICPENDR..gicd::ISACTIVER => (ClearPending, gicd::ICPENDR),
            gicd::ISACTIVER..gicd::ICACTIVER => (SetActive, gicd::ISACTIVER),
            gicd::ICACTIVER..gicd::ICACTIVER_END => (ClearActive, gicd::ICACTIVER),
            _ => return None,
        };
        Some((reg, ((offset - base) / 4) as u32 * 32))
    }
}

#[derive(Clone, Copy, Debug)]
enum Half {
    Whole,
    Low,
    High,
}

#[derive(Clone, Copy, Debug)]
enum DistReg {
    Ctlr,
    Typer,
    Iidr,
    Bits(BitReg, u32),
    /// GICD_IPRIORITYR, INTID of the first byte accessed.
    Priority(u32),
    /// GICD_ITARGETSR, INTID of the first byte accessed.
    Targets(u32),
    /// GICD_ICFGR, INTID of the register's first field.
    Config(u32),
    Sgir,
    /// GICD_CPENDSGIR / GICD_SPENDSGIR, SGI of the first byte accessed.
    SgiPend {
        set: bool,
        first: u32,
    },
    Router {
        intid: u32,
        half: Half,
    },
    Id(u32),
    RazWi,
}

/// Peripheral/component ID registers (IHI 0048B "Identification
/// registers"; IHI 0069 "Identification registers" and GICD_PIDR2: ArchRev
/// [7:4]).
/// `index` is (offset - 0xFD0) / 4 within the last 48 bytes of the frame.
pub(super) fn id_register(version: VgicVersion, index: u64) -> u32 {
    let arch_rev = match version {
        VgicVersion::V2 => 2,
        VgicVersion::V3 => 3,
    };
    match index {
        0 => 0x04,                        // PIDR4 (0xFD0): JEP106 continuation code 4
        4 => 0x00,                        // PIDR0 (0xFE0): part number [7:0]
        5 => 0xb0,                        // PIDR1: JEP106 identity [3:0] = 0xB
        6 => (arch_rev << 4) | 0x8 | 0x3, // PIDR2 (0xFE8): ArchRev, JEDEC, JEP106 [6:4]
        8 => 0x0d,                        // CIDR0..3 (0xFF0..): component ID
        9 => 0xf0,
        10 => 0x05,
        11 => 0xb1,
        _ => 0,
    }
}

/// The distributor registers whose values are fixed when the vGIC is made
/// (GICD_TYPER from the version, vCPU and SPI counts; GICD_IIDR; the ID
/// registers): a copy the trap's hot path answers 32-bit loads of them
/// from without the vGIC's lock (`emulate::data_abort`). Nothing can change
/// these values afterwards, so the copy cannot go stale, and a lock-free read
/// of it is as consistent as one under the lock. Every other register is
/// `None` here and left to `Vgic::dist_read`.
#[derive(Clone, Copy, Debug)]
pub struct DistFixed {
    typer: u32,
    /// The offset of the first ID register (GICD_PIDR4) in this version's
    /// frame.
    id_base: u64,
    /// The ID registers' values (each fits a byte), read with an index
    /// rather than a call.
    ids: [u8; ID_REGISTERS_FROM_END / 4],
}

impl DistFixed {
    /// A fixed register's value for a 32-bit load at `offset`, or `None`
    /// for any other register (or an offset outside the frame).
    #[inline(always)]
    pub fn word_read(&self, offset: u64) -> Option<u32> {
        const TYPER: u64 = gicd::TYPER as u64;
        const IIDR_AT: u64 = gicd::IIDR as u64;
        match offset {
            TYPER => Some(self.typer),
            IIDR_AT => Some(IIDR),
            _ => {
                let index = offset.wrapping_sub(self.id_base);
                if index < ID_REGISTERS_FROM_END as u64 && index.is_multiple_of(4) {
                    Some(u32::from(self.ids[(index / 4) as usize]))
                } else {
                    None
                }
            }
        }
    }
}

/// Reject offsets outside `frame` and accesses not naturally aligned.
pub(super) fn check_frame(offset: u64, size: AccessSize, frame: u64) -> Result<(), VgicError> {
    if offset >= frame || frame - offset < size.bytes() {
        return Err(VgicError::OutOfFrame);
    }
    // Sizes are powers of two: a mask, not a division.
    if offset & (size.bytes() - 1) != 0 {
        return Err(VgicError::BadAccessSize);
    }
    Ok(())
}

pub(super) fn allow(size: AccessSize, allowed: &[AccessSize]) -> Result<(), VgicError> {
    if allowed.contains(&size) {
        Ok(())
    } else {
        Err(VgicError::BadAccessSize)
    }
}

/// Bit i: `bit(i, &irqs[i])` (at most 32 interrupts).
#[inline(always)]
fn word_of(irqs: &[Irq], bit: impl Fn(u32, &Irq) -> bool) -> u32 {
    irqs.iter().zip(0..32).fold(0, |v, (irq, i)| v | (u32::from(bit(i, irq)) << i))
}

const WORD: &[AccessSize] = &[AccessSize::Word];
const BYTE_OR_WORD: &[AccessSize] = &[AccessSize::Byte, AccessSize::Word];
const WORD_OR_DOUBLE: &[AccessSize] = &[AccessSize::Word, AccessSize::Double];

impl Vgic {
    // Inlined into `dist_read`, which the trap fast path inlines.
    #[inline(always)]
    fn dist_decode(&self, offset: u64, size: AccessSize) -> Result<DistReg, VgicError> {
        let v3 = self.version == VgicVersion::V3;
        let frame = if v3 { V3_DIST_SIZE } else { V2_DIST_SIZE };
        check_frame(offset, size, frame)?;
        let id_base = frame - ID_REGISTERS_FROM_END as u64;
        let (reg, sizes) = match offset as usize {
            gicd::CTLR => (DistReg::Ctlr, WORD),
            gicd::TYPER => (DistReg::Typer, WORD),
            gicd::IIDR => (DistReg::Iidr, WORD),
            gicd::IGROUPR..gicd::ICACTIVER_END => match BitReg::at(offset) {
                Some((r, first)) => (DistReg::Bits(r, first), WORD),
                None => (DistReg::RazWi, WORD),
            },
            o @ gicd::IPRIORITYR..gicd::IPRIORITYR_END => (DistReg::Priority((o - gicd::IPRIORITYR) as u32), BYTE_OR_WORD),
            o @ gicd::ITARGETSR..gicd::ITARGETSR_END => (DistReg::Targets((o - gicd::ITARGETSR) as u32), BYTE_OR_WORD),
            o @ gicd::ICFGR..gicd::ICFGR_END => (DistReg::Config((o - gicd::ICFGR) as u32 / 4 * 16), WORD),
            gicd::SGIR => (DistReg::Sgir, WORD),
            o @ gicd::CPENDSGIR..gicd::CPENDSGIR_END => (
                DistReg::SgiPend {
                    set: false,
                    first: (o - gicd::CPENDSGIR) as u32,
                },
                BYTE_OR_WORD,
            ),
            o @ gicd::SPENDSGIR..gicd::SPENDSGIR_END => (
                DistReg::SgiPend {
                    set: true,
                    first: (o - gicd::SPENDSGIR) as u32,
                },
                BYTE_OR_WORD,
            ),
            o @ gicd::IROUTER..gicd::IROUTER_END if v3 => {
                let intid = ((o - gicd::IROUTER) / 8) as u32;
                let half = match (size, offset % 8) {
                    (AccessSize::Double, _) => Half::Whole,
                    (_, 0) => Half::Low,
                    _ => Half::High,
                };
                (DistReg::Router { intid, half }, WORD_OR_DOUBLE)
            }
            _ if offset >= id_base => (
                DistReg::Id(id_register(self.version, (offset - id_base) / 4)),
                WORD,
            ),
            _ => (DistReg::RazWi, WORD),
        };
        allow(size, sizes)?;
        Ok(reg)
    }

    /// The registers of the distributor that never change (`DistFixed`).
    pub fn dist_fixed(&self) -> DistFixed {
        let frame = match self.version {
            VgicVersion::V2 => V2_DIST_SIZE,
            VgicVersion::V3 => V3_DIST_SIZE,
        };
        DistFixed {
            typer: self.typer(),
            id_base: frame - ID_REGISTERS_FROM_END as u64,
            // The values are bytes (IHI 0048B and IHI 0069, "Identification registers").
            ids: core::array::from_fn(|i| id_register(self.version, i as u64) as u8),
        }
    }

    /// Emulate a guest load from the distributor frame. `vcpu` is the
    /// accessing vCPU (it selects the SGI/PPI bank for v2). Inlined into the
    /// trap handler's fast path (the hottest emulated access).
    #[inline(always)]
    pub fn dist_read(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, VgicError> {
        if vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        let v3 = self.version == VgicVersion::V3;
        let reg = self.dist_decode(offset, size)?;
        let nbytes = size.bytes() as u32;
        Ok(match reg {
            DistReg::Ctlr if v3 => u64::from(self.ctlr | GICD_CTLR::ARE::SET.value | GICD_CTLR::DS::SET.value), // RAO
            DistReg::Ctlr => u64::from(self.ctlr),
            DistReg::Typer => u64::from(self.typer()),
            DistReg::Iidr => u64::from(IIDR),
            DistReg::Bits(_, first) if v3 && first < 32 => 0,
            DistReg::Bits(r, first) => u64::from(self.read_bits(vcpu, first, r)),
            DistReg::Priority(first) if v3 && first < 32 => 0,
            DistReg::Priority(first) => self.read_priority(vcpu, first, nbytes),
            DistReg::Targets(_) if v3 => 0,
            DistReg::Targets(first) => {
                let mut v = 0u64;
                for i in 0..nbytes {
                    let intid = first + i;
                    let byte = match intid {
                        0..=31 => 1u8 << vcpu, // this CPU's own bit (IHI 0048B, GICD_ITARGETSR<n>)
                        _ if self.exists(intid) => self.irq(vcpu, intid).targets,
                        _ => 0,
                    };
                    v |= u64::from(byte) << (8 * i);
                }
                v
            }
            DistReg::Config(first) if v3 && first < 32 => 0,
            DistReg::Config(first) => u64::from(self.read_config(vcpu, first)),
            DistReg::Sgir => 0, // write-only
            DistReg::SgiPend { .. } if v3 => 0,
            DistReg::SgiPend { first, .. } => {
                let mut v = 0u64;
                for i in 0..nbytes {
                    v |= u64::from(self.v2_sgi_pending_sources(vcpu, first + i)) << (8 * i);
                }
                v
            }
            DistReg::Router { intid, .. } if intid < 32 || !self.exists(intid) => 0,
            DistReg::Router { intid, half } => {
                let r = self.irq(vcpu, intid).route;
                match half {
                    Half::Whole => r,
                    Half::Low => r & 0xffff_ffff,
                    Half::High => r >> 32,
                }
            }
            DistReg::Id(v) => u64::from(v),
            DistReg::RazWi => 0,
        })
    }

    /// Emulate a guest store to the distributor frame. Drain `out`'s
    /// physical effects before the next write (else `EffectsFull`).
    pub fn dist_write(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        if vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        let reg = self.dist_decode(offset, size)?;
        out.ensure_room(MAX_PHYS_EFFECTS)?;
        let v3 = self.version == VgicVersion::V3;
        let nbytes = size.bytes() as u32;
        let value32 = value as u32;
        match reg {
            DistReg::Ctlr => self.write_ctlr(value32 & (GICD_CTLR::EnableGrp0::SET.value | GICD_CTLR::EnableGrp1::SET.value), out),
            DistReg::Typer | DistReg::Iidr | DistReg::Id(_) | DistReg::RazWi => {}
            DistReg::Bits(_, first) if v3 && first < 32 => {}
            DistReg::Bits(r, first) => self.write_bits(vcpu, first, r, value32, out),
            DistReg::Priority(first) if v3 && first < 32 => {}
            DistReg::Priority(first) => self.write_priority(vcpu, first, nbytes, value, out),
            DistReg::Targets(_) if v3 => {}
            DistReg::Targets(first) => {
                let mask = ((1u16 << self.vcpus.len()) - 1) as u8;
                for i in 0..nbytes {
                    let intid = first + i;
                    if intid >= 32 && self.exists(intid) {
                        let t = (value >> (8 * i)) as u8 & mask;
                        self.irq_mut(vcpu, intid).targets = t;
                        self.reroute(intid, out);
                    }
                }
            }
            DistReg::Config(first) if v3 && first < 32 => {}
            DistReg::Config(first) => self.write_config(vcpu, first, value32, out),
            DistReg::Sgir if v3 => {}
            DistReg::Sgir => self.sgir_write(vcpu, value32, out),
            DistReg::SgiPend { .. } if v3 => {}
            DistReg::SgiPend { set, first } => {
                for i in 0..nbytes {
                    let sources = (value >> (8 * i)) as u8;
                    self.v2_sgi_write_sources(vcpu, first + i, sources, set, out);
                }
            }
            DistReg::Router { intid, .. } if intid < 32 || !self.exists(intid) => {}
            DistReg::Router { intid, half } => {
                let old = self.irq(vcpu, intid).route;
                let new = match half {
                    Half::Whole => value,
                    Half::Low => (old & !0xffff_ffff) | (value & 0xffff_ffff),
                    Half::High => (old & 0xffff_ffff) | (value << 32),
                };
                self.irq_mut(vcpu, intid).route = new & IROUTER_MASK;
                self.reroute(intid, out);
            }
        }
        Ok(())
    }

    /// GICD_TYPER (IHI 0048B and IHI 0069, GICD_TYPER).
    fn typer(&self) -> u32 {
        // Plain shifts of values known to fit their fields (this read is the
        // benchmark's trapped access: no masking on the way).
        let it_lines = self.nr_irqs().div_ceil(32) - 1;
        match self.version {
            VgicVersion::V2 => it_lines | ((self.vcpus.len() as u32 - 1) << GICD_TYPER::CPUNumber.shift),
            // 10 INTID bits, Aff3 supported; no LPIs, MBIS, ESPI; RSS = 0.
            VgicVersion::V3 => it_lines | (9 << GICD_TYPER::IDbits.shift) | GICD_TYPER::A3V::SET.value,
        }
    }

    fn write_ctlr(&mut self, new: u32, out: &mut Effects) {
        let turned_on = new & !self.ctlr;
        self.ctlr = new;
        if turned_on != 0 {
            // Queued interrupts of a newly enabled group become deliverable.
            for v in 0..self.vcpus.len() {
                if self.vcpus[v]
                    .queue
                    .iter()
                    .any(|i| turned_on & (1 << u32::from(self.irq(v, i).group1)) != 0)
                {
                    out.kick(v);
                }
            }
        }
    }

    /// An SPI's routing changed: move it to its new queue, mirror to the
    /// physical GIC if HW-linked.
    fn reroute(&mut self, intid: u32, out: &mut Effects) {
        let dest = self.resolve_dest(self.irq(0, intid));
        let irq = self.irq_mut(0, intid);
        irq.dest = dest;
        if let (Some(phys), Some(d)) = (irq.hw, dest) {
            out.push(Effect::PhysTarget {
                intid: phys,
                vcpu: d as usize,
            });
        }
        self.update(0, intid, out);
    }

    /// Physical INTID to mirror guest writes to (HW-linked SPIs only;
    /// HW-linked PPIs stay hypervisor-managed).
    fn hw_spi(&self, bank: usize, intid: u32) -> Option<u32> {
        if intid >= 32 {
            self.irq(bank, intid).hw
        } else {
            None
        }
    }

    // ----- register groups shared with the redistributor -----

    /// A bit-per-interrupt register word (`first` a multiple of 32): one
    /// loop per register kind over the word's interrupts as a slice, not a
    /// look-up and a match per bit.
    pub(super) fn read_bits(&self, bank: usize, first: u32, reg: BitReg) -> u32 {
        let irqs = self.irq_word(bank, first);
        match reg {
            BitReg::Group => word_of(irqs, |_, irq| irq.group1),
            BitReg::SetEnable | BitReg::ClearEnable => word_of(irqs, |_, irq| irq.enabled),
            BitReg::SetPending | BitReg::ClearPending => word_of(irqs, |i, _| self.visible_pending(bank, first + i)),
            BitReg::SetActive | BitReg::ClearActive => word_of(irqs, |_, irq| Self::irq_visible_active(irq)),
        }
    }

    pub(super) fn write_bits(
        &mut self,
        bank: usize,
        first: u32,
        reg: BitReg,
        value: u32,
        out: &mut Effects,
    ) {
        if reg == BitReg::Group {
            for i in 0..32 {
                let intid = first + i;
                if !self.exists(intid) {
                    break;
                }
                let g = value & (1 << i) != 0;
                let irq = self.irq_mut(bank, intid);
                irq.group1 = g;
                let queued = irq.queued_on;
                if let Some(q) = queued {
                    if self.group_enabled(g) {
                        out.kick(q as usize);
                    }
                }
            }
            return;
        }
        // Write-1 registers: work is O(bits set).
        let mut bits = value;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            let intid = first + i;
            if !self.exists(intid) {
                break;
            }
            self.write_bit(bank, intid, reg, out);
        }
    }

    fn write_bit(&mut self, bank: usize, intid: u32, reg: BitReg, out: &mut Effects) {
        let hw = self.hw_spi(bank, intid);
        let v2_sgi = self.is_v2_sgi(intid);
        match reg {
            BitReg::Group => {}
            BitReg::SetEnable | BitReg::ClearEnable => {
                let enable = reg == BitReg::SetEnable;
                self.irq_mut(bank, intid).enabled = enable;
                if let Some(p) = hw {
                    out.push(Effect::PhysEnable { intid: p, enable });
                }
                self.update(bank, intid, out);
            }
            // v2 SGI pending bits are read-only here (IHI 0048B,
            // GICD_ISPENDR<n>/GICD_ICPENDR<n>): use GICD_SPENDSGIR/CPENDSGIR.
            BitReg::SetPending | BitReg::ClearPending if v2_sgi => {}
            BitReg::SetPending => match hw {
                // The physical interrupt fires, and comes back via inject_hw.
                Some(p) => out.push(Effect::PhysPending {
                    intid: p,
                    set: true,
                }),
                None => self.latch(bank, intid, out),
            },
            BitReg::ClearPending => {
                let irq = self.irq_mut(bank, intid);
                let had_latch = irq.latch;
                irq.latch = false;
                let in_lr = irq.lr;
                if let Some(p) = hw {
                    out.push(Effect::PhysPending {
                        intid: p,
                        set: false,
                    });
                    if had_latch && in_lr.is_none() {
                        // The hypervisor acknowledged this instance; the
                        // guest will never deactivate it now.
                        out.push(Effect::PhysActive {
                            intid: p,
                            set: false,
                        });
                    }
                }
                match in_lr {
                    Some((owner, _)) => {
                        self.irq_mut(bank, intid).clear_pending_req = true;
                        out.kick(owner as usize);
                    }
                    None => self.update(bank, intid, out),
                }
            }
            BitReg::SetActive | BitReg::ClearActive => {
                let set = reg == BitReg::SetActive;
                if let Some(p) = hw {
                    out.push(Effect::PhysActive { intid: p, set });
                }
                let irq = self.irq_mut(bank, intid);
                match irq.lr {
                    Some((owner, _)) => {
                        irq.set_active_req = set;
                        irq.clear_active_req = !set;
                        out.kick(owner as usize);
                    }
                    None => {
                        irq.active = set;
                        self.update(bank, intid, out);
                    }
                }
            }
        }
    }

    fn priority_mask(&self) -> u8 {
        match self.version {
            // The v2 LR holds 5 priority bits (IHI 0048B, GICH_LR<n>): the
            // unimplemented low bits are RAZ/WI, as on hardware.
            VgicVersion::V2 => 0xf8,
            VgicVersion::V3 => 0xff,
        }
    }

    pub(super) fn read_priority(&self, bank: usize, first: u32, nbytes: u32) -> u64 {
        let mut v = 0u64;
        for i in 0..nbytes {
            let intid = first + i;
            if self.exists(intid) {
                v |= u64::from(self.irq(bank, intid).priority) << (8 * i);
            }
        }
        v
    }

    pub(super) fn write_priority(
        &mut self,
        bank: usize,
        first: u32,
        nbytes: u32,
        value: u64,
        out: &mut Effects,
    ) {
        let mask = self.priority_mask();
        for i in 0..nbytes {
            let intid = first + i;
            if !self.exists(intid) {
                break;
            }
            let prio = (value >> (8 * i)) as u8 & mask;
            self.irq_mut(bank, intid).priority = prio;
            if let Some(p) = self.hw_spi(bank, intid) {
                out.push(Effect::PhysPriority { intid: p, prio });
            }
        }
    }

    /// GICD_ICFGR<n> / GICR_ICFGR<n>: Int_config in bit [2F+1] (1 = edge);
    /// SGIs read as edge and ignore writes.
    pub(super) fn read_config(&self, bank: usize, first: u32) -> u32 {
        let mut v = 0;
        for f in 0..16 {
            let intid = first + f;
            if !self.exists(intid) {
                break;
            }
            if self.irq(bank, intid).edge {
                v |= 2 << (2 * f);
            }
        }
        v
    }

    pub(super) fn write_config(&mut self, bank: usize, first: u32, value: u32, out: &mut Effects) {
        for f in 0..16 {
            let intid = first + f;
            if !self.exists(intid) {
                break;
            }
            if intid < 16 {
                continue;
            }
            let edge = value & (2 << (2 * f)) != 0;
            let irq = self.irq_mut(bank, intid);
            if irq.edge == edge {
                continue;
            }
            irq.edge = edge;
            if let Some(p) = self.hw_spi(bank, intid) {
                out.push(Effect::PhysConfig { intid: p, edge });
            }
            if self.irq(bank, intid).lr.is_none() {
                self.update(bank, intid, out);
            }
        }
    }
}
