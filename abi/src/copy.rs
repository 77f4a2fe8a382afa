//! How a copy between guest RAM and dom0 is cut into single accesses, as
//! both sides promise it: the hypervisor for `VM_COPY`, dom0 for what its
//! backends read and write through a `GUEST_MAP` window.
//!
//! At each offset the copy makes the widest access of 8, 4, 2 and 1 bytes
//! that is naturally aligned there and fits in the range. So every
//! naturally aligned 2-, 4- or 8-byte field inside the range is read or
//! written in one access (single-copy atomic, Arm ARM B2.2.1). That
//! matters because the guest changes some of those fields while they are
//! copied: a virtqueue's `avail.idx` read byte by byte while the guest moves
//! it from 0x0bff to 0x0c00 gives 0x0b00 or 0x0cff, a jump the device must
//! treat as a broken queue (seen in CI: a disk that set DEVICE_NEEDS_RESET
//! under a stress test), and `used.idx` written byte by byte lets the guest
//! see a torn index.

/// The accesses, as `(offset, size)` in order, of a copy of `len` bytes
/// at address `addr` (see the module comment).
pub fn access_plan(addr: usize, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut at = 0;
    core::iter::from_fn(move || {
        if at >= len {
            return None;
        }
        let a = addr.wrapping_add(at);
        let size = [8, 4, 2, 1].into_iter().find(|&s| a % s == 0 && at + s <= len).unwrap_or(1);
        let piece = (at, size);
        at += size;
        Some(piece)
    })
}

/// The same copy as three runs: `head` bytes up to the first 8-byte
/// boundary, `words` aligned 8-byte accesses, `tail` bytes after them.
/// [`access_plan`] over the head and over the tail (at their own
/// addresses) gives exactly the plan's accesses there, so a copier may do
/// the words in a tight loop and only the ends piece by piece.
pub fn split(addr: usize, len: usize) -> (usize, usize, usize) {
    let head = ((8 - addr % 8) % 8).min(len);
    let words = (len - head) / 8;
    (head, words, len - head - words * 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate alloc;

    #[test]
    fn every_aligned_field_in_a_copy_is_one_access() {
        for addr in 0x1000..0x1010usize {
            for len in 0..40usize {
                let plan: alloc::vec::Vec<_> = access_plan(addr, len).collect();
                // The pieces tile the range in order, each aligned to its size.
                let mut at = 0;
                for &(off, size) in &plan {
                    assert_eq!(off, at, "addr {addr:#x} len {len}: gap or overlap");
                    assert!([1, 2, 4, 8].contains(&size));
                    assert_eq!((addr + off) % size, 0, "addr {addr:#x} len {len}: unaligned piece");
                    at += size;
                }
                assert_eq!(at, len);
                // Every naturally aligned field wholly inside is inside one piece.
                for field in [2usize, 4, 8] {
                    for f in (addr..addr + len).filter(|a| a % field == 0 && a + field <= addr + len) {
                        assert!(
                            plan.iter().any(|&(o, s)| addr + o <= f && f + field <= addr + o + s),
                            "addr {addr:#x} len {len}: the {field}-byte field at {f:#x} is split"
                        );
                    }
                }
            }
        }
        // A virtqueue's avail ring header, flags and idx: two 2-byte loads
        // when read alone, one 4-byte load together.
        assert_eq!(access_plan(0x2002, 2).collect::<alloc::vec::Vec<_>>(), [(0, 2)]);
        assert_eq!(access_plan(0x2000, 4).collect::<alloc::vec::Vec<_>>(), [(0, 4)]);
    }


    #[test]
    fn the_split_copy_makes_the_plans_accesses() {
        for addr in 0x1000..0x1010usize {
            for len in 0..64usize {
                let plan: alloc::vec::Vec<_> = access_plan(addr, len).collect();
                let (head, words, tail) = split(addr, len);
                assert_eq!(head + words * 8 + tail, len);
                let mut split_plan: alloc::vec::Vec<_> = access_plan(addr, head).collect();
                split_plan.extend((0..words).map(|k| (head + 8 * k, 8)));
                split_plan.extend(access_plan(addr + head + words * 8, tail).map(|(o, s)| (o + head + words * 8, s)));
                assert_eq!(split_plan, plan, "addr {addr:#x} len {len}");
            }
        }
    }
}
