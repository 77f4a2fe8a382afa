//! What the arch layer must do after a vGIC call: kick vCPUs, mirror guest
//! writes to hardware-linked interrupts onto the physical GIC.

use super::{VgicError, MAX_VCPUS};

/// Capacity for physical-GIC effects. One MMIO access touches at most 32
/// interrupts (a bit-per-interrupt register) and produces at most two
/// effects per interrupt (a GICD_ICPENDR write: `PhysPending` and
/// `PhysActive`), so 64 covers any single call; every entry point that can
/// produce physical effects checks for that much room *before* changing
/// state, so nothing is ever dropped.
pub const MAX_PHYS_EFFECTS: usize = 64;

/// One thing for the arch layer to do. `intid` in the `Phys*` variants is
/// the *physical* INTID the virtual interrupt is linked to (`link_hw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The vCPU has new deliverable work (or an LR needs updating): if it is
    /// running on another physical CPU, send that CPU an IPI so it exits
    /// and runs `sync` + `flush`; if it is blocked in WFI, wake it.
    Kick(usize),
    PhysEnable {
        intid: u32,
        enable: bool,
    },
    PhysPriority {
        intid: u32,
        prio: u8,
    },
    PhysConfig {
        intid: u32,
        edge: bool,
    },
    /// Route the physical SPI to whichever physical CPU runs this vCPU.
    PhysTarget {
        intid: u32,
        vcpu: usize,
    },
    PhysPending {
        intid: u32,
        set: bool,
    },
    PhysActive {
        intid: u32,
        set: bool,
    },
}

/// A fixed-capacity collection of effects: kicks are a bitmap (so they can
/// accumulate over any number of calls), physical effects a small array
/// (drain it after each MMIO write; see [`MAX_PHYS_EFFECTS`]).
#[derive(Clone, Debug)]
pub struct Effects {
    kicks: u8,
    phys: [Effect; MAX_PHYS_EFFECTS],
    len: usize,
}

impl Default for Effects {
    fn default() -> Self {
        Self::new()
    }
}

impl Effects {
    pub const fn new() -> Self {
        Self {
            kicks: 0,
            phys: [Effect::Kick(0); MAX_PHYS_EFFECTS],
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kicks == 0 && self.len == 0
    }

    pub fn clear(&mut self) {
        self.kicks = 0;
        self.len = 0;
    }

    /// vCPUs to kick, in index order.
    pub fn kicks(&self) -> impl Iterator<Item = usize> + '_ {
        super::set_bits(u16::from(self.kicks))
    }

    /// Physical-GIC effects, in the order the guest's write implied them.
    pub fn phys(&self) -> &[Effect] {
        &self.phys[..self.len]
    }

    /// Takes back a kick of `vcpu` (what it was for is done).
    pub(super) fn unkick(&mut self, vcpu: usize) {
        self.kicks &= !(1u8 << (vcpu % MAX_VCPUS));
    }

    pub(super) fn kick(&mut self, vcpu: usize) {
        debug_assert!(vcpu < MAX_VCPUS);
        self.kicks |= 1u8 << (vcpu % MAX_VCPUS);
    }

    /// Checked by entry points before they change any state.
    pub(super) fn ensure_room(&self, n: usize) -> Result<(), VgicError> {
        if self.len + n <= MAX_PHYS_EFFECTS {
            Ok(())
        } else {
            Err(VgicError::EffectsFull)
        }
    }

    pub(super) fn push(&mut self, e: Effect) {
        // Cannot fail: `ensure_room` reserved the worst case for this call.
        debug_assert!(self.len < MAX_PHYS_EFFECTS, "vgic effect bound violated");
        if let Some(slot) = self.phys.get_mut(self.len) {
            *slot = e;
            self.len += 1;
        }
    }
}
