//! Software-generated interrupts: GICD_SGIR and GICD_{C,S}PENDSGIR (v2,
//! IHI 0048B) and ICC_SGI1R_EL1 (v3, IHI 0069, "ICC_SGI1R_EL1").

use super::{Effects, Vgic, VgicError, VgicVersion};

/// A decoded ICC_SGI1R_EL1 value (the register's one definition is hv-arm's).
pub use hv_arm::gic::Sgi1r;

impl Vgic {
    /// v3: the guest wrote ICC_SGI1R_EL1 (trapped via ICH_HCR_EL2.TC or
    /// ICC_SRE/TALL1). Silently ignored on a v2 vGIC.
    pub fn sgi1r_write(
        &mut self,
        vcpu: usize,
        value: u64,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        if vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        if self.version != VgicVersion::V3 {
            return Ok(());
        }
        let sgi = Sgi1r::decode(value);
        for t in 0..self.vcpus.len() {
            let hit = if sgi.irm {
                t != vcpu
            } else {
                sgi.targets(self.vcpus[t].mpidr)
            };
            if hit {
                self.latch(t, u32::from(sgi.intid), out);
            }
        }
        Ok(())
    }

    /// The usual ICC_SGI1R_EL1 write, an SGI to one other vCPU that waits
    /// for it (enabled, its group on, inactive, neither queued nor in an
    /// LR), done without an effects pass: it is made pending and queued,
    /// as `sgi1r_write` would, and the vCPU to kick is returned. `None`
    /// for any other write, and then nothing changed (`sgi1r_write` it).
    pub fn sgi1r_write_one(&mut self, vcpu: usize, value: u64) -> Option<usize> {
        let sgi = Sgi1r::decode(value);
        if self.version != VgicVersion::V3 || sgi.irm || vcpu >= self.vcpus.len() {
            return None;
        }
        // One bit in the target list: the one PE with that affinity.
        if !sgi.target_list.is_power_of_two() {
            return None;
        }
        let aff0 = u64::from(sgi.rs) * 16 + u64::from(sgi.target_list.trailing_zeros());
        let mpidr = (u64::from(sgi.aff3) << 32) | (u64::from(sgi.aff2) << 16) | (u64::from(sgi.aff1) << 8) | aff0;
        let target = self.vcpus.iter().position(|c| c.mpidr & super::AFFINITY_MASK == mpidr)?;
        let intid = u32::from(sgi.intid);
        let group_on = self.group_enabled(self.vcpus.get(target)?.private.get(intid as usize)?.group1);
        let cpu = self.vcpus.get_mut(target)?;
        let irq = cpu.private.get_mut(intid as usize)?;
        if target == vcpu || !group_on || !irq.enabled || irq.active || irq.lr.is_some() || irq.queued_on.is_some() {
            return None;
        }
        irq.latch = true;
        irq.queued_on = Some(target as u8);
        cpu.queue.set(intid);
        Some(target)
    }

    /// GICD_SGIR: TargetListFilter [25:24], CPUTargetList [23:16],
    /// SGIINTID [3:0].
    pub(super) fn sgir_write(&mut self, vcpu: usize, value: u32, out: &mut Effects) {
        use hv_arm::gic::GICD_SGIR::{self, TargetListFilter::Value as Filter};
        let sgi = GICD_SGIR::SGIINTID.read(value);
        let all = (1u16 << self.vcpus.len()) - 1;
        let targets = match GICD_SGIR::TargetListFilter.read_as_enum(value) {
            Some(Filter::TargetList) => GICD_SGIR::CPUTargetList.read(value) as u16 & all,
            Some(Filter::AllOthers) => all & !(1 << vcpu),
            Some(Filter::SelfOnly) => 1 << vcpu,
            None => 0, // reserved
        };
        for t in 0..self.vcpus.len() {
            if targets & (1 << t) != 0 {
                self.v2_sgi_add_source(t, sgi, vcpu as u8, out);
            }
        }
    }

    /// The GICD_SPENDSGIR byte of one SGI for vCPU `bank`: pending sources,
    /// including the one in an LR.
    pub(super) fn v2_sgi_pending_sources(&self, bank: usize, sgi: u32) -> u8 {
        if sgi >= 16 {
            return 0;
        }
        let irq = self.irq(bank, sgi);
        let in_lr = if irq.lr.is_some() && irq.lr_state.pending && !irq.clear_pending_req {
            1 << irq.lr_source
        } else {
            0
        };
        self.vcpus[bank].sgi_sources[sgi as usize] | in_lr
    }

    pub(super) fn v2_sgi_write_sources(
        &mut self,
        bank: usize,
        sgi: u32,
        sources: u8,
        set: bool,
        out: &mut Effects,
    ) {
        if sgi >= 16 || sources == 0 {
            return;
        }
        let mask = ((1u16 << self.vcpus.len()) - 1) as u8;
        let sources = sources & mask;
        if set {
            for s in 0..8u8 {
                if sources & (1 << s) != 0 {
                    self.v2_sgi_add_source(bank, sgi, s, out);
                }
            }
            return;
        }
        self.vcpus[bank].sgi_sources[sgi as usize] &= !sources;
        let irq = self.irq_mut(bank, sgi);
        match irq.lr {
            Some((owner, _)) if sources & (1 << irq.lr_source) != 0 => {
                irq.clear_pending_req = true;
                out.kick(owner as usize);
            }
            Some(_) => {}
            None => self.update(bank, sgi, out),
        }
    }
}
