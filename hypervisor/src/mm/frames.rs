//! Physical page (frame) allocator: a typed wrapper around
//! `buddy_system_allocator::FrameAllocator`.
//!
//! Needs the heap (the buddy free lists are `BTreeSet`s), so it is created
//! after the heap exists and fed the free ranges computed with
//! [`crate::mm::ranges`].
//!
//! Blocks are powers of two pages, naturally aligned to their size. The
//! buddy's `add_frame` splits a range whose start is not aligned into
//! aligned power-of-two blocks (by the lowest set bit of the start frame
//! number), so any page-aligned range can be added. Allocating `n` pages
//! takes `n.next_power_of_two()` pages; `free` must be called with the same
//! `n` (and `free_aligned` with the same `n` and alignment) as the
//! allocation. The buddy itself cannot detect double frees.

use alloc::vec::Vec;

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::mm::ranges::Range;

/// Buddy orders: blocks of up to 2^(ORDER-1) pages (8 TiB with 4 KiB pages).
/// (The buddy loses a block if two free top-order buddies merge, which
/// needs 16 TiB of contiguous, aligned RAM: not a concern here.)
const ORDER: usize = 32;
const PAGE_SHIFT: u32 = PAGE_SIZE.trailing_zeros();
/// The largest block (in pages) the allocator can hand out.
pub const MAX_BLOCK_PAGES: usize = 1 << (ORDER - 1);

/// Why a frame allocator operation was refused; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The range overlaps one added before.
    Overlap,
    /// `end < start`.
    Inverted,
    /// The freed block is not aligned to its size, or the page count or
    /// alignment is invalid.
    Misaligned,
    /// The freed block is not inside an added range.
    OutOfRange,
    /// More pages freed than are allocated.
    NotAllocated,
}

/// Allocator of physically contiguous, naturally aligned page blocks.
pub struct FrameAllocator {
    buddy: buddy_system_allocator::FrameAllocator<ORDER>,
    /// Page-aligned ranges handed to the buddy, to refuse overlaps and
    /// sanity-check frees.
    ranges: Vec<Range>,
    total_pages: usize,
    allocated_pages: usize,
}

impl Default for FrameAllocator {
    fn default() -> Self {
        Self::new()
    }
}

fn pfn(pa: PhysAddr) -> usize {
    (pa.as_u64() >> PAGE_SHIFT) as usize
}

fn pa_of(pfn: usize) -> PhysAddr {
    PhysAddr::new((pfn as u64) << PAGE_SHIFT)
}

/// Pages in the block for `pages` pages aligned to `align` bytes.
fn block_pages(pages: usize, align: u64) -> Option<usize> {
    if pages == 0 || pages > MAX_BLOCK_PAGES || !align.is_power_of_two() {
        return None;
    }
    let align_pages = usize::try_from((align / PAGE_SIZE).max(1)).ok()?;
    let block = pages.next_power_of_two().max(align_pages);
    (block <= MAX_BLOCK_PAGES).then_some(block)
}

impl FrameAllocator {
    pub const fn new() -> Self {
        Self {
            buddy: buddy_system_allocator::FrameAllocator::new(),
            ranges: Vec::new(),
            total_pages: 0,
            allocated_pages: 0,
        }
    }

    /// Adds the whole pages of `[start, end)` (rounded inward). Refuses a
    /// range overlapping one added before (adding a page twice would let it
    /// be handed out twice). A range with no whole page is a no-op.
    pub fn add_range(&mut self, start: PhysAddr, end: PhysAddr) -> Result<(), FrameError> {
        let range = Range::new(start, end).ok_or(FrameError::Inverted)?;
        let Some(range) = range.page_align_inward() else {
            return Ok(());
        };
        if self.ranges.iter().any(|r| r.overlaps(&range)) {
            return Err(FrameError::Overlap);
        }
        let (first, last) = (pfn(range.start), pfn(range.end));
        self.buddy.add_frame(first, last);
        self.ranges.push(range);
        self.total_pages += last - first;
        Ok(())
    }

    /// Allocates `pages.next_power_of_two()` contiguous pages, aligned to
    /// that size. `None` if `pages` is 0 or no block is free.
    pub fn alloc(&mut self, pages: usize) -> Option<PhysAddr> {
        self.alloc_aligned(pages, PAGE_SIZE)
    }

    /// Allocates `max(pages.next_power_of_two(), align / PAGE_SIZE)` pages
    /// aligned to at least `align` bytes (a power of two; values below
    /// `PAGE_SIZE` mean page alignment). Free with [`Self::free_aligned`]
    /// and the same arguments.
    pub fn alloc_aligned(&mut self, pages: usize, align: u64) -> Option<PhysAddr> {
        let block = block_pages(pages, align)?;
        let first = self.buddy.alloc(block)?;
        self.allocated_pages += block;
        Some(pa_of(first))
    }

    /// Frees a block from [`Self::alloc`] with the same `pages`.
    pub fn free(&mut self, pa: PhysAddr, pages: usize) -> Result<(), FrameError> {
        self.free_aligned(pa, pages, PAGE_SIZE)
    }

    /// Frees a block from [`Self::alloc_aligned`] with the same arguments.
    pub fn free_aligned(&mut self, pa: PhysAddr, pages: usize, align: u64) -> Result<(), FrameError> {
        let block = block_pages(pages, align).ok_or(FrameError::Misaligned)?;
        let bytes = block as u64 * PAGE_SIZE;
        if !pa.is_aligned(bytes) {
            return Err(FrameError::Misaligned);
        }
        let end = pa.checked_add(bytes).ok_or(FrameError::OutOfRange)?;
        if !self.ranges.iter().any(|r| r.start <= pa && end <= r.end) {
            return Err(FrameError::OutOfRange);
        }
        if block > self.allocated_pages {
            return Err(FrameError::NotAllocated);
        }
        self.buddy.dealloc(pfn(pa), block);
        self.allocated_pages -= block;
        Ok(())
    }

    /// Pages currently free.
    pub fn free_pages(&self) -> usize {
        self.total_pages - self.allocated_pages
    }

    /// Pages ever added.
    pub fn total_pages(&self) -> usize {
        self.total_pages
    }

    /// The page-aligned ranges added so far, in insertion order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::ranges::{free_memory, RangeSet};
    use alloc::collections::BTreeMap;

    const PAGE: u64 = PAGE_SIZE;

    fn r(start: u64, end: u64) -> Range {
        Range::new(PhysAddr::new(start), PhysAddr::new(end)).unwrap()
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn unaligned_range_start_is_split_into_aligned_blocks() {
        let mut fa = FrameAllocator::new();
        // Frames 3..29: blocks 3, 4-7, 8-15, 16-23, 24-27, 28.
        fa.add_range(PhysAddr::new(3 * PAGE), PhysAddr::new(29 * PAGE)).unwrap();
        assert_eq!(fa.total_pages(), 26);
        assert_eq!(fa.alloc(8), Some(PhysAddr::new(8 * PAGE)));
        assert_eq!(fa.alloc(8), Some(PhysAddr::new(16 * PAGE)));
        assert_eq!(fa.alloc(8), None, "no aligned 8-page block left");
        let four = fa.alloc(4).unwrap();
        assert!(four.is_aligned(4 * PAGE) && (4 * PAGE..28 * PAGE).contains(&four.as_u64()));
        assert_eq!(fa.free_pages(), 26 - 20);
    }

    #[test]
    fn add_range_rounds_inward_and_refuses_overlap() {
        let mut fa = FrameAllocator::new();
        fa.add_range(PhysAddr::new(0x1001), PhysAddr::new(0x5fff)).unwrap();
        assert_eq!(fa.ranges(), [r(0x2000, 0x5000)]);
        assert_eq!(fa.total_pages(), 3);
        fa.add_range(PhysAddr::new(0x9001), PhysAddr::new(0x9fff)).unwrap(); // no whole page
        assert_eq!(fa.add_range(PhysAddr::new(0x4000), PhysAddr::new(0x8000)), Err(FrameError::Overlap));
        assert_eq!(fa.add_range(PhysAddr::new(0x8000), PhysAddr::new(0x4000)), Err(FrameError::Inverted));
        fa.add_range(PhysAddr::new(0x5000), PhysAddr::new(0x6000)).unwrap(); // adjacent is fine
        assert_eq!(fa.total_pages(), 4);
    }

    #[test]
    fn alloc_more_than_available_returns_none() {
        let mut fa = FrameAllocator::new();
        assert_eq!(fa.alloc(1), None);
        fa.add_range(PhysAddr::new(0x10_0000), PhysAddr::new(0x10_0000 + 16 * PAGE)).unwrap();
        assert_eq!(fa.alloc(17), None);
        assert_eq!(fa.alloc(0), None);
        assert_eq!(fa.alloc(usize::MAX), None);
        assert_eq!(fa.alloc_aligned(1, 3 * PAGE), None, "alignment must be a power of two");
        assert_eq!(fa.alloc_aligned(1, 1 << 40), None);
        let all = fa.alloc(16).unwrap();
        assert_eq!(fa.alloc(1), None);
        assert_eq!(fa.free_pages(), 0);
        fa.free(all, 16).unwrap();
        assert_eq!(fa.free_pages(), 16);
    }

    #[test]
    fn alloc_aligned_honours_alignment_and_frees() {
        let mut fa = FrameAllocator::new();
        fa.add_range(PhysAddr::new(PAGE), PhysAddr::new(0x100_0000)).unwrap();
        let small = fa.alloc(1).unwrap();
        let pa = fa.alloc_aligned(1, 0x20_0000).unwrap();
        assert!(pa.is_aligned(0x20_0000));
        assert_eq!(fa.free_pages(), fa.total_pages() - 1 - 512, "the block is the alignment");
        let pa3 = fa.alloc_aligned(3, 0x100).unwrap();
        assert!(pa3.is_aligned(4 * PAGE), "3 pages take a naturally aligned 4-page block");
        fa.free_aligned(pa, 1, 0x20_0000).unwrap();
        fa.free_aligned(pa3, 3, 0x100).unwrap();
        fa.free(small, 1).unwrap();
        assert_eq!(fa.free_pages(), fa.total_pages());
    }

    #[test]
    fn bad_frees_are_refused() {
        let mut fa = FrameAllocator::new();
        fa.add_range(PhysAddr::new(0x10_0000), PhysAddr::new(0x20_0000)).unwrap();
        let pa = fa.alloc(2).unwrap();
        assert_eq!(fa.free(pa.checked_add(PAGE).unwrap(), 2), Err(FrameError::Misaligned));
        assert_eq!(fa.free(PhysAddr::new(0x30_0000), 1), Err(FrameError::OutOfRange));
        assert_eq!(fa.free(pa, 0), Err(FrameError::Misaligned));
        assert_eq!(fa.free(PhysAddr::new(0x10_0000), 256), Err(FrameError::NotAllocated));
        fa.free(pa, 2).unwrap();
        assert_eq!(fa.free_pages(), fa.total_pages());
    }

    #[test]
    fn random_alloc_free_never_overlaps_stays_in_free_ranges_and_balances() {
        // Two banks minus image, device tree and a reserved hole.
        let banks = [r(0x4000_0000, 0x4400_0000), r(0x8000_0000, 0x8080_0000)];
        let excluded = [
            r(0x4000_0000, 0x4012_3456),
            r(0x41ff_f800, 0x4200_1000),
            r(0x8010_0000, 0x8020_0000),
        ];
        let free: RangeSet<16> = free_memory(banks, excluded).unwrap();
        let mut fa = FrameAllocator::new();
        for range in &free {
            fa.add_range(range.start, range.end).unwrap();
        }
        assert_eq!(fa.total_pages() as u64, free.total() / PAGE);
        let start_free = fa.free_pages();
        assert_eq!(start_free, fa.total_pages());

        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        // Live blocks: start -> (end, pages, align).
        let mut live: BTreeMap<u64, (u64, usize, u64)> = BTreeMap::new();
        for _ in 0..20_000 {
            if live.is_empty() || rng.below(5) < 3 {
                let max = if rng.below(10) == 0 { 600 } else { 8 };
                let pages = 1 + rng.below(max) as usize;
                let align = if rng.below(4) == 0 { 1 << (12 + rng.below(10)) } else { PAGE };
                let Some(pa) = fa.alloc_aligned(pages, align) else { continue };
                let block = block_pages(pages, align).unwrap() as u64 * PAGE;
                let (s, e) = (pa.as_u64(), pa.as_u64() + block);
                assert!(pa.is_aligned(block) && pa.is_aligned(align));
                // Inside one free range, hence outside the excluded ranges.
                assert!(free.iter().any(|f| f.start.as_u64() <= s && e <= f.end.as_u64()), "{pa:?}");
                assert!(excluded.iter().all(|x| !x.overlaps(&r(s, e))));
                // No overlap with any live block.
                if let Some((&ps, &(pe, _, _))) = live.range(..e).next_back() {
                    assert!(pe <= s || ps >= e, "{s:#x}..{e:#x} overlaps {ps:#x}..{pe:#x}");
                }
                live.insert(s, (e, pages, align));
            } else {
                let key = *live.keys().nth(rng.below(live.len() as u64) as usize).unwrap();
                let (_, pages, align) = live.remove(&key).unwrap();
                fa.free_aligned(PhysAddr::new(key), pages, align).unwrap();
            }
            let in_use: u64 = live.iter().map(|(s, (e, _, _))| (e - s) / PAGE).sum();
            assert_eq!(fa.free_pages() as u64, start_free as u64 - in_use);
        }
        for (s, (_, pages, align)) in core::mem::take(&mut live) {
            fa.free_aligned(PhysAddr::new(s), pages, align).unwrap();
        }
        assert_eq!(fa.free_pages(), start_free);
        // Fully merged again: the largest naturally aligned block fits.
        // Buddies merged again: the 16 MiB block [0x4300_0000, 0x4400_0000)
        // is whole.
        assert_eq!(fa.alloc(1 << 12), Some(PhysAddr::new(0x4300_0000)));
    }
}
