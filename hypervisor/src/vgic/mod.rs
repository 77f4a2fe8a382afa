//! Virtual GIC: the emulated distributor (GICv2 and GICv3) and
//! redistributors (GICv3) a VM sees, and the List Register flow that feeds
//! the real virtual CPU interface.
//!
//! Arch-neutral and host-tested. The arch layer (not here) decodes the trap,
//! calls the MMIO/sysreg emulation below, carries out the returned
//! [`Effects`], and implements [`ListRegisters`] over GICH_LR<n> /
//! ICH_LR<n>_EL2. Layout of the module:
//! - `irq`: per-interrupt state and the per-vCPU queue bitmap;
//! - `dist`: GICD_* (IHI 0048B, IHI 0069);
//! - `redist`: GICR_* (IHI 0069);
//! - `sgi`: GICD_SGIR (v2) and ICC_SGI1R_EL1 (v3) SGI generation;
//! - `lr`: List Register encoding and `flush`/`sync`;
//! - `effects`: what the arch layer must do afterwards.
//!
//! Anything a guest controls (offsets, sizes, values) is validated and
//! answered with a [`VgicError`] or RAZ/WI; nothing here panics on guest
//! input.
#![forbid(unsafe_code)]

mod dist;
mod effects;
mod irq;
mod lr;
mod redist;
mod sgi;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

pub use crate::esr::AccessSize;
pub use dist::{DistFixed, V2_DIST_SIZE, V3_DIST_SIZE};
pub use effects::{Effect, Effects, MAX_PHYS_EFFECTS};
pub use redist::is_private_pending_read;
pub use lr::{CpuInterface, ListRegister, ListRegisters, LrState};
pub use redist::{REDIST_FRAME_SIZE, REDIST_STRIDE};
pub use sgi::Sgi1r;

use irq::{Irq, IrqBitmap};

/// Most vCPUs one VM may have (v2's CPU interface limit; the ABI's
/// `MAX_VCPUS`, which dom0's toolstack checks against).
pub const MAX_VCPUS: usize = hv_abi::hypercall::MAX_VCPUS as usize;
/// Most SPIs: INTIDs 32..1019 (1020..1023 are special).
pub const MAX_SPIS: u32 = 988;
/// Most List Registers (GICH_VTR.ListRegs / ICH_VTR_EL2.ListRegs + 1).
pub const MAX_LRS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgicVersion {
    V2,
    V3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgicError {
    /// Offset outside the emulated frame: inject an external data abort.
    OutOfFrame,
    /// An access width (or alignment) the GIC architecture does not allow for
    /// this register: inject an external data abort.
    BadAccessSize,
    /// A vCPU index out of range (hypervisor bug if not guest-chosen).
    BadVcpu,
    /// An INTID this VM does not have, or not valid for the operation.
    BadIntid,
    /// `Vgic::new` parameters out of range.
    BadConfig,
    /// The caller did not drain [`Effects`] between MMIO writes (hypervisor
    /// bug); no state was changed.
    EffectsFull,
}

/// What `Vgic::place_hw_loaded` did with a hardware PPI of the loaded vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwPlaced {
    /// Not its usual case: nothing changed (take the general way).
    No,
    /// In a free list register, pending. `signalled`: the vCPU's CPU
    /// interface (as of the last flush) lets it through, so `has_work` is
    /// true for the vCPU now and need not be asked.
    Yes { signalled: bool },
}

/// A snapshot of one interrupt, for the arch layer (e.g. to mirror a
/// HW-linked PPI onto the physical CPU on context switch) and for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqView {
    pub enabled: bool,
    /// Pending in the model or in an LR (as of the last flush/sync).
    pub pending: bool,
    pub active: bool,
    pub priority: u8,
    pub edge: bool,
    pub group1: bool,
    pub hw: Option<u32>,
    /// For SPIs, the vCPU it is routed to; for private ones, the bank.
    pub dest: Option<usize>,
    /// (vCPU, LR index) while in a List Register.
    pub in_lr: Option<(usize, usize)>,
    pub queued: bool,
}

/// Per-vCPU state: the banked SGIs/PPIs, the delivery queue, the LR map and
/// the redistributor's own registers.
#[derive(Clone, Debug)]
struct VcpuState {
    private: [Irq; 32],
    /// v2 only: for each SGI, the source CPUs with a pending instance
    /// (IHI 0048B, GICD_SPENDSGIR<n>: one pending instance per (SGI, source)).
    sgi_sources: [u8; 16],
    /// Interrupts routed here that want an LR: (pending and enabled) or
    /// active, and not in an LR.
    queue: IrqBitmap,
    /// INTID held by each LR (as this model placed it).
    slots: [Option<u32>; MAX_LRS],
    /// Bit i: `slots[i]` holds an interrupt. The loops over LRs on every
    /// flush, sync and WFI visit only these (most of the time none or one).
    used: u16,
    /// The guest's CPU interface controls, as of the last `flush`.
    cpuif: CpuInterface,
    mpidr: u64,
    /// GICR_WAKER.ProcessorSleep.
    sleep: bool,
}

/// The virtual GIC of one VM.
#[derive(Clone, Debug)]
pub struct Vgic {
    version: VgicVersion,
    spis: u32,
    /// GICD_CTLR bit 0 EnableGrp0, bit 1 EnableGrp1 (v2 and the v3
    /// single-security-state view, IHI 0069 GICD_CTLR).
    ctlr: u32,
    vcpus: Vec<VcpuState>,
    shared: Vec<Irq>,
}

/// The numbers of the bits set in `word`, in ascending order (LRs in use,
/// vCPUs to kick).
fn set_bits(mut word: u16) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if word == 0 {
            return None;
        }
        let bit = word.trailing_zeros() as usize;
        word &= word - 1;
        Some(bit)
    })
}

/// The LR numbers whose bits are set in `used`, in ascending order.
fn lr_bits(used: u16) -> impl Iterator<Item = usize> {
    set_bits(used)
}

/// The bits of LRs 0..n.
fn lr_mask(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        (1u16 << n) - 1
    }
}

/// IROUTER/MPIDR affinity fields (the same positions in both).
const AFFINITY_MASK: u64 = hv_arm::gic::IROUTER_AFFINITY_MASK;
/// GICD_IROUTER.Interrupt_Routing_Mode.
const IROUTER_IRM: u64 = hv_arm::gic::GICD_IROUTER::IRM::SET.value;

impl Vgic {
    /// `spis` is how many SPIs the physical GIC has: a multiple of 32 up to
    /// 960, or 988 (a GIC with ITLinesNumber = 31 stops at INTID 1019).
    pub fn new(
        version: VgicVersion,
        vcpus: usize,
        spis: u32,
        vcpu_mpidr: impl Fn(usize) -> u64,
    ) -> Result<Self, VgicError> {
        if !(1..=MAX_VCPUS).contains(&vcpus)
            || spis > MAX_SPIS
            || (!spis.is_multiple_of(32) && spis != MAX_SPIS)
        {
            return Err(VgicError::BadConfig);
        }
        let group1 = false; // IGROUPR resets to 0 (IHI 0069, IHI 0048B: GICD_IGROUPR<n>)
        let mut private = [Irq::reset(false, group1); 32];
        for sgi in private.iter_mut().take(16) {
            sgi.edge = true; // SGIs are always edge-triggered
        }
        let cpus = (0..vcpus)
            .map(|i| VcpuState {
                private,
                sgi_sources: [0; 16],
                queue: IrqBitmap::default(),
                slots: [None; MAX_LRS],
                used: 0,
                cpuif: CpuInterface::OPEN,
                mpidr: vcpu_mpidr(i),
                sleep: true,
            })
            .collect::<Vec<_>>();
        let mut spi = Irq::reset(false, group1);
        // Reset routing (architecturally UNKNOWN) to vCPU 0.
        spi.targets = 1;
        spi.route = cpus[0].mpidr & AFFINITY_MASK;
        spi.dest = Some(0);
        let shared = alloc::vec![spi; spis as usize];
        Ok(Self {
            version,
            spis,
            ctlr: 0,
            vcpus: cpus,
            shared,
        })
    }

    pub fn version(&self) -> VgicVersion {
        self.version
    }

    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    // ----- injection API (hypervisor side) -----

    /// Drive a level-sensitive input (virtual devices). For an interrupt
    /// configured edge-triggered, a rising edge latches it pending.
    /// `vcpu_for_private` selects the bank for INTIDs < 32 (ignored for SPIs).
    pub fn set_level(
        &mut self,
        intid: u32,
        vcpu_for_private: usize,
        level: bool,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        let bank = self.check_injection(intid, vcpu_for_private)?;
        if self.version == VgicVersion::V2 && intid < 16 {
            if level {
                self.v2_sgi_add_source(bank, intid, bank as u8, out);
            }
            return Ok(());
        }
        let irq = self.irq_mut(bank, intid);
        let rising = level && !irq.level;
        irq.level = level;
        if irq.edge && rising {
            irq.latch = true;
        }
        let in_lr = irq.lr;
        match in_lr {
            // Level changes of an interrupt in an LR are folded in at the
            // next flush (and resampled on EOI); an edge needs a kick.
            Some((owner, _)) if rising => out.kick(owner as usize),
            Some(_) => {}
            None => self.update(bank, intid, out),
        }
        Ok(())
    }

    /// Latch an edge (or make a level interrupt pending once, as
    /// GICD_ISPENDR would).
    pub fn pulse(
        &mut self,
        intid: u32,
        vcpu_for_private: usize,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        let bank = self.check_injection(intid, vcpu_for_private)?;
        if self.version == VgicVersion::V2 && intid < 16 {
            self.v2_sgi_add_source(bank, intid, bank as u8, out);
            return Ok(());
        }
        self.latch(bank, intid, out);
        Ok(())
    }

    /// Link virtual `intid` to physical `phys` (INTID 16..1019): its
    /// pending/active state then lives in the physical GIC once injected,
    /// and guest writes to it are mirrored as `Phys*` effects (SPIs only;
    /// see `Effect`). `vcpu_for_private` is required for PPIs.
    pub fn link_hw(
        &mut self,
        intid: u32,
        vcpu_for_private: Option<usize>,
        phys: u32,
    ) -> Result<(), VgicError> {
        if !(16..1020).contains(&phys) || intid < 16 {
            return Err(VgicError::BadIntid);
        }
        let bank = match (intid < 32, vcpu_for_private) {
            (true, None) => return Err(VgicError::BadVcpu),
            (_, v) => self.check_injection(intid, v.unwrap_or(0))?,
        };
        self.irq_mut(bank, intid).hw = Some(phys);
        Ok(())
    }

    /// The output line of the device behind hardware-linked `intid` (a
    /// level interrupt such as the virtual timer's), as the caller sampled
    /// it: for the timer, enabled, condition met and not masked. (The core
    /// samples it when the guest reads its private pending bits.) From the
    /// first call on, the interrupt's pending state as the guest reads it
    /// (GICR_ISPENDR0 / GICD_ISPENDR0) is this level; once it is low, an
    /// instance the hypervisor acknowledged but the guest has not taken is
    /// withdrawn: from the queue at once (deactivating the physical
    /// interrupt), from a pending List Register at the owner's next flush
    /// (a `Kick`), so a timer the guest disabled or masked raises nothing.
    pub fn set_hw_line(
        &mut self,
        intid: u32,
        vcpu_for_private: usize,
        level: bool,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        let bank = self.check_injection(intid, vcpu_for_private)?;
        out.ensure_room(1)?;
        let irq = self.irq_mut(bank, intid);
        let Some(phys) = irq.hw else {
            return Err(VgicError::BadIntid);
        };
        irq.line_driven = true;
        irq.level = level;
        if level {
            return Ok(());
        }
        let dropped = core::mem::take(&mut irq.latch);
        match irq.lr {
            Some((owner, _)) if irq.lr_state.pending => out.kick(owner as usize),
            Some(_) => {}
            None => {
                if dropped {
                    // Acknowledged by the hypervisor, never to be taken.
                    out.push(Effect::PhysActive { intid: phys, set: false });
                }
                self.update(bank, intid, out);
            }
        }
        Ok(())
    }

    /// Undo `link_hw`. Refused while the interrupt is in an LR (its LR
    /// still names the physical interrupt).
    pub fn unlink_hw(
        &mut self,
        intid: u32,
        vcpu_for_private: Option<usize>,
    ) -> Result<(), VgicError> {
        let bank = self.check_injection(intid, vcpu_for_private.unwrap_or(0))?;
        let irq = self.irq_mut(bank, intid);
        if irq.lr.is_some() {
            return Err(VgicError::BadIntid);
        }
        irq.hw = None;
        irq.latch = false;
        Ok(())
    }

    /// The physical interrupt linked to `intid` fired; the hypervisor has
    /// acknowledged and priority-dropped it (it stays active until the
    /// guest deactivates the virtual one through an HW=1 LR).
    pub fn inject_hw(
        &mut self,
        intid: u32,
        vcpu_for_private: usize,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        let bank = self.check_injection(intid, vcpu_for_private)?;
        let irq = self.irq_mut(bank, intid);
        if irq.hw.is_none() {
            return Err(VgicError::BadIntid);
        }
        if irq.line_driven {
            irq.level = true; // it fired: its line is high
        }
        self.latch(bank, intid, out);
        Ok(())
    }

    /// The usual case of `inject_hw_loaded` (the virtual timer of a vCPU
    /// with nothing else queued), which needs no effects: the interrupt
    /// goes straight to a free LR without passing through the queue
    /// (`latch` would queue it and kick, `place` take it out and the kick
    /// back), to the same state. If it did not, nothing changed. It is on
    /// the timer's wake-up path, so it reaches the vCPU's bank once and
    /// writes what `place` would for this one case (a hardware PPI, pending
    /// only; `inject_hw_loaded_ends_as_inject_hw_and_a_flush_would` holds
    /// the two together).
    pub fn place_hw_loaded(&mut self, intid: u32, vcpu: usize, lrs: &mut impl ListRegisters) -> Result<HwPlaced, VgicError> {
        self.check_injection(intid, vcpu)?;
        if !(16..32).contains(&intid) {
            return Ok(HwPlaced::No);
        }
        let (version, ctlr) = (self.version, self.ctlr);
        let lr_count = lrs.count().min(MAX_LRS);
        let cpu = &mut self.vcpus[vcpu];
        let free = !cpu.used & lr_mask(lr_count);
        let queue_empty = cpu.queue.is_empty();
        let irq = &mut cpu.private[intid as usize];
        let Some(phys) = irq.hw else { return Ok(HwPlaced::No) };
        let group_on = ctlr & (1 << u32::from(irq.group1)) != 0;
        if free == 0 || !queue_empty || irq.lr.is_some() || irq.queued_on.is_some() || irq.active || !irq.enabled || !group_on {
            return Ok(HwPlaced::No);
        }
        let slot = free.trailing_zeros() as usize;
        if irq.line_driven {
            irq.level = true; // it fired: its line is high
        }
        // As `place` leaves a latched, enabled, inactive interrupt: the
        // latch moves into the LR.
        irq.latch = false;
        irq.lr_latch = true;
        irq.lr_source = 0;
        irq.lr_state = LrState::PENDING;
        irq.lr_acked = false;
        irq.lr_group1 = irq.group1;
        irq.lr_priority = irq.priority;
        irq.lr = Some((vcpu as u8, slot as u8));
        let lr = ListRegister {
            vintid: intid,
            state: LrState::PENDING,
            priority: irq.priority,
            group1: irq.group1,
            hw: Some(phys),
            eoi: false,
            source: 0,
        };
        cpu.slots[slot] = Some(intid);
        cpu.used |= 1 << slot;
        let signalled = cpu.cpuif.signals(lr.group1, lr.priority);
        lrs.write(slot, lr.encode(version));
        Ok(HwPlaced::Yes { signalled })
    }

    /// `inject_hw` of private interrupt `intid` (< 32) for `vcpu`, which is
    /// loaded on this CPU with list registers `lrs`, as the last `flush`
    /// left them: if the interrupt is all the vCPU has queued and an LR is
    /// free, it goes straight into that LR, as the next flush would have
    /// put it, and the vCPU needs no kick for it. Returns whether it did.
    pub fn inject_hw_loaded(
        &mut self,
        intid: u32,
        vcpu: usize,
        lrs: &mut impl ListRegisters,
        out: &mut Effects,
    ) -> Result<bool, VgicError> {
        if self.place_hw_loaded(intid, vcpu, lrs)? != HwPlaced::No {
            return Ok(true);
        }
        self.inject_hw(intid, vcpu, out)?;
        let cpu = &self.vcpus[vcpu];
        let free = !cpu.used & lr_mask(lrs.count().min(MAX_LRS));
        let irq = self.irq(vcpu, intid);
        let alone = intid < 32 && irq.queued_on == Some(vcpu as u8) && cpu.queue.only(intid);
        if !alone || free == 0 || (!irq.active && !self.group_enabled(irq.group1)) {
            return Ok(false);
        }
        self.place(vcpu, free.trailing_zeros() as usize, intid, lrs);
        out.unkick(vcpu);
        Ok(true)
    }

    /// Whether the vCPU has something to run for (for WFI): an interrupt,
    /// queued or in an LR, that its CPU interface would signal (pending and
    /// inactive, its group enabled in the distributor and in the CPU
    /// interface, above the priority mask, as of the last `flush`). The
    /// running priority is not looked at: a WFI inside a handler may return
    /// early, as WFI may.
    pub fn has_work(&self, vcpu: usize) -> bool {
        let Some(cpu) = self.vcpus.get(vcpu) else {
            return false;
        };
        let signals = |irq: &Irq| self.group_enabled(irq.group1) && cpu.cpuif.signals(irq.group1, irq.priority);
        cpu.queue.iter().any(|intid| {
            let irq = self.irq(vcpu, intid);
            !irq.active && signals(irq)
        }) || lr_bits(cpu.used).any(|slot| {
            let Some(intid) = cpu.slots[slot] else { return false };
            let irq = self.irq(vcpu, intid);
            irq.lr_state == LrState::PENDING && cpu.cpuif.signals(irq.lr_group1, irq.lr_priority)
        })
    }

    /// A snapshot of one interrupt (`vcpu` selects the bank for INTID < 32).
    pub fn irq_view(&self, intid: u32, vcpu: usize) -> Option<IrqView> {
        let bank = self.check_injection(intid, vcpu).ok()?;
        let irq = self.irq(bank, intid);
        Some(IrqView {
            enabled: irq.enabled,
            pending: self.visible_pending(bank, intid),
            active: self.visible_active(bank, intid),
            priority: irq.priority,
            edge: irq.edge,
            group1: irq.group1,
            hw: irq.hw,
            dest: if intid < 32 {
                Some(bank)
            } else {
                irq.dest.map(usize::from)
            },
            in_lr: irq.lr.map(|(v, s)| (v as usize, s as usize)),
            queued: irq.queued_on.is_some(),
        })
    }

    // ----- internals shared by dist, redist, sgi and lr -----

    fn nr_irqs(&self) -> u32 {
        32 + self.spis
    }

    fn exists(&self, intid: u32) -> bool {
        intid < self.nr_irqs()
    }

    fn check_injection(&self, intid: u32, vcpu: usize) -> Result<usize, VgicError> {
        if vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        if !self.exists(intid) {
            return Err(VgicError::BadIntid);
        }
        Ok(vcpu)
    }

    /// `bank` < vcpus and `intid` < nr_irqs: callers validate.
    fn irq(&self, bank: usize, intid: u32) -> &Irq {
        if intid < 32 {
            &self.vcpus[bank].private[intid as usize]
        } else {
            &self.shared[(intid - 32) as usize]
        }
    }

    fn irq_mut(&mut self, bank: usize, intid: u32) -> &mut Irq {
        if intid < 32 {
            &mut self.vcpus[bank].private[intid as usize]
        } else {
            &mut self.shared[(intid - 32) as usize]
        }
    }

    fn group_enabled(&self, group1: bool) -> bool {
        self.ctlr & (1 << u32::from(group1)) != 0
    }

    fn is_v2_sgi(&self, intid: u32) -> bool {
        self.version == VgicVersion::V2 && intid < 16
    }

    /// Pending in the model (not counting an LR).
    #[inline]
    fn model_pending(&self, bank: usize, intid: u32) -> bool {
        if self.is_v2_sgi(intid) {
            return self.vcpus[bank].sgi_sources[intid as usize] != 0;
        }
        let irq = self.irq(bank, intid);
        irq.latch || (!irq.edge && irq.hw.is_none() && irq.level)
    }

    fn visible_pending(&self, bank: usize, intid: u32) -> bool {
        let irq = self.irq(bank, intid);
        if irq.line_driven {
            return irq.level;
        }
        self.model_pending(bank, intid)
            || (irq.lr.is_some() && irq.lr_state.pending && !irq.clear_pending_req)
    }

    /// The interrupts `first..first + 32` that exist (`first` a multiple
    /// of 32): bank `bank`'s private ones, or a run of the shared ones.
    fn irq_word(&self, bank: usize, first: u32) -> &[Irq] {
        if first < 32 {
            &self.vcpus[bank].private
        } else {
            let start = (first - 32) as usize;
            let end = (start + 32).min(self.shared.len());
            self.shared.get(start..end).unwrap_or(&[])
        }
    }

    fn visible_active(&self, bank: usize, intid: u32) -> bool {
        Self::irq_visible_active(self.irq(bank, intid))
    }

    fn irq_visible_active(irq: &Irq) -> bool {
        match irq.lr {
            None => irq.active,
            Some(_) => irq.set_active_req || (irq.lr_state.active && !irq.clear_active_req),
        }
    }

    /// Resolve an SPI's destination vCPU from its routing fields.
    fn resolve_dest(&self, irq: &Irq) -> Option<u8> {
        match self.version {
            VgicVersion::V2 => {
                let t = irq.targets;
                (t != 0).then(|| t.trailing_zeros() as u8)
            }
            VgicVersion::V3 if irq.route & IROUTER_IRM != 0 => Some(0),
            VgicVersion::V3 => self
                .vcpus
                .iter()
                .position(|c| c.mpidr & AFFINITY_MASK == irq.route & AFFINITY_MASK)
                .map(|i| i as u8),
        }
    }

    /// Re-establish the queue invariant for one interrupt: it is in exactly
    /// one vCPU's queue iff it is not in an LR, has a destination, and is
    /// (pending and enabled) or active. A newly queued interrupt whose group
    /// is enabled kicks its vCPU.
    fn update(&mut self, bank: usize, intid: u32, out: &mut Effects) {
        let pending = self.model_pending(bank, intid);
        let group_on = self.group_enabled(self.irq(bank, intid).group1);
        let irq = self.irq_mut(bank, intid);
        let dest = if intid < 32 {
            Some(bank as u8)
        } else {
            irq.dest
        };
        let want = if irq.lr.is_none() && ((irq.enabled && pending) || irq.active) {
            dest
        } else {
            None
        };
        let old = irq.queued_on;
        if want == old {
            return;
        }
        irq.queued_on = want;
        let active = irq.active;
        if let Some(o) = old {
            self.vcpus[o as usize].queue.clear(intid);
        }
        if let Some(n) = want {
            self.vcpus[n as usize].queue.set(intid);
            if group_on || active {
                out.kick(n as usize);
            }
        }
    }

    /// A new pending event for a non-v2-SGI interrupt.
    fn latch(&mut self, bank: usize, intid: u32, out: &mut Effects) {
        let irq = self.irq_mut(bank, intid);
        irq.latch = true;
        match irq.lr {
            Some((owner, _)) => out.kick(owner as usize),
            None => self.update(bank, intid, out),
        }
    }

    /// A v2 SGI instance from `source` for the vCPU `bank`.
    fn v2_sgi_add_source(&mut self, bank: usize, sgi: u32, source: u8, out: &mut Effects) {
        self.vcpus[bank].sgi_sources[sgi as usize] |= 1 << (source % 8);
        match self.irq(bank, sgi).lr {
            Some((owner, _)) => out.kick(owner as usize),
            None => self.update(bank, sgi, out),
        }
    }

    /// The test-only consistency check: the invariants of the brief.
    #[cfg(test)]
    fn check_invariants(&self) {
        let n = self.vcpus.len();
        for v in 0..n {
            for intid in 0..self.nr_irqs() {
                if intid < 32 || v == 0 {
                    let irq = self.irq(v, intid);
                    let queued_anywhere = (0..n)
                        .filter(|&q| self.vcpus[q].queue.test(intid) && (intid >= 32 || q == v))
                        .count();
                    assert!(queued_anywhere <= 1, "intid {intid} queued twice");
                    assert_eq!(
                        queued_anywhere == 1,
                        irq.queued_on.is_some(),
                        "intid {intid} queue flag"
                    );
                    if let Some((o, s)) = irq.lr {
                        assert!(irq.queued_on.is_none(), "intid {intid} in LR and queue");
                        assert_eq!(self.vcpus[o as usize].slots[s as usize], Some(intid));
                    }
                }
            }
            let mut seen = alloc::vec::Vec::new();
            for (s, slot) in self.vcpus[v].slots.iter().enumerate() {
                assert_eq!(self.vcpus[v].used & (1 << s) != 0, slot.is_some(), "used bit of LR {s}");
                if let Some(intid) = *slot {
                    assert!(!seen.contains(&intid), "intid {intid} in two LRs");
                    seen.push(intid);
                    assert_eq!(self.irq(v, intid).lr, Some((v as u8, s as u8)));
                }
            }
        }
        for intid in 32..self.nr_irqs() {
            let holders = (0..n)
                .filter(|&v| self.vcpus[v].slots.contains(&Some(intid)))
                .count();
            assert!(holders <= 1, "SPI {intid} in LRs of two vCPUs");
        }
    }
}
