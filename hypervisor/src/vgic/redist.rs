//! GICv3 redistributor emulation (IHI 0069, "The GIC Redistributor
//! register map" and "The GIC Redistributor register descriptions").
//!
//! Each vCPU has an RD_base frame followed by an SGI_base frame, laid out
//! in vCPU order; the frame index (not the accessing vCPU) selects the
//! redistributor, since one vCPU may program another's (Linux does at boot).
//! No LPIs: GICR_CTLR.EnableLPIs, PROPBASER, PENDBASER are RAZ/WI.

use hv_arm::gic::{gicr, redistributor_affinity, GICR_TYPER, GICR_WAKER, ID_REGISTERS_FROM_END};

use super::dist::{allow, check_frame, id_register, BitReg, IIDR};
use super::{AccessSize, Effects, Vgic, VgicError, VgicVersion, MAX_PHYS_EFFECTS};

/// Size of one redistributor frame (RD_base or SGI_base).
pub const REDIST_FRAME_SIZE: u64 = gicr::FRAME_SIZE as u64;
/// Distance between consecutive vCPUs' redistributors (two frames).
pub const REDIST_STRIDE: u64 = gicr::STRIDE as u64;

const WORD: &[AccessSize] = &[AccessSize::Word];
const BYTE_OR_WORD: &[AccessSize] = &[AccessSize::Byte, AccessSize::Word];
const WORD_OR_DOUBLE: &[AccessSize] = &[AccessSize::Word, AccessSize::Double];

const WAKER_PROCESSOR_SLEEP: u32 = GICR_WAKER::ProcessorSleep::SET.value;
const WAKER_CHILDREN_ASLEEP: u32 = GICR_WAKER::ChildrenAsleep::SET.value;

#[derive(Clone, Copy, Debug)]
enum RdReg {
    Ctlr,
    Iidr,
    /// GICR_TYPER, byte offset 0 (whole or low half) or 4 (high half).
    Typer {
        high: Option<bool>,
    },
    Waker,
    Id(u32),
    Bits(BitReg),
    Priority(u32),
    Config(u32),
    RazWi,
}

/// Is a read at `offset` of the distributor (`redistributor` false) or the
/// redistributors one of a vCPU's private pending bits: GICD_ISPENDR0 or
/// ICPENDR0 (banked per vCPU on GICv2; on GICv3 with affinity routing they
/// read as zero, so a needless sample costs nothing but time), or
/// GICR_ISPENDR0 or ICPENDR0 of vCPU `vcpu`'s own frame? Before such a read
/// the caller samples the lines it drives (`set_hw_line`). Decided without
/// the vGIC's lock, from the device and offset alone.
pub fn is_private_pending_read(redistributor: bool, offset: u64, vcpu: usize) -> bool {
    if redistributor {
        offset / REDIST_STRIDE == vcpu as u64 && matches!(offset % REDIST_STRIDE, 0x1_0200 | 0x1_0280)
    } else {
        matches!(offset, 0x200 | 0x280)
    }
}

impl Vgic {
    /// Split an offset in the whole redistributor region into (target
    /// vCPU, decoded register).
    fn redist_decode(&self, offset: u64, size: AccessSize) -> Result<(usize, RdReg), VgicError> {
        if self.version != VgicVersion::V3 {
            return Err(VgicError::OutOfFrame);
        }
        let target = offset / REDIST_STRIDE;
        if target >= self.vcpus.len() as u64 {
            return Err(VgicError::OutOfFrame);
        }
        let in_pair = offset % REDIST_STRIDE;
        let (frame_off, sgi_frame) = (in_pair % REDIST_FRAME_SIZE, in_pair >= REDIST_FRAME_SIZE);
        check_frame(frame_off, size, REDIST_FRAME_SIZE)?;
        let id_base = REDIST_FRAME_SIZE - ID_REGISTERS_FROM_END as u64;
        let (reg, sizes) = match (sgi_frame, frame_off as usize) {
            (false, gicr::CTLR) => (RdReg::Ctlr, WORD),
            (false, gicr::IIDR) => (RdReg::Iidr, WORD),
            (false, gicr::TYPER) => {
                let high = if size == AccessSize::Double {
                    None
                } else {
                    Some(false)
                };
                (RdReg::Typer { high }, WORD_OR_DOUBLE)
            }
            (false, o) if o == gicr::TYPER + 4 => (RdReg::Typer { high: Some(true) }, WORD),
            (false, gicr::WAKER) => (RdReg::Waker, WORD),
            // GICR_PROPBASER, GICR_PENDBASER: 64-bit, RAZ/WI without LPIs.
            (false, gicr::PROPBASER..gicr::PENDBASER_END) => (RdReg::RazWi, WORD_OR_DOUBLE),
            (false, _) if frame_off >= id_base => (
                RdReg::Id(id_register(VgicVersion::V3, (frame_off - id_base) / 4)),
                WORD,
            ),
            // SGI_base: only the first register of each array exists.
            (true, gicr::sgi::IGROUPR0..gicr::sgi::IPRIORITYR) => match BitReg::at(frame_off) {
                Some((r, 0)) => (RdReg::Bits(r), WORD),
                _ => (RdReg::RazWi, WORD),
            },
            (true, o @ gicr::sgi::IPRIORITYR..gicr::sgi::IPRIORITYR_END) => (RdReg::Priority((o - gicr::sgi::IPRIORITYR) as u32), BYTE_OR_WORD),
            (true, o @ (gicr::sgi::ICFGR0 | gicr::sgi::ICFGR1)) => (RdReg::Config((o - gicr::sgi::ICFGR0) as u32 / 4 * 16), WORD),
            _ => (RdReg::RazWi, WORD),
        };
        allow(size, sizes)?;
        Ok((target as usize, reg))
    }

    /// GICR_TYPER (IHI 0069, GICR_TYPER): Affinity_Value [63:32] from the
    /// vCPU's MPIDR, Processor_Number [23:8], Last [4]; no LPIs.
    fn gicr_typer(&self, target: usize) -> u64 {
        let aff = redistributor_affinity(self.vcpus[target].mpidr);
        let last = u64::from(target + 1 == self.vcpus.len());
        (GICR_TYPER::AffinityValue.val(aff) + GICR_TYPER::ProcessorNumber.val(target as u64) + GICR_TYPER::Last.val(last)).value
    }

    /// Emulate a guest load from the redistributor region (all vCPUs'
    /// frames, contiguous). `accessing_vcpu` is validated but the frame
    /// selects the redistributor.
    pub fn redist_read(
        &mut self,
        accessing_vcpu: usize,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, VgicError> {
        if accessing_vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        let (t, reg) = self.redist_decode(offset, size)?;
        Ok(match reg {
            RdReg::Ctlr | RdReg::RazWi => 0,
            RdReg::Iidr => u64::from(IIDR),
            RdReg::Typer { high } => {
                let v = self.gicr_typer(t);
                match high {
                    None => v,
                    Some(false) => v & 0xffff_ffff,
                    Some(true) => v >> 32,
                }
            }
            RdReg::Waker => {
                let sleep = self.vcpus[t].sleep;
                if sleep {
                    u64::from(WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP)
                } else {
                    0
                }
            }
            RdReg::Id(v) => u64::from(v),
            RdReg::Bits(r) => u64::from(self.read_bits(t, 0, r)),
            RdReg::Priority(first) => self.read_priority(t, first, size.bytes() as u32),
            RdReg::Config(first) => u64::from(self.read_config(t, first)),
        })
    }

    /// Emulate a guest store to the redistributor region. Drain `out`'s
    /// physical effects before the next write.
    pub fn redist_write(
        &mut self,
        accessing_vcpu: usize,
        offset: u64,
        size: AccessSize,
        value: u64,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        if accessing_vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        let (t, reg) = self.redist_decode(offset, size)?;
        out.ensure_room(MAX_PHYS_EFFECTS)?;
        match reg {
            RdReg::Ctlr | RdReg::Iidr | RdReg::Typer { .. } | RdReg::Id(_) | RdReg::RazWi => {}
            // ChildrenAsleep follows ProcessorSleep at once: nothing to
            // quiesce in an emulated redistributor.
            RdReg::Waker => self.vcpus[t].sleep = value as u32 & WAKER_PROCESSOR_SLEEP != 0,
            RdReg::Bits(r) => self.write_bits(t, 0, r, value as u32, out),
            RdReg::Priority(first) => {
                self.write_priority(t, first, size.bytes() as u32, value, out)
            }
            RdReg::Config(first) => self.write_config(t, first, value as u32, out),
        }
        Ok(())
    }
}
