//! Copies between dom0 memory and a guest's RAM seen through its
//! `GuestMap` window (`ioreq`'s backends read and write guests' RAM with
//! these): volatile accesses on the guest's side, in the accesses
//! `hv_abi::copy::access_plan` promises, and as few instructions a byte as
//! that allows (dom0 is built for strict alignment, where an unaligned
//! 8-byte access is eight byte accesses). Host tests check the bytes.

/// Copies guest RAM at `src` into `dst` with volatile loads, the accesses
/// of [`hv_abi::copy::access_plan`] (the aligned middle as a tight loop of
/// 8-byte loads, `hv_abi::copy::split`): the guest may change the bytes
/// meanwhile (it owns them), so they are read once each, never assumed
/// stable, and the compiler may neither repeat nor merge the loads. What
/// the backend then does with the copy is validated as the virtio code
/// always did.
///
/// # Safety
/// `src..src + dst.len()` must be mapped readable memory for the whole call.
#[inline(always)]
pub unsafe fn copy_from_window(src: *const u8, dst: &mut [u8]) {
    if let Some(small) = Small::of(src as usize, dst.len()) {
        // SAFETY: the caller's range is `src .. src + dst.len()`, and
        // `Small::of` checked the length and alignment `read` needs.
        unsafe { small.read(src, dst) };
        return;
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { copy_from_window_planned(src, dst) }
}

/// `copy_from_window` past the small copies (out of line, so that those
/// are inlined into the callers without it).
///
/// # Safety
/// As `copy_from_window`.
#[inline(never)]
unsafe fn copy_from_window_planned(src: *const u8, dst: &mut [u8]) {
    let (head, words, tail) = hv_abi::copy::split(src as usize, dst.len());
    let body = head + words * 8;
    let pieces = hv_abi::copy::access_plan(src as usize, head)
        .chain(hv_abi::copy::access_plan(src as usize + body, tail).map(|(o, n)| (o + body, n)));
    for (i, size) in pieces {
        let out = &mut dst[i..i + size];
        // SAFETY: `src + i .. src + i + size` is inside the caller's range
        // and aligned to `size` (`access_plan`).
        unsafe {
            let p = src.add(i);
            match size {
                4 => out.copy_from_slice(&(p as *const u32).read_volatile().to_ne_bytes()),
                2 => out.copy_from_slice(&(p as *const u16).read_volatile().to_ne_bytes()),
                _ => out[0] = p.read_volatile(),
            }
        }
    }
    let out = dst[head..body].as_mut_ptr();
    // Dom0's side is any alignment, but dom0 is built for strict
    // alignment, where an unaligned 8-byte store is eight byte stores: the
    // usual case, both sides 8-byte aligned, gets aligned ones (a loop of
    // its own, or LLVM merges the two into the unaligned one).
    if (out as usize).is_multiple_of(8) {
        // SAFETY: `out` is 8-byte aligned and has room for `words` words
        // (it is `dst[head..body]`, which nothing else borrows now).
        let out = unsafe { core::slice::from_raw_parts_mut(out as *mut u64, words) };
        let from = src.wrapping_add(head) as *const u64;
        // Four words a round: the loop's own instructions are most of a
        // one-word round.
        let mut rounds = out.chunks_exact_mut(4);
        for (c, four) in rounds.by_ref().enumerate() {
            // SAFETY: `src + head` is 8-byte aligned (`split`) and words
            // `4c .. 4c + 4` are inside the caller's range.
            unsafe {
                let p = from.add(4 * c);
                four[0] = p.read_volatile();
                four[1] = p.add(1).read_volatile();
                four[2] = p.add(2).read_volatile();
                four[3] = p.add(3).read_volatile();
            }
        }
        let done = words - rounds.into_remainder().len();
        for k in done..words {
            // SAFETY: as above, word `k` is inside the caller's range.
            out[k] = unsafe { from.add(k).read_volatile() };
        }
        return;
    }
    for k in 0..words {
        // SAFETY: `src + head` is 8-byte aligned (`split`) and word `k` is
        // inside the caller's range; `out` has room for `words` words.
        unsafe { (out.add(8 * k) as *mut u64).write_unaligned((src.add(head + 8 * k) as *const u64).read_volatile()) };
    }
}

/// Copies `src` into guest RAM at `dst` with volatile stores, as
/// `copy_from_window` reads.
///
/// # Safety
/// `dst..dst + src.len()` must be mapped writable memory for the whole call
/// that no Rust reference points into.
#[inline(always)]
pub unsafe fn copy_to_window(src: &[u8], dst: *mut u8) {
    if let Some(small) = Small::of(dst as usize, src.len()) {
        // SAFETY: as in `copy_from_window`, for a writable range.
        unsafe { small.write(src, dst) };
        return;
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { copy_to_window_planned(src, dst) }
}

/// `copy_to_window` past the small copies, out of line as
/// `copy_from_window_planned`.
///
/// # Safety
/// As `copy_to_window`.
#[inline(never)]
unsafe fn copy_to_window_planned(src: &[u8], dst: *mut u8) {
    let (head, words, tail) = hv_abi::copy::split(dst as usize, src.len());
    let body = head + words * 8;
    let pieces = hv_abi::copy::access_plan(dst as usize, head)
        .chain(hv_abi::copy::access_plan(dst as usize + body, tail).map(|(o, n)| (o + body, n)));
    for (i, size) in pieces {
        let b = &src[i..i + size];
        // SAFETY: `dst + i .. dst + i + size` is inside the caller's range
        // and aligned to `size` (`access_plan`).
        unsafe {
            let p = dst.add(i);
            match size {
                4 => (p as *mut u32).write_volatile(u32::from_ne_bytes(b.try_into().unwrap_or_default())),
                2 => (p as *mut u16).write_volatile(u16::from_ne_bytes(b.try_into().unwrap_or_default())),
                _ => p.write_volatile(b[0]),
            }
        }
    }
    let from = src[head..body].as_ptr();
    // As in `copy_from_window`: aligned loads where dom0's side allows.
    if (from as usize).is_multiple_of(8) {
        // SAFETY: `from` is 8-byte aligned and holds `words` words.
        let from = unsafe { core::slice::from_raw_parts(from as *const u64, words) };
        let to = dst.wrapping_add(head) as *mut u64;
        // Four words a round, as `copy_from_window`.
        let mut rounds = from.chunks_exact(4);
        for (c, four) in rounds.by_ref().enumerate() {
            // SAFETY: `dst + head` is 8-byte aligned (`split`) and words
            // `4c .. 4c + 4` are inside the caller's range.
            unsafe {
                let p = to.add(4 * c);
                // The round's four words as one value first: the loads
                // then pair up (`ldp`) whatever the inlining around.
                let [w0, w1, w2, w3] = <[u64; 4]>::try_from(four).unwrap_or_default();
                p.write_volatile(w0);
                p.add(1).write_volatile(w1);
                p.add(2).write_volatile(w2);
                p.add(3).write_volatile(w3);
            }
        }
        let done = words - rounds.remainder().len();
        for (k, &w) in from.iter().enumerate().skip(done) {
            // SAFETY: as above, word `k` is inside the caller's range.
            unsafe { to.add(k).write_volatile(w) };
        }
        return;
    }
    for k in 0..words {
        // SAFETY: `dst + head` is 8-byte aligned (`split`) and word `k` is
        // inside the caller's range; `from` holds `words` words.
        unsafe { (dst.add(head + 8 * k) as *mut u64).write_volatile((from.add(8 * k) as *const u64).read_unaligned()) };
    }
}

/// A copy of one of the virtqueues' small fields, naturally aligned: a
/// status byte, a ring index or flags (2 bytes), a used element (8), a
/// descriptor (16, two words). Most of a request's guest-memory accesses
/// are these, and for them the general copy's plan (`split`, two
/// `access_plan` iterators) costs several times the accesses themselves;
/// here they are the same accesses as that plan (tested), done directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Small {
    Byte,
    Half,
    Word,
    Double,
    TwoDoubles,
}

impl Small {
    /// The direct copy for `len` bytes at guest address `addr`, if there
    /// is one.
    #[inline(always)]
    fn of(addr: usize, len: usize) -> Option<Small> {
        match len {
            1 => Some(Small::Byte),
            2 if addr.is_multiple_of(2) => Some(Small::Half),
            4 if addr.is_multiple_of(4) => Some(Small::Word),
            8 if addr.is_multiple_of(8) => Some(Small::Double),
            16 if addr.is_multiple_of(8) => Some(Small::TwoDoubles),
            _ => None,
        }
    }

    /// Its accesses, as `(offset, size)` (for the test against the plan).
    #[cfg(test)]
    fn accesses(self) -> &'static [(usize, usize)] {
        match self {
            Small::Byte => &[(0, 1)],
            Small::Half => &[(0, 2)],
            Small::Word => &[(0, 4)],
            Small::Double => &[(0, 8)],
            Small::TwoDoubles => &[(0, 8), (8, 8)],
        }
    }

    /// Reads guest RAM at `src` into `dst` (volatile, as the plan's).
    ///
    /// # Safety
    /// `src .. src + dst.len()` is mapped readable memory, and `self` is
    /// `Small::of(src, dst.len())`.
    #[inline(always)]
    unsafe fn read(self, src: *const u8, dst: &mut [u8]) {
        // SAFETY: the caller's range, aligned to each access (`of`).
        unsafe {
            match self {
                Small::Byte => dst.copy_from_slice(&[src.read_volatile()]),
                Small::Half => dst.copy_from_slice(&(src as *const u16).read_volatile().to_ne_bytes()),
                Small::Word => dst.copy_from_slice(&(src as *const u32).read_volatile().to_ne_bytes()),
                Small::Double => dst.copy_from_slice(&(src as *const u64).read_volatile().to_ne_bytes()),
                Small::TwoDoubles => {
                    let (lo, hi) = dst.split_at_mut(8);
                    lo.copy_from_slice(&(src as *const u64).read_volatile().to_ne_bytes());
                    hi.copy_from_slice(&(src as *const u64).add(1).read_volatile().to_ne_bytes());
                }
            }
        }
    }

    /// Writes `src` into guest RAM at `dst` (volatile, as the plan's).
    ///
    /// # Safety
    /// `dst .. dst + src.len()` is mapped writable memory no Rust reference
    /// points into, and `self` is `Small::of(dst, src.len())`.
    #[inline(always)]
    unsafe fn write(self, src: &[u8], dst: *mut u8) {
        let word = |at: usize| u64::from_ne_bytes(src.get(at..at + 8).and_then(|b| b.try_into().ok()).unwrap_or_default());
        // SAFETY: the caller's range, aligned to each access (`of`).
        unsafe {
            match self {
                Small::Byte => dst.write_volatile(src[0]),
                Small::Half => (dst as *mut u16).write_volatile(u16::from_ne_bytes(src.try_into().unwrap_or_default())),
                Small::Word => (dst as *mut u32).write_volatile(u32::from_ne_bytes(src.try_into().unwrap_or_default())),
                Small::Double => (dst as *mut u64).write_volatile(word(0)),
                Small::TwoDoubles => {
                    (dst as *mut u64).write_volatile(word(0));
                    (dst as *mut u64).add(1).write_volatile(word(8));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(37).wrapping_add(11)).collect()
    }

    #[test]
    fn copies_every_byte_whatever_both_sides_alignment() {
        // Lengths up to 80 cover no word, a partial round of words and
        // more than one round of four; offsets 0..16 every alignment of
        // either side against the other.
        let src = pattern(96);
        for guest_off in 0..16 {
            for dom0_off in 0..16 {
                for len in 0..80 {
                    let mut guest = vec![0u64; 14];
                    let g = guest.as_mut_ptr() as *mut u8;
                    let mut dom0 = vec![0u8; 112];
                    let want = &src[..len];
                    // SAFETY: `g + guest_off .. + len` is inside `guest` (112 bytes).
                    unsafe { copy_to_window(want, g.add(guest_off)) };
                    // SAFETY: as above, and nothing else refers to `guest` meanwhile.
                    let written = unsafe { core::slice::from_raw_parts(g, 112) }.to_vec();
                    assert_eq!(&written[guest_off..guest_off + len], want, "to: guest +{guest_off}, len {len}");
                    assert!(written[..guest_off].iter().chain(&written[guest_off + len..]).all(|&b| b == 0), "to: outside the range");
                    // SAFETY: as above.
                    unsafe { copy_from_window(g.add(guest_off), &mut dom0[dom0_off..dom0_off + len]) };
                    assert_eq!(&dom0[dom0_off..dom0_off + len], want, "from: guest +{guest_off}, dom0 +{dom0_off}, len {len}");
                    assert!(dom0[..dom0_off].iter().chain(&dom0[dom0_off + len..]).all(|&b| b == 0), "from: outside the range");
                    // And back from a misaligned dom0 buffer.
                    let mut again = vec![0u64; 14];
                    let a = again.as_mut_ptr() as *mut u8;
                    // SAFETY: as above.
                    unsafe { copy_to_window(&dom0[dom0_off..dom0_off + len], a.add(guest_off)) };
                    // SAFETY: as above.
                    let back = unsafe { core::slice::from_raw_parts(a.add(guest_off), len) };
                    assert_eq!(back, want, "to from dom0 +{dom0_off}");
                }
            }
        }
    }

    #[test]
    fn a_small_copy_is_the_plans_accesses() {
        // Every length and alignment a direct copy takes gives exactly the
        // accesses `access_plan` does (so no field is torn or merged), and
        // the fields the virtqueues read and write take one.
        for addr in 0x1000..0x1020usize {
            for len in 0..40usize {
                let Some(small) = Small::of(addr, len) else { continue };
                let plan: Vec<_> = hv_abi::copy::access_plan(addr, len).collect();
                assert_eq!(small.accesses(), &plan[..], "addr {addr:#x} len {len}");
            }
        }
        for (addr, len) in [(0x1002, 2), (0x1000, 2), (0x1004, 4), (0x1008, 8), (0x1010, 16), (0x1003, 1)] {
            assert!(Small::of(addr, len).is_some(), "addr {addr:#x} len {len} takes the direct copy");
        }
        for (addr, len) in [(0x1001, 2), (0x1004, 16), (0x1002, 4), (0x1000, 3), (0x1000, 32)] {
            assert_eq!(Small::of(addr, len), None, "addr {addr:#x} len {len} takes the plan");
        }
    }
}
