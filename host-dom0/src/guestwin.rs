//! Where guests' RAM appears in dom0 (`GuestMap` windows) and the checks
//! that turn a guest physical range into an address in a window.
//!
//! Dom0 keeps an area of its address space for the windows, [`AREA_BASE`]
//! .. + [`AREA_SIZE`]: free in the device trees of the machines dom0 runs
//! on (`fits` checks the one it booted with), inside the 39-bit identity
//! map, which maps it as Normal memory. Each VM with devices gets one
//! window onto all of its RAM, placed first-fit at 2 MiB alignment (so the
//! hypervisor can map 2 MiB blocks); the hypervisor decides what is behind
//! it. A window belongs to one VM *instance*: dom0 removes it before
//! asking for the VM's destruction, so nothing a backend does afterwards
//! can reach the RAM of a later VM with the same id.
//!
//! Reads and writes through a window are the target's business
//! (`ioreq`), in the accesses `hv_abi::copy::access_plan` chooses;
//! everything here is
//! plain arithmetic, tested on the host.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;

/// First address of the window area (384 GiB).
pub const AREA_BASE: u64 = 0x60_0000_0000;
/// Its size (128 GiB: 32 guests of the largest size, 4 GiB).
pub const AREA_SIZE: u64 = 0x20_0000_0000;
/// Windows start at multiples of this.
pub const ALIGN: u64 = 2 << 20;

/// One VM's window: `size` bytes of its RAM from guest physical address
/// `gpa` are at dom0 address `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub gpa: u64,
    pub size: u64,
}

/// Whether the window area is free in a machine whose RAM and devices are
/// `used` (`(base, size)` ranges).
pub fn fits(used: &[(u64, u64)]) -> bool {
    used.iter().all(|&(b, s)| b.saturating_add(s) <= AREA_BASE || b >= AREA_BASE + AREA_SIZE)
}

/// The windows of every VM that has one.
#[derive(Debug, Default)]
pub struct Windows {
    by_vm: BTreeMap<u16, Window>,
}

impl Windows {
    pub const fn new() -> Self {
        Windows { by_vm: BTreeMap::new() }
    }

    /// Where a window of `size` bytes would go: the lowest aligned gap in
    /// the area. `None` if the area is full or `size` is 0.
    pub fn place(&self, size: u64) -> Option<u64> {
        let need = size.checked_next_multiple_of(ALIGN)?;
        if need == 0 {
            return None;
        }
        let mut taken: alloc::vec::Vec<(u64, u64)> = self.by_vm.values().map(|w| (w.base, w.size)).collect();
        taken.sort_unstable();
        let mut at = AREA_BASE;
        for (b, s) in taken {
            if b >= at && b - at >= need {
                break;
            }
            at = at.max(b.saturating_add(s).checked_next_multiple_of(ALIGN)?);
        }
        (at.checked_add(need)? <= AREA_BASE + AREA_SIZE).then_some(at)
    }

    /// VM `vm` got `window` (`GuestMap` succeeded), replacing any record
    /// of an earlier one.
    pub fn insert(&mut self, vm: u16, window: Window) {
        self.by_vm.insert(vm, window);
    }

    /// VM `vm`'s window goes (before the VM does).
    pub fn remove(&mut self, vm: u16) -> Option<Window> {
        self.by_vm.remove(&vm)
    }

    pub fn get(&self, vm: u16) -> Option<Window> {
        self.by_vm.get(&vm).copied()
    }

    /// VM `vm`'s window alone, for the IO worker, which works without the
    /// lock `Windows` lives under (a copy: no allocation, unlike a
    /// `Windows` of one).
    pub fn only(&self, vm: u16) -> Option<VmWindow> {
        self.get(vm).map(|window| VmWindow { vm, window })
    }

    /// The dom0 address of `[gpa, gpa + len)` of VM `vm`'s RAM, if the
    /// whole range lies in its window (so never a byte outside it, whatever
    /// a guest puts in its descriptors). `len` 0 is refused too: there is
    /// nothing to copy, and no address to give.
    pub fn translate(&self, vm: u16, gpa: u64, len: usize) -> Option<u64> {
        self.by_vm.get(&vm)?.translate(gpa, len)
    }
}

impl Window {
    /// The dom0 address of `[gpa, gpa + len)`, if the whole range lies in
    /// the window (`len` 0 is refused: see [`Windows::translate`]).
    pub fn translate(&self, gpa: u64, len: usize) -> Option<u64> {
        let offset = gpa.checked_sub(self.gpa)?;
        let end = offset.checked_add(u64::try_from(len).ok()?)?;
        (len > 0 && end <= self.size).then(|| self.base + offset)
    }
}

/// One VM's window, apart from the others ([`Windows::only`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmWindow {
    pub vm: u16,
    pub window: Window,
}

/// What turns a VM's guest physical range into a dom0 address: every
/// window, or one VM's.
pub trait Translate {
    /// As [`Windows::translate`].
    fn translate(&self, vm: u16, gpa: u64, len: usize) -> Option<u64>;
}

impl Translate for Windows {
    fn translate(&self, vm: u16, gpa: u64, len: usize) -> Option<u64> {
        Windows::translate(self, vm, gpa, len)
    }
}

/// `None`: the VM has no window; nothing translates.
impl Translate for Option<VmWindow> {
    fn translate(&self, vm: u16, gpa: u64, len: usize) -> Option<u64> {
        self.as_ref().filter(|w| w.vm == vm)?.window.translate(gpa, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: u64 = 0x4000_0000;

    #[test]
    fn ranges_translate_only_when_wholly_inside_the_window() {
        let mut w = Windows::new();
        w.insert(1, Window { base: AREA_BASE, gpa: RAM, size: 16 << 20 });
        assert_eq!(w.translate(1, RAM, 16), Some(AREA_BASE));
        assert_eq!(w.translate(1, RAM + 0x1234, 512), Some(AREA_BASE + 0x1234));
        assert_eq!(w.translate(1, RAM + (16 << 20) - 4, 4), Some(AREA_BASE + (16 << 20) - 4), "the last bytes");
        assert_eq!(w.translate(1, RAM + (16 << 20) - 4, 5), None, "one byte past the end");
        assert_eq!(w.translate(1, RAM + (16 << 20), 1), None, "just past the end");
        assert_eq!(w.translate(1, RAM - 1, 2), None, "below the RAM");
        assert_eq!(w.translate(1, u64::MAX - 2, 8), None, "wrapping");
        assert_eq!(w.translate(1, RAM, 0), None, "empty");
        assert_eq!(w.translate(2, RAM, 16), None, "another VM has no window");
    }

    #[test]
    fn one_vms_window_translates_as_all_of_them_do_for_that_vm_only() {
        let mut w = Windows::new();
        w.insert(1, Window { base: AREA_BASE, gpa: RAM, size: 16 << 20 });
        w.insert(2, Window { base: AREA_BASE + (16 << 20), gpa: RAM, size: 2 << 20 });
        let one = w.only(2);
        for (gpa, len) in [(RAM, 16), (RAM + (2 << 20) - 4, 4), (RAM + (2 << 20) - 4, 5), (RAM - 1, 2), (u64::MAX - 2, 8), (RAM, 0)] {
            assert_eq!(Translate::translate(&one, 2, gpa, len), w.translate(2, gpa, len), "{gpa:#x}+{len}");
        }
        assert_eq!(Translate::translate(&one, 1, RAM, 16), None, "another VM's range");
        assert_eq!(w.only(3), None);
        assert_eq!(Translate::translate(&w.only(3), 3, RAM, 16), None);
    }

    #[test]
    fn a_removed_window_translates_nothing_and_its_space_is_reused() {
        let mut w = Windows::new();
        let a = w.place(192 << 20).unwrap();
        w.insert(1, Window { base: a, gpa: RAM, size: 192 << 20 });
        let b = w.place(16 << 20).unwrap();
        assert_eq!(b, AREA_BASE + (192 << 20), "after the first");
        w.insert(2, Window { base: b, gpa: RAM, size: 16 << 20 });
        assert_eq!(w.remove(1).map(|x| x.base), Some(a));
        assert_eq!(w.translate(1, RAM, 16), None, "after destroy");
        assert_eq!(w.place(64 << 20), Some(AREA_BASE), "the gap is used again");
        assert_eq!(w.place(256 << 20), Some(b + (16 << 20)), "too big for the gap: after the last");
    }

    #[test]
    fn windows_never_overlap_and_stay_inside_the_area() {
        let mut w = Windows::new();
        let mut placed = alloc::vec::Vec::new();
        for (vm, size) in [(1u16, 3 << 20), (2, 1 << 20), (3, 4 << 30), (4, 2 << 20)] {
            let base = w.place(size).unwrap();
            assert_eq!(base % ALIGN, 0);
            w.insert(vm, Window { base, gpa: RAM, size });
            placed.push((base, size));
        }
        for (i, &(b1, s1)) in placed.iter().enumerate() {
            assert!(b1 >= AREA_BASE && b1 + s1 <= AREA_BASE + AREA_SIZE);
            for &(b2, s2) in &placed[i + 1..] {
                assert!(b1 + s1 <= b2 || b2 + s2 <= b1, "{b1:#x}+{s1:#x} overlaps {b2:#x}+{s2:#x}");
            }
        }
        assert_eq!(w.place(AREA_SIZE), None, "the area is not that big any more");
        assert_eq!(w.place(0), None);
    }

    #[test]
    fn the_area_must_be_free_in_the_machine() {
        assert!(fits(&[(0x4000_0000, 1 << 30), (0x0900_0000, 0x1000), (0x80_0000_0000, 1 << 30)]));
        assert!(!fits(&[(AREA_BASE + (1 << 30), 0x1000)]));
        assert!(!fits(&[(AREA_BASE - 0x1000, 0x2000)]));
    }
}
