//! Register shadows: values of registers dom0 emulates, published by dom0
//! (`IoShadow`) so that the hypervisor answers a guest's reads of them
//! without a round trip to dom0. The case it is made for is a UART's flag
//! register, which a console driver reads before every byte it sends: a
//! forwarded read costs a request, a dom0 turn and a completion; a
//! shadowed one costs one trap.
//!
//! The value is dom0's, and so is the knowledge of what changes it; the
//! hypervisor only hands the value back and forgets it when a guest write
//! may have changed it. Dom0 says which writes to the window cannot (the
//! keep mask: for a UART, its data register and interrupt clears); any
//! other write makes the value invalid as it traps, before dom0 can see
//! the write. Dom0 handles requests in ring order and publishes with the
//! `seq` of the newest request to the window it has handled, so a value
//! it worked out before it saw an invalidating write is refused (`Busy`):
//! it never outlives that write. Writes are noted, and values published,
//! under the request ring's lock (`ioreq::serialized`), so the check and
//! the note cannot interleave; reads take no lock.
//!
//! Hand-written: a handful of atomics, nothing a crate would carry.

use core::sync::atomic::{AtomicU64, Ordering};

use hv_abi::hypercall::{shadow_keeps, Error, IO_SHADOWS, SHADOW_NONE};

use crate::esr::AccessSize;

/// Set in a slot's `word` while it holds a value (in the low 32 bits).
const VALID: u64 = 1 << 32;

/// One VM's shadowed registers.
pub struct IoShadows {
    slots: [Slot; IO_SHADOWS],
}

struct Slot {
    /// The register's IPA (4-byte aligned); 0 while the slot is free. Set
    /// once, after the window fields, and never changed.
    reg: AtomicU64,
    /// `VALID | value`, or 0.
    word: AtomicU64,
    /// The `IoMap` window holding the register (fixed with `reg`).
    base: AtomicU64,
    size: AtomicU64,
    /// Bit i: a write at window offset 4i leaves the value valid.
    keep: AtomicU64,
    /// The request count of the newest write that made the value invalid
    /// (written under the request ring's lock).
    invalidated_at: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            reg: AtomicU64::new(0),
            word: AtomicU64::new(0),
            base: AtomicU64::new(0),
            size: AtomicU64::new(0),
            keep: AtomicU64::new(0),
            invalidated_at: AtomicU64::new(0),
        }
    }
}

impl Default for IoShadows {
    fn default() -> Self {
        Self::new()
    }
}

impl IoShadows {
    pub const fn new() -> Self {
        Self { slots: [const { Slot::new() }; IO_SHADOWS] }
    }

    /// The answer to a guest read of `size` bytes at `ipa`, if a valid
    /// value covers it (the caller sign- or zero-extends it). No lock.
    #[inline]
    pub fn read(&self, ipa: u64, size: AccessSize) -> Option<u64> {
        let bytes = size.bytes();
        for slot in &self.slots {
            let reg = slot.reg.load(Ordering::Acquire);
            if reg == 0 {
                // Slots are taken in order and never given back.
                return None;
            }
            if ipa < reg || ipa - reg + bytes > 4 {
                continue;
            }
            let word = slot.word.load(Ordering::Acquire);
            if word & VALID == 0 {
                return None;
            }
            return Some((word & 0xffff_ffff) >> ((ipa - reg) * 8) & size.mask());
        }
        None
    }

    /// A guest write at `ipa`, request count `count`, is on its way to
    /// dom0 (called under the request ring's lock): every value in the
    /// same window that the write may change is invalid from now on.
    #[inline]
    pub fn note_write(&self, ipa: u64, count: u64) {
        for slot in &self.slots {
            if slot.reg.load(Ordering::Acquire) == 0 {
                continue;
            }
            let Some(offset) = ipa.checked_sub(slot.base.load(Ordering::Relaxed)) else { continue };
            if offset >= slot.size.load(Ordering::Relaxed) {
                continue;
            }
            if !shadow_keeps(slot.keep.load(Ordering::Relaxed), offset) {
                slot.word.store(0, Ordering::Release);
                slot.invalidated_at.store(count, Ordering::Relaxed);
            }
        }
    }

    /// `IoShadow` (called under the request ring's lock): the register at
    /// `reg`, in the window `[base, base + size)`, reads `value` (or,
    /// with `SHADOW_NONE`, goes to dom0 again) as of dom0 having handled
    /// the window's requests up to count `handled`.
    pub fn publish(&self, reg: u64, base: u64, size: u64, value: u64, handled: u64, keep: u64) -> Result<(), Error> {
        let valid = match value {
            SHADOW_NONE => false,
            v if v <= u64::from(u32::MAX) => true,
            _ => return Err(Error::InvalidParameter),
        };
        if reg == 0 || !reg.is_multiple_of(4) || reg < base || reg - base + 4 > size {
            return Err(Error::InvalidParameter);
        }
        let slot = match self.slots.iter().find(|s| s.reg.load(Ordering::Acquire) == reg) {
            Some(slot) => slot,
            None if !valid => return Ok(()),
            None => {
                let free = self.slots.iter().find(|s| s.reg.load(Ordering::Acquire) == 0).ok_or(Error::NoMemory)?;
                free.base.store(base, Ordering::Relaxed);
                free.size.store(size, Ordering::Relaxed);
                free.reg.store(reg, Ordering::Release);
                free
            }
        };
        if !valid {
            slot.word.store(0, Ordering::Release);
            return Ok(());
        }
        if handled < slot.invalidated_at.load(Ordering::Relaxed) {
            // A write dom0 had not handled yet may have changed it.
            return Err(Error::Busy);
        }
        slot.keep.store(keep, Ordering::Relaxed);
        slot.word.store(VALID | value, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x0900_0000;
    const FR: u64 = BASE + 0x18;
    const DR_ONLY: u64 = 1;

    fn published(value: u32) -> IoShadows {
        let s = IoShadows::new();
        s.publish(FR, BASE, 0x1000, value.into(), 0, DR_ONLY).unwrap();
        s
    }

    #[test]
    fn reads_inside_the_register_get_its_bytes_and_others_go_to_dom0() {
        let s = published(0x1234_5690);
        assert_eq!(s.read(FR, AccessSize::Word), Some(0x1234_5690));
        assert_eq!(s.read(FR, AccessSize::Byte), Some(0x90));
        assert_eq!(s.read(FR + 1, AccessSize::Byte), Some(0x56));
        assert_eq!(s.read(FR + 2, AccessSize::Half), Some(0x1234));
        assert_eq!(s.read(FR + 3, AccessSize::Byte), Some(0x12));
        // Not wholly inside the register, or another register.
        assert_eq!(s.read(FR + 2, AccessSize::Word), None);
        assert_eq!(s.read(FR, AccessSize::Double), None);
        assert_eq!(s.read(FR - 4, AccessSize::Word), None);
        assert_eq!(s.read(FR + 4, AccessSize::Word), None);
        assert_eq!(IoShadows::new().read(FR, AccessSize::Word), None);
    }

    #[test]
    fn a_write_the_keep_mask_does_not_name_invalidates_until_dom0_publishes_after_it() {
        let s = published(0x90);
        // The data register (offset 0) is kept; a misaligned write at 1 is not.
        s.note_write(BASE, 5);
        assert_eq!(s.read(FR, AccessSize::Word), Some(0x90));
        // A write elsewhere in the window (the line control register).
        s.note_write(BASE + 0x2c, 7);
        assert_eq!(s.read(FR, AccessSize::Word), None);
        // Dom0 worked the value out before it handled request 7: refused.
        assert_eq!(s.publish(FR, BASE, 0x1000, 0x10, 6, DR_ONLY), Err(Error::Busy));
        assert_eq!(s.read(FR, AccessSize::Word), None);
        assert_eq!(s.publish(FR, BASE, 0x1000, 0x10, 7, DR_ONLY), Ok(()));
        assert_eq!(s.read(FR, AccessSize::Word), Some(0x10));
        s.note_write(BASE + 1, 9);
        assert_eq!(s.read(FR, AccessSize::Word), None);
        // Writes outside the window change nothing.
        s.publish(FR, BASE, 0x1000, 0x10, 9, DR_ONLY).unwrap();
        s.note_write(BASE + 0x1000, 10);
        s.note_write(BASE - 4, 11);
        assert_eq!(s.read(FR, AccessSize::Word), Some(0x10));
        // A keep mask without the data register: its writes invalidate.
        s.publish(FR, BASE, 0x1000, 0x10, 11, 0).unwrap();
        s.note_write(BASE, 12);
        assert_eq!(s.read(FR, AccessSize::Word), None);
    }

    #[test]
    fn publication_is_checked_and_bounded() {
        let s = IoShadows::new();
        for (reg, value) in [(FR + 2, 0), (0, 0), (BASE - 4, 0), (BASE + 0x1000 - 2, 0), (FR, 1 << 33), (FR, u64::MAX)] {
            assert_eq!(s.publish(reg, BASE, 0x1000, value, 0, 0), Err(Error::InvalidParameter), "{reg:#x} {value:#x}");
        }
        for i in 0..IO_SHADOWS as u64 {
            s.publish(BASE + 4 * i, BASE, 0x1000, i, 0, 0).unwrap();
        }
        assert_eq!(s.publish(BASE + 0x100, BASE, 0x1000, 1, 0, 0), Err(Error::NoMemory));
        // An existing register can be updated and withdrawn.
        s.publish(BASE, BASE, 0x1000, 0x77, 0, 0).unwrap();
        assert_eq!(s.read(BASE, AccessSize::Word), Some(0x77));
        s.publish(BASE, BASE, 0x1000, SHADOW_NONE, 0, 0).unwrap();
        assert_eq!(s.read(BASE, AccessSize::Word), None);
        // Withdrawing one never published is no error and takes no slot.
        assert_eq!(IoShadows::new().publish(FR, BASE, 0x1000, SHADOW_NONE, 0, 0), Ok(()));
    }
}
