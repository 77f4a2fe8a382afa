//! Per-interrupt state and the per-vCPU delivery queue (a bitmap).

use super::lr::LrState;

/// One virtual interrupt's state (IHI 0069 and IHI 0048B,
/// "Interrupt states"). Private interrupts (INTID 0..31) exist once per vCPU
/// ("banked"); SPIs once per VM.
///
/// While an interrupt sits in a List Register, its pending/active state
/// belongs to the LR (`lr_state` is the copy from the last flush/sync); the
/// model fields then only record *new* events (`latch`) and guest requests
/// (`*_req`) that `flush` folds into the LR.
#[derive(Clone, Copy, Debug)]
pub(super) struct Irq {
    pub enabled: bool,
    /// Edge pending, or a software-set pending (GICD_ISPENDR) of a level
    /// interrupt, or a hardware injection (`inject_hw`).
    pub latch: bool,
    /// The input line, for level-sensitive interrupts.
    pub level: bool,
    pub active: bool,
    pub edge: bool,
    pub group1: bool,
    pub priority: u8,
    /// v2 GICD_ITARGETSR byte (SPIs).
    pub targets: u8,
    /// v3 GICD_IROUTER value (SPIs), masked to the defined fields.
    pub route: u64,
    /// The vCPU an SPI is delivered to, resolved from `targets`/`route`.
    pub dest: Option<u8>,
    /// Physical INTID this interrupt is linked to.
    pub hw: Option<u32>,
    /// A hardware-linked level interrupt whose line the hypervisor samples
    /// and passes in (`set_hw_line`, the virtual timer): `level` is then the
    /// device's output, and the interrupt's pending state follows it.
    pub line_driven: bool,
    /// Which vCPU's queue bitmap currently holds this interrupt.
    pub queued_on: Option<u8>,
    /// (vCPU, LR index) while the interrupt is in a List Register.
    pub lr: Option<(u8, u8)>,
    pub lr_state: LrState,
    /// The LR's pending state came from a latch (not only the level line),
    /// so evicting it must restore the latch.
    pub lr_latch: bool,
    /// v2 SGIs: the source CPU of the instance in the LR.
    pub lr_source: u8,
    /// The LR's active state is the guest's: it acknowledged the interrupt
    /// through the LR (pending became active), so only its EOI or
    /// deactivation may end it and the LR must stay until then. An active
    /// state set through GICD_ISACTIVER was not acknowledged: the guest's
    /// running priority does not include it, and the LR may be given back.
    pub lr_acked: bool,
    /// The group and priority the LR was written with (a guest may change
    /// both while the interrupt waits in the LR).
    pub lr_group1: bool,
    pub lr_priority: u8,
    pub clear_pending_req: bool,
    pub clear_active_req: bool,
    pub set_active_req: bool,
}

impl Irq {
    pub const fn reset(edge: bool, group1: bool) -> Self {
        Self {
            enabled: false,
            latch: false,
            level: false,
            active: false,
            edge,
            group1,
            priority: 0,
            targets: 0,
            route: 0,
            dest: None,
            hw: None,
            line_driven: false,
            queued_on: None,
            lr: None,
            lr_state: LrState::INVALID,
            lr_latch: false,
            lr_source: 0,
            lr_acked: false,
            lr_group1: false,
            lr_priority: 0,
            clear_pending_req: false,
            clear_active_req: false,
            set_active_req: false,
        }
    }
}

/// One bit per INTID (0..1023): the interrupts queued for one vCPU, with
/// one summary bit per non-zero word, so that an empty or sparse queue
/// (the usual case: a vCPU has one or two interrupts queued, if any) costs
/// a word test, not sixteen, on every flush and WFI.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IrqBitmap {
    words: [u64; 16],
    /// Bit i: `words[i]` is not zero.
    summary: u16,
}

impl IrqBitmap {
    pub fn set(&mut self, intid: u32) {
        let i = (intid as usize / 64) % 16;
        self.words[i] |= 1 << (intid % 64);
        self.summary |= 1 << i;
    }

    pub fn clear(&mut self, intid: u32) {
        let i = (intid as usize / 64) % 16;
        self.words[i] &= !(1 << (intid % 64));
        if self.words[i] == 0 {
            self.summary &= !(1 << i);
        }
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.summary == 0
    }

    /// Whether `intid` is the only bit set.
    pub fn only(&self, intid: u32) -> bool {
        let i = (intid as usize / 64) % 16;
        self.summary == 1 << i && self.words[i] == 1 << (intid % 64)
    }

    /// The one bit set, if exactly one is.
    pub fn single(&self) -> Option<u32> {
        let i = self.summary.trailing_zeros();
        let word = *self.words.get(i as usize)?;
        (self.summary.is_power_of_two() && word.is_power_of_two()).then(|| i * 64 + word.trailing_zeros())
    }

    #[cfg(test)]
    pub fn test(&self, intid: u32) -> bool {
        self.words[(intid as usize / 64) % 16] & (1 << (intid % 64)) != 0
    }

    /// Set bits in ascending order; cost is one step per non-zero word plus
    /// one per set bit.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut summary = self.summary;
        let mut word = 0u64;
        let mut base = 0u32;
        core::iter::from_fn(move || {
            while word == 0 {
                if summary == 0 {
                    return None;
                }
                let i = summary.trailing_zeros();
                summary &= summary - 1;
                word = self.words[i as usize];
                base = i * 64;
            }
            let b = word.trailing_zeros();
            word &= word - 1;
            Some(base + b)
        })
    }
}
