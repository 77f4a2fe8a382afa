//! Physical address range arithmetic without the heap.
//!
//! Used at boot, before the heap exists, to compute free RAM as
//! memory banks − image − device tree − initrd − reserved regions, then
//! shrunk to whole pages with [`RangeSet::page_align_inward`].

use crate::addr::{PhysAddr, PAGE_SIZE};

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Range {
    pub start: PhysAddr,
    pub end: PhysAddr,
}

impl Range {
    const EMPTY: Self = Self { start: PhysAddr::new(0), end: PhysAddr::new(0) };

    /// `[start, end)`, or `None` if `end < start`.
    pub const fn new(start: PhysAddr, end: PhysAddr) -> Option<Self> {
        if end.as_u64() < start.as_u64() {
            None
        } else {
            Some(Self { start, end })
        }
    }

    /// `[base, base + size)`, or `None` on overflow.
    pub const fn from_base_size(base: PhysAddr, size: u64) -> Option<Self> {
        match base.checked_add(size) {
            Some(end) => Some(Self { start: base, end }),
            None => None,
        }
    }

    /// Size in bytes (0 for a malformed range with `end < start`).
    pub const fn size(&self) -> u64 {
        self.end.as_u64().saturating_sub(self.start.as_u64())
    }

    pub const fn is_empty(&self) -> bool {
        self.end.as_u64() <= self.start.as_u64()
    }

    pub const fn contains(&self, addr: PhysAddr) -> bool {
        self.start.as_u64() <= addr.as_u64() && addr.as_u64() < self.end.as_u64()
    }

    /// Do the two ranges share at least one byte?
    pub const fn overlaps(&self, other: &Range) -> bool {
        self.start.as_u64() < other.end.as_u64() && other.start.as_u64() < self.end.as_u64()
    }

    /// The largest whole-page range inside `self` (start rounded up, end
    /// rounded down to [`PAGE_SIZE`]), or `None` if that is empty.
    pub const fn page_align_inward(&self) -> Option<Range> {
        let start = match self.start.align_up(PAGE_SIZE) {
            Some(start) => start,
            None => return None,
        };
        let end = self.end.align_down(PAGE_SIZE);
        if end.as_u64() > start.as_u64() {
            Some(Range { start, end })
        } else {
            None
        }
    }
}

/// Why a [`RangeSet`] operation was refused. The set is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// The result would need more than the set's capacity.
    CapacityExceeded,
    /// `end < start`.
    Inverted,
}

/// Default capacity of a [`RangeSet`].
pub const RANGE_SET_CAPACITY: usize = 64;

/// A set of physical addresses stored as at most `N` sorted, disjoint,
/// non-adjacent, non-empty ranges in a fixed array (no heap).
#[derive(Clone, Debug)]
pub struct RangeSet<const N: usize = RANGE_SET_CAPACITY> {
    ranges: [Range; N],
    len: usize,
}

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        Self::empty()
    }
}

impl RangeSet {
    /// An empty set with the default capacity ([`RANGE_SET_CAPACITY`]).
    pub const fn new() -> Self {
        Self::empty()
    }
}

impl<const N: usize> RangeSet<N> {
    /// An empty set of capacity `N` (`RangeSet::<N>::empty()`).
    pub const fn empty() -> Self {
        Self { ranges: [Range::EMPTY; N], len: 0 }
    }

    /// The ranges, sorted by address.
    pub fn as_slice(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    pub fn iter(&self) -> core::iter::Copied<core::slice::Iter<'_, Range>> {
        self.as_slice().iter().copied()
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes in the set.
    pub fn total(&self) -> u64 {
        self.iter().map(|r| r.size()).sum()
    }

    pub fn contains(&self, addr: PhysAddr) -> bool {
        self.iter().any(|r| r.contains(addr))
    }

    /// Does any byte of `range` belong to the set?
    pub fn overlaps(&self, range: &Range) -> bool {
        self.iter().any(|r| r.overlaps(range))
    }

    /// Adds `range`, merging with overlapping and adjacent ranges. Empty
    /// ranges are ignored.
    pub fn insert(&mut self, range: Range) -> Result<(), RangeError> {
        if range.end < range.start {
            return Err(RangeError::Inverted);
        }
        if range.is_empty() {
            return Ok(());
        }
        // Ranges [first, last) touch `range` (overlap or adjacency).
        let first = self.as_slice().iter().position(|r| r.end >= range.start).unwrap_or(self.len);
        let last = first + self.as_slice()[first..].iter().take_while(|r| r.start <= range.end).count();
        if first == last {
            if self.len == N {
                return Err(RangeError::CapacityExceeded);
            }
            self.ranges.copy_within(first..self.len, first + 1);
            self.ranges[first] = range;
            self.len += 1;
        } else {
            let merged = Range {
                start: range.start.min(self.ranges[first].start),
                end: range.end.max(self.ranges[last - 1].end),
            };
            self.ranges[first] = merged;
            self.ranges.copy_within(last..self.len, first + 1);
            self.len -= last - first - 1;
        }
        Ok(())
    }

    /// Removes `range` from the set; may split one range in two. Empty
    /// ranges are ignored.
    pub fn subtract(&mut self, range: Range) -> Result<(), RangeError> {
        if range.end < range.start {
            return Err(RangeError::Inverted);
        }
        if range.is_empty() {
            return Ok(());
        }
        // Ranges [first, last) overlap `range`.
        let first = self.as_slice().iter().position(|r| r.end > range.start).unwrap_or(self.len);
        let last = first + self.as_slice()[first..].iter().take_while(|r| r.start < range.end).count();
        if first == last {
            return Ok(());
        }
        let head = Range { start: self.ranges[first].start, end: range.start };
        let tail = Range { start: range.end, end: self.ranges[last - 1].end };
        let keep = usize::from(!head.is_empty()) + usize::from(!tail.is_empty());
        let new_len = self.len - (last - first) + keep;
        if new_len > N {
            return Err(RangeError::CapacityExceeded);
        }
        self.ranges.copy_within(last..self.len, first + keep);
        let mut at = first;
        for piece in [head, tail] {
            if !piece.is_empty() {
                self.ranges[at] = piece;
                at += 1;
            }
        }
        self.len = new_len;
        Ok(())
    }

    /// Shrinks every range to whole pages (start rounded up, end rounded
    /// down) and drops ranges that become empty.
    pub fn page_align_inward(&mut self) {
        let mut kept = 0;
        for i in 0..self.len {
            if let Some(aligned) = self.ranges[i].page_align_inward() {
                self.ranges[kept] = aligned;
                kept += 1;
            }
        }
        self.len = kept;
    }
}

impl<'a, const N: usize> IntoIterator for &'a RangeSet<N> {
    type Item = Range;
    type IntoIter = core::iter::Copied<core::slice::Iter<'a, Range>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Free RAM: `banks` minus every range in `reserved` (image, device tree,
/// initrd, /memreserve/, reserved-memory...), page-aligned inward.
pub fn free_memory<const N: usize>(
    banks: impl IntoIterator<Item = Range>,
    reserved: impl IntoIterator<Item = Range>,
) -> Result<RangeSet<N>, RangeError> {
    let mut set = RangeSet::empty();
    for bank in banks {
        set.insert(bank)?;
    }
    for hole in reserved {
        set.subtract(hole)?;
    }
    set.page_align_inward();
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn r(start: u64, end: u64) -> Range {
        Range::new(PhysAddr::new(start), PhysAddr::new(end)).unwrap()
    }

    fn raw<const N: usize>(set: &RangeSet<N>) -> Vec<(u64, u64)> {
        set.iter().map(|r| (r.start.as_u64(), r.end.as_u64())).collect()
    }

    #[test]
    fn range_constructors_check_order_and_overflow() {
        assert!(Range::new(PhysAddr::new(2), PhysAddr::new(1)).is_none());
        assert!(Range::from_base_size(PhysAddr::new(u64::MAX), 2).is_none());
        assert_eq!(Range::from_base_size(PhysAddr::new(0x1000), 0x10), Some(r(0x1000, 0x1010)));
        assert!(r(5, 5).is_empty() && r(5, 5).size() == 0);
        assert!(r(0, 10).overlaps(&r(9, 20)) && !r(0, 10).overlaps(&r(10, 20)));
    }

    #[test]
    fn insert_keeps_sorted_and_merges_overlapping_and_adjacent() {
        let mut set = RangeSet::<8>::empty();
        set.insert(r(0x5000, 0x6000)).unwrap();
        set.insert(r(0x1000, 0x2000)).unwrap();
        set.insert(r(0x8000, 0x9000)).unwrap();
        assert_eq!(raw(&set), [(0x1000, 0x2000), (0x5000, 0x6000), (0x8000, 0x9000)]);
        set.insert(r(0x2000, 0x3000)).unwrap(); // adjacent
        assert_eq!(raw(&set), [(0x1000, 0x3000), (0x5000, 0x6000), (0x8000, 0x9000)]);
        set.insert(r(0x5800, 0x8000)).unwrap(); // overlap + adjacent: bridges two
        assert_eq!(raw(&set), [(0x1000, 0x3000), (0x5000, 0x9000)]);
        set.insert(r(0x0, 0x10000)).unwrap(); // swallows everything
        assert_eq!(raw(&set), [(0x0, 0x10000)]);
        set.insert(r(0x20000, 0x20000)).unwrap(); // empty: ignored
        assert_eq!(set.len(), 1);
        assert_eq!(set.total(), 0x10000);
        assert_eq!(set.insert(Range { start: PhysAddr::new(2), end: PhysAddr::new(1) }), Err(RangeError::Inverted));
    }

    #[test]
    fn subtract_splits_a_range_in_two() {
        let mut set = RangeSet::<4>::empty();
        set.insert(r(0x1000, 0x9000)).unwrap();
        set.subtract(r(0x3000, 0x4000)).unwrap();
        assert_eq!(raw(&set), [(0x1000, 0x3000), (0x4000, 0x9000)]);
        assert_eq!(set.total(), 0x7000);
    }

    #[test]
    fn subtract_at_edges_and_across_ranges() {
        let mut set = RangeSet::<4>::empty();
        set.insert(r(0x1000, 0x5000)).unwrap();
        set.insert(r(0x8000, 0xc000)).unwrap();
        set.subtract(r(0x0, 0x2000)).unwrap(); // head
        set.subtract(r(0xb000, 0xc000)).unwrap(); // exact tail
        assert_eq!(raw(&set), [(0x2000, 0x5000), (0x8000, 0xb000)]);
        set.subtract(r(0x4000, 0x9000)).unwrap(); // across the gap
        assert_eq!(raw(&set), [(0x2000, 0x4000), (0x9000, 0xb000)]);
        set.subtract(r(0x5000, 0x9000)).unwrap(); // only the gap: no-op
        assert_eq!(raw(&set), [(0x2000, 0x4000), (0x9000, 0xb000)]);
        set.subtract(r(0x2000, 0x4000)).unwrap(); // a whole range
        assert_eq!(raw(&set), [(0x9000, 0xb000)]);
        set.subtract(r(0, u64::MAX)).unwrap();
        assert!(set.is_empty());
    }

    #[test]
    fn capacity_overflow_is_an_error_and_leaves_set_unchanged() {
        let mut set = RangeSet::<2>::empty();
        set.insert(r(0x1000, 0x2000)).unwrap();
        set.insert(r(0x3000, 0x8000)).unwrap();
        assert_eq!(set.insert(r(0x9000, 0xa000)), Err(RangeError::CapacityExceeded));
        assert_eq!(set.subtract(r(0x4000, 0x5000)), Err(RangeError::CapacityExceeded));
        assert_eq!(raw(&set), [(0x1000, 0x2000), (0x3000, 0x8000)]);
        // Merging needs no new slot, so it still works when full.
        set.insert(r(0x2000, 0x3000)).unwrap();
        assert_eq!(raw(&set), [(0x1000, 0x8000)]);
    }

    #[test]
    fn page_align_inward_rounds_and_drops_empty() {
        let mut set = RangeSet::<4>::empty();
        set.insert(r(0x1001, 0x3fff)).unwrap(); // -> [0x2000, 0x3000)
        set.insert(r(0x5001, 0x5fff)).unwrap(); // -> empty
        set.insert(r(0x7000, 0x9000)).unwrap(); // unchanged
        set.page_align_inward();
        assert_eq!(raw(&set), [(0x2000, 0x3000), (0x7000, 0x9000)]);
        assert_eq!(r(u64::MAX - 5, u64::MAX).page_align_inward(), None);
    }

    #[test]
    fn free_memory_is_banks_minus_reserved_page_aligned() {
        let banks = [r(0x4000_0000, 0x8000_0000), r(0x1_0000_0000, 0x1_4000_0000)];
        let reserved = [
            r(0x4008_0000, 0x4023_4567),     // image
            r(0x4800_0000, 0x4800_3210),     // device tree
            r(0x1_3fff_f800, 0x1_4000_0800), // straddles the end of bank 2
        ];
        let free = free_memory::<8>(banks, reserved).unwrap();
        assert_eq!(
            raw(&free),
            [
                (0x4000_0000, 0x4008_0000),
                (0x4023_5000, 0x4800_0000),
                (0x4800_4000, 0x8000_0000),
                (0x1_0000_0000, 0x1_3fff_f000),
            ]
        );
        assert!(free.iter().all(|r| r.start.is_aligned(PAGE_SIZE) && r.end.is_aligned(PAGE_SIZE)));
        assert!(!free.contains(PhysAddr::new(0x4800_0000)) && free.contains(PhysAddr::new(0x4800_4000)));
    }
}
