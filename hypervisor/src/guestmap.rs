//! Guest RAM mapped into dom0 (`GuestMap`, `GuestUnmap`): dom0's backends
//! read and write a guest's virtqueues and buffers through a window of
//! dom0's own IPA space instead of one `VmCopy` hypercall per access.
//!
//! The hypervisor stays the authority. A window maps only RAM of the guest
//! named in the call (the pages come from that VM's own chunk list, never
//! from an address dom0 gives), only where dom0's stage 2 has nothing
//! (its RAM, the bundle, passed-through devices and the GIC views stay
//! unmappable) and only page-aligned. Destroying the guest revokes every
//! window onto it, with the TLB invalidation that needs, before its pages
//! go back to the allocator: `domctl::release` calls [`revoke`] right
//! after it has shut `ram_live`, so a `GuestMap` racing with the destroy
//! either finished first (and is revoked) or sees the VM dying and fails.
//!
//! [`Windows`] is the arch-neutral bookkeeping (which windows exist, the
//! checks a new one must pass), tested on the host; the target-only part
//! below edits dom0's stage-2 tables.

use alloc::vec::Vec;

/// Most windows at once, over all guests (each costs a table walk on
/// `GuestMap` and an entry here; dom0 needs one per guest).
pub const MAX_WINDOWS: usize = 256;

const PAGE: u64 = 4096;

/// One window: `size` bytes of guest `guest`'s RAM from `guest_ipa` appear
/// in dom0 at `dom0_ipa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub guest: u16,
    pub dom0_ipa: u64,
    pub guest_ipa: u64,
    pub size: u64,
}

impl Window {
    #[cfg(test)]
    fn dom0_end(&self) -> u64 {
        self.dom0_ipa + self.size
    }
}

/// Why a window was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// An address or the length is not a multiple of 4 KiB, or the length is 0.
    Misaligned,
    /// A range wraps around the address space.
    Overflow,
    /// The guest range is not entirely the guest's RAM.
    NotGuestRam,
    /// The dom0 range overlaps something dom0 has (RAM, a device, an
    /// emulated region) or another window.
    Overlap,
    /// [`MAX_WINDOWS`] windows exist already.
    TooMany,
}

/// Every window that exists.
#[derive(Debug, Default)]
pub struct Windows {
    list: Vec<Window>,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// Is `[start, start + len)` covered by `ram` (`(ipa, size)` chunks, in
/// any order, possibly several)?
fn covered(start: u64, len: u64, ram: &[(u64, u64)]) -> bool {
    let Some(end) = start.checked_add(len) else { return false };
    let mut at = start;
    while at < end {
        match ram.iter().find(|&&(b, s)| at >= b && at - b < s) {
            Some(&(b, s)) => at = b.saturating_add(s),
            None => return false,
        }
    }
    true
}

impl Windows {
    pub const fn new() -> Self {
        Windows { list: Vec::new() }
    }

    /// Checks a new window: page alignment, no wrap, the guest range all
    /// `guest_ram` (`(ipa, size)`), the dom0 range clear of `taken` (what
    /// dom0 has at stage 2 or as emulated regions, `(ipa, size)`) and of
    /// every existing window.
    pub fn check(&self, w: &Window, guest_ram: &[(u64, u64)], taken: &[(u64, u64)]) -> Result<(), WindowError> {
        if w.size == 0 || [w.dom0_ipa, w.guest_ipa, w.size].iter().any(|v| v % PAGE != 0) {
            return Err(WindowError::Misaligned);
        }
        if w.dom0_ipa.checked_add(w.size).is_none() || w.guest_ipa.checked_add(w.size).is_none() {
            return Err(WindowError::Overflow);
        }
        if !covered(w.guest_ipa, w.size, guest_ram) {
            return Err(WindowError::NotGuestRam);
        }
        let range = (w.dom0_ipa, w.size);
        if taken.iter().any(|&t| overlaps(range, t)) || self.list.iter().any(|o| overlaps(range, (o.dom0_ipa, o.size))) {
            return Err(WindowError::Overlap);
        }
        if self.list.len() >= MAX_WINDOWS {
            return Err(WindowError::TooMany);
        }
        Ok(())
    }

    /// Records a window that passed [`check`](Self::check) and is mapped.
    pub fn insert(&mut self, w: Window) {
        self.list.push(w);
    }

    /// Removes guest `guest`'s window starting at `dom0_ipa`.
    pub fn remove(&mut self, guest: u16, dom0_ipa: u64) -> Option<Window> {
        let i = self.list.iter().position(|w| w.guest == guest && w.dom0_ipa == dom0_ipa)?;
        Some(self.list.swap_remove(i))
    }

    /// Removes and returns every window onto guest `guest`.
    pub fn take_guest(&mut self, guest: u16) -> Vec<Window> {
        let (gone, kept) = core::mem::take(&mut self.list).into_iter().partition(|w| w.guest == guest);
        self.list = kept;
        gone
    }

    /// The window holding dom0 IPA `ipa`, if any.
    #[cfg(test)]
    pub fn at(&self, ipa: u64) -> Option<Window> {
        self.list.iter().find(|w| ipa >= w.dom0_ipa && ipa < w.dom0_end()).copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.list.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

pub use mechanism::{map, revoke, unmap};

/// The hypercalls and the revocation, over dom0's stage-2 tables.
mod mechanism {
    use alloc::vec::Vec;

    use hv_abi::hypercall::Error;

    use super::{Window, WindowError, Windows};
    use crate::addr::Ipa;
    use crate::arch::el2;
    use crate::stage2::Stage2Tables;
    use crate::mm::pagetable::{Attributes, MapError};
    use crate::sync::Mutex;
    use crate::vm::{self, Vm, VmId};

    /// Lock order: a guest's `ram_live` (read), then `WINDOWS`, then dom0's
    /// `stage2`.
    static WINDOWS: Mutex<Windows> = Mutex::new(Windows::new());


    /// `GuestMap` (dom0 is the caller).
    pub fn map(dom0: &Vm, id: u64, dom0_ipa: u64, guest_ipa: u64, len: u64) -> Result<u64, Error> {
        let vm = crate::vm::guest(id).ok_or(Error::InvalidParameter)?;
        let live = vm.ram_live.read();
        if !*live {
            return Err(Error::InvalidParameter); // being destroyed
        }
        let w = Window { guest: vm.id.0, dom0_ipa, guest_ipa, size: len };
        let ram: Vec<(u64, u64)> = vm.ram.iter().map(|c| (c.ipa.as_u64(), c.size)).collect();
        // Unmapped at stage 2 but still dom0's: its emulated GIC frames.
        let taken: Vec<(u64, u64)> = dom0.regions.iter().map(|r| (r.base.as_u64(), r.size)).collect();
        let mut windows = WINDOWS.lock();
        windows.check(&w, &ram, &taken).map_err(|e| match e {
            WindowError::NotGuestRam => Error::BadAddress,
            WindowError::TooMany => Error::NoMemory,
            _ => Error::InvalidParameter,
        })?;
        let pieces = vm.ram_pieces(guest_ipa, len).ok_or(Error::BadAddress)?;
        let mut stage2 = dom0.stage2.lock();
        let stage2 = stage2.as_mut().ok_or(Error::Busy)?;
        let mut done = 0;
        for (pa, n) in pieces {
            // `map` refuses (changing nothing) to cover anything already
            // mapped: dom0's RAM, the bundle, devices, the GICv2 view.
            if let Err(e) = stage2.map(Ipa::new(dom0_ipa + done), pa, n, Attributes::RW_DATA) {
                if done > 0 {
                    remove(dom0, stage2, &[Window { size: done, ..w }]);
                }
                return Err(match e {
                    MapError::NoMemory => Error::NoMemory,
                    _ => Error::InvalidParameter,
                });
            }
            done += n;
        }
        windows.insert(w);
        Ok(0)
    }

    /// `GuestUnmap`.
    pub fn unmap(dom0: &Vm, id: u64, dom0_ipa: u64) -> Result<u64, Error> {
        let id = u16::try_from(id).map_err(|_| Error::InvalidParameter)?;
        let mut windows = WINDOWS.lock();
        let w = windows.remove(id, dom0_ipa).ok_or(Error::InvalidParameter)?;
        let mut stage2 = dom0.stage2.lock();
        if let Some(stage2) = stage2.as_mut() {
            remove(dom0, stage2, &[w]);
        }
        Ok(0)
    }

    /// Guest `id` is being destroyed (its `ram_live` is already false):
    /// removes every window onto it from dom0's stage 2 and invalidates
    /// dom0's TLB entries, on every CPU, before returning.
    pub fn revoke(id: VmId) {
        let mut windows = WINDOWS.lock();
        let gone = windows.take_guest(id.0);
        if gone.is_empty() {
            return;
        }
        let Some(dom0) = vm::get(VmId(0)) else { return };
        let mut stage2 = dom0.stage2.lock();
        if let Some(stage2) = stage2.as_mut() {
            remove(&dom0, stage2, &gone);
        }
    }

    /// Unmaps `windows` from dom0's stage 2. Each removed entry is
    /// invalidated by IPA as the tables change (break before make) and, at
    /// the end, all of dom0's combined stage-1+2 entries, on all CPUs (an
    /// IPA invalidation does not reach those).
    fn remove(dom0: &Vm, stage2: &mut Stage2Tables, windows: &[Window]) {
        // The TLBIs act on the VMID in VTTBR_EL2: dom0's while we work.
        el2::set_stage2(dom0.vmid, dom0.stage2_root, dom0.vtcr);
        for w in windows {
            if let Err(e) = stage2.unmap(Ipa::new(w.dom0_ipa), w.size) {
                log::error!("guest window {:#x}+{:#x} of VM {}: unmap failed: {e:?}", w.dom0_ipa, w.size, w.guest);
            }
        }
        el2::flush_vm_tlbs();
        if let Some((current, _)) = crate::sched::current() {
            el2::set_stage2(current.vmid, current.stage2_root, current.vtcr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: &[(u64, u64)] = &[(0x4000_0000, 2 << 20), (0x4020_0000, 2 << 20)];
    const DOM0: &[(u64, u64)] = &[(0x5000_0000, 256 << 20), (0x0800_0000, 0x1_0000)];
    const AREA: u64 = 0x60_0000_0000;

    fn win(guest: u16, dom0_ipa: u64, guest_ipa: u64, size: u64) -> Window {
        Window { guest, dom0_ipa, guest_ipa, size }
    }

    #[test]
    fn a_window_onto_the_whole_ram_across_chunks_is_accepted() {
        let t = Windows::new();
        assert_eq!(t.check(&win(1, AREA, 0x4000_0000, 4 << 20), RAM, DOM0), Ok(()));
        assert_eq!(t.check(&win(1, AREA, 0x4010_0000, 2 << 20), RAM, DOM0), Ok(()), "a range inside, across the chunk boundary");
    }

    #[test]
    fn guest_ranges_outside_its_ram_are_refused() {
        let t = Windows::new();
        assert_eq!(t.check(&win(1, AREA, 0x4000_0000, 4 << 20 | 0x1000), RAM, DOM0), Err(WindowError::NotGuestRam), "one page past the end");
        assert_eq!(t.check(&win(1, AREA, 0x3fff_f000, 0x2000), RAM, DOM0), Err(WindowError::NotGuestRam), "one page before");
        assert_eq!(t.check(&win(1, AREA, 0x0900_0000, 0x1000), RAM, DOM0), Err(WindowError::NotGuestRam), "a device");
        let holed = [(0x4000_0000, 2 << 20), (0x4040_0000, 2 << 20)];
        assert_eq!(t.check(&win(1, AREA, 0x4000_0000, 6 << 20), &holed, DOM0), Err(WindowError::NotGuestRam), "a hole");
    }

    #[test]
    fn misaligned_empty_and_wrapping_windows_are_refused() {
        let t = Windows::new();
        assert_eq!(t.check(&win(1, AREA + 8, 0x4000_0000, 0x1000), RAM, DOM0), Err(WindowError::Misaligned));
        assert_eq!(t.check(&win(1, AREA, 0x4000_0800, 0x1000), RAM, DOM0), Err(WindowError::Misaligned));
        assert_eq!(t.check(&win(1, AREA, 0x4000_0000, 0x1800), RAM, DOM0), Err(WindowError::Misaligned));
        assert_eq!(t.check(&win(1, AREA, 0x4000_0000, 0), RAM, DOM0), Err(WindowError::Misaligned));
        assert_eq!(t.check(&win(1, u64::MAX - 0xfff, 0x4000_0000, 0x2000), RAM, DOM0), Err(WindowError::Overflow));
    }

    #[test]
    fn windows_may_not_cover_dom0s_own_memory_devices_or_each_other() {
        let mut t = Windows::new();
        assert_eq!(t.check(&win(1, 0x5ff0_0000, 0x4000_0000, 2 << 20), RAM, DOM0), Err(WindowError::Overlap), "dom0 RAM");
        assert_eq!(t.check(&win(1, 0x07ff_f000, 0x4000_0000, 0x2000), RAM, DOM0), Err(WindowError::Overlap), "the GICD dom0 sees");
        t.insert(win(1, AREA, 0x4000_0000, 4 << 20));
        assert_eq!(t.check(&win(2, AREA + (2 << 20), 0x4000_0000, 4 << 20), RAM, DOM0), Err(WindowError::Overlap), "another window");
        assert_eq!(t.check(&win(2, AREA + (4 << 20), 0x4000_0000, 4 << 20), RAM, DOM0), Ok(()), "right after it");
        assert_eq!(t.at(AREA + 0x1234), Some(win(1, AREA, 0x4000_0000, 4 << 20)));
        assert_eq!(t.at(AREA + (4 << 20)), None);
    }

    #[test]
    fn a_destroyed_guests_windows_all_go_and_only_its() {
        let mut t = Windows::new();
        t.insert(win(1, AREA, 0x4000_0000, 2 << 20));
        t.insert(win(2, AREA + (4 << 20), 0x4000_0000, 2 << 20));
        t.insert(win(1, AREA + (8 << 20), 0x4020_0000, 2 << 20));
        let gone = t.take_guest(1);
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|w| w.guest == 1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.at(AREA), None, "its range is free again");
        assert_eq!(t.check(&win(3, AREA, 0x4000_0000, 2 << 20), RAM, DOM0), Ok(()));
        assert_eq!(t.remove(2, AREA), None, "wrong start");
        assert_eq!(t.remove(1, AREA + (4 << 20)), None, "wrong guest");
        assert!(t.remove(2, AREA + (4 << 20)).is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn the_number_of_windows_is_bounded() {
        let mut t = Windows::new();
        for i in 0..MAX_WINDOWS as u64 {
            t.insert(win(1, AREA + i * 0x1000, 0x4000_0000, 0x1000));
        }
        let next = win(1, AREA + MAX_WINDOWS as u64 * 0x1000, 0x4000_0000, 0x1000);
        assert_eq!(t.check(&next, RAM, DOM0), Err(WindowError::TooMany));
    }
}
