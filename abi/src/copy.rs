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

}
