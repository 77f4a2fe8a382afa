//! List Registers: the encoding of GICH_LR<n> (v2, IHI 0048B "GICH_LR<n>") and
//! ICH_LR<n>_EL2 (v3, IHI 0069 "ICH_LR<n>_EL2"), and the flush/sync flow that moves
//! interrupts between the model and the vCPU's LRs.

use super::{lr_bits, lr_mask, Effect, Effects, Vgic, VgicError, VgicVersion, MAX_LRS};

/// The arch layer's List Registers of one vCPU (the hardware GICH_LR /
/// ICH_LR<n>_EL2 while the vCPU is loaded, or their saved copy).
pub trait ListRegisters {
    /// Implemented LRs (GICH_VTR.ListRegs / ICH_VTR_EL2.ListRegs, plus 1).
    fn count(&self) -> usize;
    fn read(&self, i: usize) -> u64;
    fn write(&mut self, i: usize, value: u64);
    /// GICH_HCR.UIE / ICH_HCR_EL2.UIE: maintenance interrupt when at most
    /// one LR holds a valid interrupt.
    fn set_underflow_irq(&mut self, on: bool);
    /// GICH_VMCR / ICH_VMCR_EL2: the guest's own controls of its virtual
    /// CPU interface (group enables, priority mask), which it changes
    /// without trapping.
    fn vmcr(&self) -> u64;
}

/// What the guest's virtual CPU interface lets through, decoded from
/// GICH_VMCR (IHI 0048B: VMGrp0En [0], VMGrp1En [1], VMPriMask [31:27]) or
/// ICH_VMCR_EL2 (IHI 0069: VENG0 [0], VENG1 [1], VPMR [31:24]). The
/// running priority (the active priorities) is not part of it: an
/// interrupt it holds back still competes by priority, which is enough
/// (whatever the running priority lets through has a higher priority).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuInterface {
    pub group0: bool,
    pub group1: bool,
    /// Priority mask: only priorities numerically lower are signalled.
    pub pmr: u8,
}

impl CpuInterface {
    /// Everything let through: the assumption before the first look at the
    /// guest's VMCR (it errs towards waking a vCPU, never towards sleeping).
    pub const OPEN: Self = Self {
        group0: true,
        group1: true,
        pmr: 0xff,
    };

    pub fn from_vmcr(version: VgicVersion, vmcr: u64) -> Self {
        let pmr = match version {
            VgicVersion::V2 => (((vmcr >> 27) & 0x1f) << 3) as u8,
            VgicVersion::V3 => (vmcr >> 24) as u8,
        };
        Self {
            group0: vmcr & 1 != 0,
            group1: vmcr & 2 != 0,
            pmr,
        }
    }

    pub fn group_enabled(&self, group1: bool) -> bool {
        if group1 {
            self.group1
        } else {
            self.group0
        }
    }

    /// Whether a pending, inactive interrupt of this group and priority is
    /// signalled to the vCPU (running priority aside).
    pub fn signals(&self, group1: bool, priority: u8) -> bool {
        self.group_enabled(group1) && priority < self.pmr
    }
}

/// The State field of an LR (and, in the model, of an interrupt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LrState {
    pub pending: bool,
    pub active: bool,
}

impl LrState {
    pub const INVALID: Self = Self {
        pending: false,
        active: false,
    };
    pub const PENDING: Self = Self {
        pending: true,
        active: false,
    };
    pub const ACTIVE: Self = Self {
        pending: false,
        active: true,
    };
    pub const PENDING_ACTIVE: Self = Self {
        pending: true,
        active: true,
    };

    pub fn is_invalid(self) -> bool {
        !self.pending && !self.active
    }

    fn bits(self) -> u64 {
        u64::from(self.pending) | (u64::from(self.active) << 1)
    }

    fn from_bits(b: u64) -> Self {
        Self {
            pending: b & 1 != 0,
            active: b & 2 != 0,
        }
    }
}

/// One List Register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListRegister {
    pub vintid: u32,
    pub state: LrState,
    /// 8-bit priority; v2 keeps only bits [7:3].
    pub priority: u8,
    pub group1: bool,
    /// HW = 1: the physical INTID deactivated when the guest deactivates
    /// `vintid`.
    pub hw: Option<u32>,
    /// HW = 0: EOI maintenance interrupt requested.
    pub eoi: bool,
    /// v2, HW = 0: CPUID, the source CPU of an SGI.
    pub source: u8,
}

impl ListRegister {
    /// GICH_LR<n>: VirtualID [9:0]; HW=1: PhysicalID [19:10]; HW=0: CPUID
    /// [12:10], EOI [19]; Priority [27:23]; State [29:28]; Grp1 [30]; HW [31].
    /// ICH_LR<n>_EL2: vINTID [31:0]; HW=1: pINTID [44:32] (10 bits used);
    /// HW=0: EOI [41]; Priority [55:48]; Group [60]; HW [61]; State [63:62].
    /// Inlined: where the fields are known (`Vgic::place_hw_loaded`, on
    /// the timer's wake-up path) most of it folds away.
    #[inline(always)]
    pub fn encode(&self, version: VgicVersion) -> u64 {
        match version {
            VgicVersion::V2 => {
                let mut v = u64::from(self.vintid & 0x3ff)
                    | (u64::from(self.priority >> 3) << 23)
                    | (self.state.bits() << 28)
                    | (u64::from(self.group1) << 30);
                match self.hw {
                    Some(p) => v |= (u64::from(p & 0x3ff) << 10) | (1 << 31),
                    None => v |= (u64::from(self.source & 7) << 10) | (u64::from(self.eoi) << 19),
                }
                v
            }
            VgicVersion::V3 => {
                let mut v = u64::from(self.vintid)
                    | (u64::from(self.priority) << 48)
                    | (u64::from(self.group1) << 60)
                    | (self.state.bits() << 62);
                match self.hw {
                    Some(p) => v |= (u64::from(p & 0x3ff) << 32) | (1 << 61),
                    None => v |= u64::from(self.eoi) << 41,
                }
                v
            }
        }
    }

    pub fn decode(version: VgicVersion, raw: u64) -> Self {
        match version {
            VgicVersion::V2 => {
                let hw = raw & (1 << 31) != 0;
                Self {
                    vintid: (raw & 0x3ff) as u32,
                    state: LrState::from_bits(raw >> 28),
                    priority: (((raw >> 23) & 0x1f) << 3) as u8,
                    group1: raw & (1 << 30) != 0,
                    hw: hw.then_some(((raw >> 10) & 0x3ff) as u32),
                    eoi: !hw && raw & (1 << 19) != 0,
                    source: if hw { 0 } else { ((raw >> 10) & 7) as u8 },
                }
            }
            VgicVersion::V3 => {
                let hw = raw & (1 << 61) != 0;
                Self {
                    vintid: raw as u32,
                    state: LrState::from_bits(raw >> 62),
                    priority: (raw >> 48) as u8,
                    group1: raw & (1 << 60) != 0,
                    hw: hw.then_some(((raw >> 32) & 0x1fff) as u32),
                    eoi: !hw && raw & (1 << 41) != 0,
                    source: 0,
                }
            }
        }
    }

    fn with_state(raw: u64, version: VgicVersion, state: LrState) -> u64 {
        match version {
            VgicVersion::V2 => (raw & !(3 << 28)) | (state.bits() << 28),
            VgicVersion::V3 => (raw & !(3 << 62)) | (state.bits() << 62),
        }
    }
}

/// How strongly an interrupt claims a List Register, strongest first.
/// Only the first kind can be taken by the guest as things stand; the
/// others are given an LR when one is spare, and give it back to any
/// stronger claim (IHI 0069, "Virtual interrupt handling and
/// prioritization": the hypervisor may hold interrupts in its own state
/// and swap List Register contents).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    /// Pending and inactive, its group enabled in the distributor and in
    /// the guest's CPU interface.
    Deliverable,
    /// Pending and inactive, but the guest's CPU interface has its group
    /// disabled (it may enable it without a trap).
    GroupOff,
    /// Active (and maybe pending) without the guest having acknowledged it
    /// (GICD_ISACTIVER): nothing to signal until it is deactivated. In an
    /// LR when one is spare, so a guest's ICC_DIR_EL1 / GICV_DIR finds it.
    Active,
}

/// A contender for an LR: the claim, then priority (lower value wins),
/// then INTID.
type Contender = (Claim, u8, u32);

impl Vgic {
    /// Before entering `vcpu`: fold pending guest requests into its LRs,
    /// take out pending LRs the guest may no longer see (the interrupt was
    /// disabled, or its group in the distributor), then give the LRs to the
    /// strongest contenders: a queued interrupt with a stronger claim
    /// (`Claim`, then priority) than an LR the guest has not acknowledged
    /// takes that LR, whose interrupt goes back to the queue with its
    /// pending and active state. LRs the guest acknowledged stay. If
    /// anything is left queued, the underflow maintenance interrupt is
    /// turned on, else off. Must follow a `sync` of every exit.
    /// Cost: O(LRs + queued interrupts × LRs).
    pub fn flush(
        &mut self,
        vcpu: usize,
        lrs: &mut impl ListRegisters,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        if vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        out.ensure_room(MAX_LRS)?;
        let cpuif = CpuInterface::from_vmcr(self.version, lrs.vmcr());
        self.vcpus[vcpu].cpuif = cpuif;
        let n = lrs.count().min(MAX_LRS);
        let lr_mask = lr_mask(n);
        for slot in lr_bits(self.vcpus[vcpu].used & lr_mask) {
            if let Some(intid) = self.vcpus[vcpu].slots[slot] {
                self.reconcile(vcpu, slot, intid, lrs, out);
            }
        }
        for slot in lr_bits(self.vcpus[vcpu].used & lr_mask) {
            if let Some(intid) = self.vcpus[vcpu].slots[slot] {
                let irq = self.irq(vcpu, intid);
                if irq.lr_state == LrState::PENDING && (!irq.enabled || !self.group_enabled(irq.group1)) {
                    self.evict(vcpu, slot, lrs, out);
                }
            }
        }

        if self.place_if_all_fit(vcpu, lr_mask, lrs) {
            return Ok(());
        }
        let contends = |vgic: &Self, intid: u32| {
            let irq = vgic.irq(vcpu, intid);
            irq.active || vgic.group_enabled(irq.group1)
        };

        // The best `n` contenders from the queue, sorted.
        let mut best = [(Claim::Deliverable, 0u8, 0u32); MAX_LRS];
        let mut len = 0;
        let mut left_over = false;
        for intid in self.vcpus[vcpu].queue.iter() {
            if !contends(self, intid) {
                continue;
            }
            let irq = self.irq(vcpu, intid);
            let c: Contender = (self.claim(cpuif, irq.active, irq.group1), irq.priority, intid);
            let pos = best[..len].partition_point(|b| *b <= c);
            if len < n {
                best.copy_within(pos..len, pos + 1);
                best[pos] = c;
                len += 1;
            } else {
                left_over = true;
                if pos < len {
                    best.copy_within(pos..len - 1, pos + 1);
                    best[pos] = c;
                }
            }
        }

        for &c in &best[..len] {
            let free = !self.vcpus[vcpu].used & lr_mask;
            if free != 0 {
                let slot = free.trailing_zeros() as usize;
                self.place(vcpu, slot, c.2, lrs);
                continue;
            }
            // Take the LR of the weakest contender the guest has not
            // acknowledged, if it is weaker than this one.
            let victim = lr_bits(self.vcpus[vcpu].used & lr_mask)
                .filter_map(|s| {
                    let held = self.vcpus[vcpu].slots[s]?;
                    let irq = self.irq(vcpu, held);
                    if irq.lr_acked {
                        return None;
                    }
                    let claim = self.claim(cpuif, irq.lr_state.active, irq.lr_group1);
                    let mine: Contender = (claim, irq.lr_priority, held);
                    (mine > c).then_some((mine, s))
                })
                .max();
            left_over = true;
            match victim {
                Some((_, slot)) => {
                    self.evict(vcpu, slot, lrs, out);
                    self.place(vcpu, slot, c.2, lrs);
                }
                // Contenders are sorted: no weaker LR for the rest either.
                None => break,
            }
        }
        lrs.set_underflow_irq(left_over);
        Ok(())
    }

    /// `flush` of a vCPU none of whose LRs is in use (nothing to read
    /// back, reconcile or take out) when every contender fits: the same
    /// LRs, without effects (there are none then). Returns whether it was
    /// that case; if not, nothing changed but the CPU interface controls
    /// it read (`flush` reads them again).
    pub fn flush_unused(&mut self, vcpu: usize, lrs: &mut impl ListRegisters) -> bool {
        let Some(cpu) = self.vcpus.get(vcpu) else {
            return false;
        };
        let lr_mask = lr_mask(lrs.count().min(MAX_LRS));
        if cpu.used & lr_mask != 0 {
            return false;
        }
        let cpuif = CpuInterface::from_vmcr(self.version, lrs.vmcr());
        self.vcpus[vcpu].cpuif = cpuif;
        // One interrupt queued (a vCPU woken for it): straight to LR 0.
        if let Some(intid) = self.vcpus[vcpu].queue.single() {
            let irq = self.irq(vcpu, intid);
            if lr_mask != 0 && (irq.active || self.group_enabled(irq.group1)) {
                self.place(vcpu, 0, intid, lrs);
                lrs.set_underflow_irq(false);
                return true;
            }
        }
        self.place_if_all_fit(vcpu, lr_mask, lrs)
    }

    /// The end of `flush` when every contender for an LR fits in a free
    /// one (the usual case: one or two queued): no choosing, each takes
    /// the lowest free LR. Returns false (nothing done) if they do not.
    fn place_if_all_fit(&mut self, vcpu: usize, lr_mask: u16, lrs: &mut impl ListRegisters) -> bool {
        let contends = |vgic: &Self, intid: u32| {
            let irq = vgic.irq(vcpu, intid);
            irq.active || vgic.group_enabled(irq.group1)
        };
        let cpu = &self.vcpus[vcpu];
        let free = !cpu.used & lr_mask;
        // The most common case by far: one interrupt queued.
        if let Some(intid) = cpu.queue.single() {
            if free != 0 && contends(self, intid) {
                self.place(vcpu, free.trailing_zeros() as usize, intid, lrs);
                lrs.set_underflow_irq(false);
                return true;
            }
        }
        let free = free.count_ones() as usize;
        let mut fitting = [0u32; MAX_LRS];
        let mut count = 0;
        for intid in self.vcpus[vcpu].queue.iter().filter(|&intid| contends(self, intid)) {
            if count == free {
                return false; // more than fit
            }
            fitting[count] = intid;
            count += 1;
        }
        for &intid in &fitting[..count] {
            let slot = (!self.vcpus[vcpu].used & lr_mask).trailing_zeros() as usize;
            self.place(vcpu, slot, intid, lrs);
        }
        lrs.set_underflow_irq(false);
        true
    }

    fn claim(&self, cpuif: CpuInterface, active: bool, group1: bool) -> Claim {
        if active {
            Claim::Active
        } else if cpuif.group_enabled(group1) {
            Claim::Deliverable
        } else {
            Claim::GroupOff
        }
    }

    /// After `vcpu` exits (or on its maintenance interrupt): read back its
    /// LRs. An LR that went invalid was deactivated by the guest: the slot is
    /// freed and the interrupt re-queued if still pending (a latched edge, a
    /// level line still high, another v2 SGI source). An LR whose pending
    /// state became active was acknowledged by the guest. Cost: O(LRs).
    pub fn sync(
        &mut self,
        vcpu: usize,
        lrs: &mut impl ListRegisters,
        out: &mut Effects,
    ) -> Result<(), VgicError> {
        if vcpu >= self.vcpus.len() {
            return Err(VgicError::BadVcpu);
        }
        let n = lrs.count().min(MAX_LRS);
        let lr_mask = lr_mask(n);
        for slot in lr_bits(self.vcpus[vcpu].used & lr_mask) {
            let Some(intid) = self.vcpus[vcpu].slots[slot] else {
                continue;
            };
            let state = ListRegister::decode(self.version, lrs.read(slot)).state;
            let irq = self.irq_mut(vcpu, intid);
            // Only an acknowledge takes an LR's pending state away.
            let acked_now = irq.lr_state.pending && !state.pending;
            irq.lr_acked = state.active && (irq.lr_acked || acked_now);
            irq.lr_state = state;
            if !state.pending {
                irq.lr_latch = false; // acknowledged
            }
            if state.is_invalid() {
                lrs.write(slot, 0);
                self.free_slot(vcpu, slot, intid, out);
            }
        }
        Ok(())
    }

    fn free_slot(&mut self, vcpu: usize, slot: usize, intid: u32, out: &mut Effects) {
        self.vcpus[vcpu].slots[slot] = None;
        self.vcpus[vcpu].used &= !(1 << slot);
        let irq = self.irq_mut(vcpu, intid);
        irq.lr = None;
        irq.lr_state = LrState::INVALID;
        irq.lr_latch = false;
        irq.lr_acked = false;
        irq.clear_pending_req = false;
        irq.clear_active_req = false;
        irq.set_active_req = false;
        self.update(vcpu, intid, out);
    }

    /// Put queued `intid` into free LR `slot`, moving its pending (one v2
    /// SGI source, or the latch) and active state into the LR. (The vCPU's
    /// bank and the interrupt are looked up once: this runs for every
    /// interrupt a vCPU takes.)
    pub(super) fn place(&mut self, vcpu: usize, slot: usize, intid: u32, lrs: &mut impl ListRegisters) {
        let version = self.version;
        let v2_sgi = self.is_v2_sgi(intid);
        let Self { vcpus, shared, .. } = self;
        let Some(cpu) = vcpus.get_mut(vcpu) else { return };
        let irq = if intid < 32 { cpu.private.get_mut(intid as usize) } else { shared.get_mut(intid as usize - 32) };
        let (Some(irq), Some(held)) = (irq, cpu.slots.get_mut(slot)) else { return };
        let mut source = 0u8;
        let pending = if v2_sgi {
            let srcs = &mut cpu.sgi_sources[intid as usize % 16];
            let pending = irq.enabled && *srcs != 0;
            if pending {
                source = srcs.trailing_zeros() as u8;
                *srcs &= !(1 << source);
            }
            pending
        } else {
            irq.enabled && (irq.latch || (!irq.edge && irq.hw.is_none() && irq.level))
        };
        let state = LrState {
            pending,
            active: irq.active,
        };
        let lr = ListRegister {
            vintid: intid,
            state,
            priority: irq.priority,
            group1: irq.group1,
            hw: irq.hw,
            // Level interrupts: exit on EOI to resample the line.
            eoi: !irq.edge && irq.hw.is_none(),
            source,
        };
        irq.lr_latch = pending && (irq.latch || intid < 16);
        if pending {
            irq.latch = false;
        }
        irq.active = false;
        irq.lr_source = source;
        irq.lr_state = state;
        irq.lr_acked = false;
        irq.lr_group1 = lr.group1;
        irq.lr_priority = lr.priority;
        irq.lr = Some((vcpu as u8, slot as u8));
        let queued_on = irq.queued_on.take();
        *held = Some(intid);
        cpu.used |= 1 << slot;
        if let Some(q) = queued_on {
            if let Some(c) = vcpus.get_mut(q as usize) {
                c.queue.clear(intid);
            }
        }
        lrs.write(slot, lr.encode(version));
    }

    /// Take an interrupt the guest has not acknowledged back out of its LR
    /// into the model (its pending and active state) and the queue.
    fn evict(&mut self, vcpu: usize, slot: usize, lrs: &mut impl ListRegisters, out: &mut Effects) {
        let Some(intid) = self.vcpus[vcpu].slots[slot] else {
            return;
        };
        let irq = self.irq(vcpu, intid);
        let (restore, source, state) = (irq.lr_latch, irq.lr_source, irq.lr_state);
        if !state.pending {
            // Nothing pending to give back.
        } else if self.is_v2_sgi(intid) {
            self.vcpus[vcpu].sgi_sources[intid as usize] |= 1 << source;
        } else if restore {
            self.irq_mut(vcpu, intid).latch = true;
        }
        if state.active {
            self.irq_mut(vcpu, intid).active = true;
        }
        lrs.write(slot, 0);
        self.free_slot(vcpu, slot, intid, out);
    }

    /// Fold model events into a resident LR (the vCPU is not running, and
    /// `sync` made `lr_state` current).
    fn reconcile(
        &mut self,
        vcpu: usize,
        slot: usize,
        intid: u32,
        lrs: &mut impl ListRegisters,
        out: &mut Effects,
    ) {
        let v2_sgi = self.is_v2_sgi(intid);
        let version = self.version;
        let irq = *self.irq(vcpu, intid);
        let mut st = irq.lr_state;
        let mut lr_latch = irq.lr_latch;
        let mut latch = irq.latch;
        if irq.clear_pending_req {
            st.pending = false;
            lr_latch = false;
        }
        if irq.clear_active_req {
            st.active = false;
        }
        if irq.set_active_req {
            st.active = true;
        }
        if v2_sgi {
            // Same (SGI, source) instance again: merge; other sources wait.
            let bit = 1u8 << irq.lr_source;
            let srcs = self.vcpus[vcpu].sgi_sources[intid as usize];
            if irq.enabled && srcs & bit != 0 && (st.pending || st.active) {
                st.pending = true;
                lr_latch = true;
                self.vcpus[vcpu].sgi_sources[intid as usize] &= !bit;
            }
        } else if latch && irq.enabled && (st.pending || irq.hw.is_none() || !st.active) {
            // New edge (or software pend): coalesce with a pending LR, or
            // make an active one active+pending. Never P+A with HW = 1.
            st.pending = true;
            lr_latch = true;
            latch = false;
        } else if !irq.edge && irq.hw.is_none() && !irq.level && !lr_latch && st.pending {
            // Level line dropped before the guest acknowledged it.
            st.pending = false;
        } else if irq.line_driven && !irq.level && st.pending && !st.active {
            // A hardware line (the timer) dropped before the guest took the
            // instance: withdrawn, and the physical interrupt deactivated.
            st.pending = false;
            lr_latch = false;
        }
        let dropped_hw_instance =
            irq.hw.is_some() && irq.lr_state.pending && !irq.lr_state.active && st.is_invalid();
        // An active state this adds (GICD_ISACTIVER) is not an acknowledge.
        let acked = irq.lr_acked && st.active;
        // Not acknowledged yet: the guest's group or priority changes reach
        // the LR (an acknowledged one keeps the priority it was taken at).
        let regroup = !acked && (irq.lr_group1 != irq.group1 || irq.lr_priority != irq.priority);
        let changed = st != irq.lr_state;
        {
            let m = self.irq_mut(vcpu, intid);
            m.lr_state = st;
            m.lr_acked = acked;
            m.lr_latch = lr_latch;
            m.latch = latch;
            if regroup {
                m.lr_group1 = m.group1;
                m.lr_priority = m.priority;
            }
            m.clear_pending_req = false;
            m.clear_active_req = false;
            m.set_active_req = false;
        }
        if st.is_invalid() {
            if let (true, Some(p)) = (dropped_hw_instance, irq.hw) {
                // The guest will never deactivate it: do it for the guest.
                out.push(Effect::PhysActive {
                    intid: p,
                    set: false,
                });
            }
            lrs.write(slot, 0);
            self.free_slot(vcpu, slot, intid, out);
        } else if regroup {
            let mut lr = ListRegister::decode(version, lrs.read(slot));
            lr.state = st;
            lr.group1 = irq.group1;
            lr.priority = irq.priority;
            lrs.write(slot, lr.encode(version));
        } else if changed {
            let raw = lrs.read(slot);
            lrs.write(slot, ListRegister::with_state(raw, version, st));
        }
    }
}
