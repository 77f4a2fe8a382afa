//! List Registers: the encoding of GICH_LR<n> (v2, IHI 0048B "GICH_LR<n>") and
//! ICH_LR<n>_EL2 (v3, IHI 0069 "ICH_LR<n>_EL2"), and the flush/sync flow that moves
//! interrupts between the model and the vCPU's LRs.

use super::{Effect, Effects, Vgic, VgicError, VgicVersion, MAX_LRS};

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

/// A queued interrupt competing for an LR: active ones first, then by
/// priority (lower value wins), then by INTID.
type Candidate = (bool, u8, u32);

impl Vgic {
    /// Before entering `vcpu`: fold pending guest requests into its LRs, then
    /// fill free LRs with the best queued interrupts. A queued interrupt that
    /// beats a pending-only (not active) LR evicts it. If anything
    /// deliverable is left queued, the underflow maintenance interrupt is
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
        let n = lrs.count().min(MAX_LRS);
        for slot in 0..n {
            if let Some(intid) = self.vcpus[vcpu].slots[slot] {
                self.reconcile(vcpu, slot, intid, lrs, out);
            }
        }

        // The best `n` candidates, sorted.
        let mut best = [(false, 0u8, 0u32); MAX_LRS];
        let mut len = 0;
        let mut left_over = false;
        for intid in self.vcpus[vcpu].queue.iter() {
            let irq = self.irq(vcpu, intid);
            if !irq.active && !self.group_enabled(irq.group1) {
                continue;
            }
            let c: Candidate = (!irq.active, irq.priority, intid);
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

        for &(not_active, prio, intid) in &best[..len] {
            if let Some(slot) = (0..n).find(|&s| self.vcpus[vcpu].slots[s].is_none()) {
                self.place(vcpu, slot, intid, lrs);
                continue;
            }
            // Preempt the worst pending-only LR of strictly lower priority.
            let victim = (0..n)
                .filter_map(|s| {
                    let held = self.vcpus[vcpu].slots[s]?;
                    let irq = self.irq(vcpu, held);
                    (irq.lr_state == LrState::PENDING && (irq.priority > prio || !not_active))
                        .then_some((irq.priority, s))
                })
                .max();
            match victim {
                Some((_, slot)) => {
                    self.evict(vcpu, slot, lrs, out);
                    self.place(vcpu, slot, intid, lrs);
                    left_over = true;
                }
                None => left_over = true,
            }
        }
        lrs.set_underflow_irq(left_over);
        Ok(())
    }

    /// After `vcpu` exits (or on its maintenance interrupt): read back its
    /// LRs. An LR that went invalid was deactivated by the guest: the slot is
    /// freed and the interrupt re-queued if still pending (a latched edge, a
    /// level line still high, another v2 SGI source). Cost: O(LRs).
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
        for slot in 0..n {
            let Some(intid) = self.vcpus[vcpu].slots[slot] else {
                continue;
            };
            let state = ListRegister::decode(self.version, lrs.read(slot)).state;
            let irq = self.irq_mut(vcpu, intid);
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
        let irq = self.irq_mut(vcpu, intid);
        irq.lr = None;
        irq.lr_state = LrState::INVALID;
        irq.lr_latch = false;
        irq.clear_pending_req = false;
        irq.clear_active_req = false;
        irq.set_active_req = false;
        self.update(vcpu, intid, out);
    }

    /// Put queued `intid` into free LR `slot`, moving its pending (one v2
    /// SGI source, or the latch) and active state into the LR.
    fn place(&mut self, vcpu: usize, slot: usize, intid: u32, lrs: &mut impl ListRegisters) {
        let pending = self.irq(vcpu, intid).enabled && self.model_pending(vcpu, intid);
        let mut source = 0u8;
        if self.is_v2_sgi(intid) && pending {
            let srcs = &mut self.vcpus[vcpu].sgi_sources[intid as usize];
            source = srcs.trailing_zeros() as u8;
            *srcs &= !(1 << source);
        }
        let version = self.version;
        if let Some(q) = self.irq(vcpu, intid).queued_on {
            self.vcpus[q as usize].queue.clear(intid);
        }
        let irq = self.irq_mut(vcpu, intid);
        let state = LrState {
            pending,
            active: irq.active,
        };
        let level_sw = !irq.edge && irq.hw.is_none();
        let lr = ListRegister {
            vintid: intid,
            state,
            priority: irq.priority,
            group1: irq.group1,
            hw: irq.hw,
            // Level interrupts: exit on EOI to resample the line.
            eoi: level_sw,
            source,
        };
        irq.lr_latch = pending && (irq.latch || intid < 16);
        if pending {
            irq.latch = false;
        }
        irq.active = false;
        irq.lr_source = source;
        irq.lr_state = state;
        irq.lr = Some((vcpu as u8, slot as u8));
        irq.queued_on = None;
        self.vcpus[vcpu].slots[slot] = Some(intid);
        lrs.write(slot, lr.encode(version));
    }

    /// Take a pending-only interrupt back out of its LR into the queue.
    fn evict(&mut self, vcpu: usize, slot: usize, lrs: &mut impl ListRegisters, out: &mut Effects) {
        let Some(intid) = self.vcpus[vcpu].slots[slot] else {
            return;
        };
        let irq = self.irq(vcpu, intid);
        let (restore, source) = (irq.lr_latch, irq.lr_source);
        if self.is_v2_sgi(intid) {
            self.vcpus[vcpu].sgi_sources[intid as usize] |= 1 << source;
        } else if restore {
            self.irq_mut(vcpu, intid).latch = true;
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
        let changed = st != irq.lr_state;
        {
            let m = self.irq_mut(vcpu, intid);
            m.lr_state = st;
            m.lr_latch = lr_latch;
            m.latch = latch;
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
        } else if changed {
            let raw = lrs.read(slot);
            lrs.write(slot, ListRegister::with_state(raw, version, st));
        }
    }
}
