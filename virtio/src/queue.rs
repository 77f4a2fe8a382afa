//! Split virtqueues, device side (virtio 1.x §2.7).
//!
//! The driver places three areas in its RAM and tells the device their
//! addresses through the transport (§4.2.2):
//!
//! * the **descriptor table** (§2.7.5): `size` entries of 16 bytes,
//!   `{ addr: u64, len: u32, flags: u16, next: u16 }`;
//! * the **driver area**, or available ring (§2.7.6):
//!   `{ flags: u16, idx: u16, ring: [u16; size] }` — heads of the chains
//!   the driver offers, `idx` counting them (free-running, wrapping);
//! * the **device area**, or used ring (§2.7.8):
//!   `{ flags: u16, idx: u16, ring: [{ id: u32, len: u32 }; size] }` —
//!   chains the device has finished with, `len` the bytes it wrote.
//!
//! A *chain* is a list of descriptors linked by `next` while `flags` has
//! `NEXT`; device-readable ones come first, device-writable ones
//! (`flags & WRITE`) after (§2.7.4.2). Everything here treats those areas
//! as hostile input: [`Queue::pop`] reads each descriptor once, and any
//! structural fault (a head or `next` index outside the table, a chain with
//! more descriptors than the table — a loop —, an indirect descriptor, the
//! available index running ahead by more than `size`, a ring outside RAM)
//! is a [`QueueError`]: the queue is broken and the device must be reset
//! (§2.1.2, `DEVICE_NEEDS_RESET`). Faults in a well-formed chain's contents
//! ([`ChainError`]) only fail that request.
//!
//! Neither `VIRTIO_F_INDIRECT_DESC` nor `VIRTIO_F_EVENT_IDX` is offered, so
//! indirect descriptors are a driver error and notifications follow the
//! `VIRTQ_AVAIL_F_NO_INTERRUPT` flag (§2.7.7).

use alloc::vec::Vec;

use crate::memory::{GuestMemory, MemError};

/// Descriptor flag: the chain continues at `next` (§2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds a table of indirect descriptors
/// (§2.7.5.3). Only with `VIRTIO_F_INDIRECT_DESC`, which no device here
/// offers.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available-ring flag: the driver asks not to be interrupted when buffers
/// are used (§2.7.7).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Largest queue size a split virtqueue may have (§2.7).
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Bytes per descriptor-table entry.
const DESC_SIZE: u64 = 16;
/// Offset of `ring` in the available and used rings (after `flags`, `idx`).
const RING_OFFSET: u64 = 4;
/// Offset of `idx` in the available and used rings.
const IDX_OFFSET: u64 = 2;
/// Bytes per used-ring element.
const USED_ELEM_SIZE: u64 = 8;

/// A broken virtqueue: the driver violated the ring protocol, so nothing
/// more can be taken from this queue. The device reacts by setting
/// `DEVICE_NEEDS_RESET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// `avail.idx` is more than the queue size ahead of the last chain the
    /// device took (§2.7.13.3 — the driver cannot have offered that many).
    AvailIndexJump { last_seen: u16, idx: u16 },
    /// A head index in the available ring is not below the queue size.
    HeadOutOfRange { head: u16 },
    /// A descriptor's `next` is not below the queue size.
    NextOutOfRange { index: u16, next: u16 },
    /// The chain starting at `head` has more descriptors than the queue
    /// size, so it loops (§2.7.5.2).
    ChainLoop { head: u16 },
    /// A descriptor has `VIRTQ_DESC_F_INDIRECT`, whose feature was not
    /// negotiated (§2.7.5.3.1).
    Indirect { index: u16 },
    /// A ring or table address computation overflows `u64`.
    AddressOverflow,
    /// A ring or the descriptor table is not (entirely) in guest RAM.
    Memory(MemError),
    /// The queue is not usable (size 0); the transport never lets this
    /// happen to a ready queue.
    NotConfigured,
}

impl From<MemError> for QueueError {
    fn from(e: MemError) -> Self {
        QueueError::Memory(e)
    }
}

/// A fault in one chain's contents: the request fails, the queue stays
/// usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A device-readable descriptor follows a device-writable one
    /// (§2.7.4.2: the driver must put writable ones last).
    Misordered,
    /// The chain's buffers total more bytes than the device accepts.
    TooLong { len: u64, max: u64 },
    /// The request needs more bytes than the chain's readable or writable
    /// part has.
    Short,
    /// A buffer is not in guest RAM.
    Memory(MemError),
}

/// One descriptor as the device copied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address of the buffer.
    pub addr: u64,
    /// Its length.
    pub len: u32,
    /// Device-writable (`VIRTQ_DESC_F_WRITE`).
    pub writable: bool,
}

/// A descriptor chain taken from the available ring: a copy of its
/// descriptors (at most the queue size of them). The device reads the
/// readable buffers as one byte stream and writes the writable ones as
/// another (virtio 1.x message framing, §2.6.4: no particular split into
/// descriptors may be assumed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    head: u16,
    descs: Vec<Desc>,
}

impl Chain {
    /// The head index, which the device returns in the used ring.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The descriptors, in chain order.
    pub fn descriptors(&self) -> &[Desc] {
        &self.descs
    }

    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        sum_len(self.descs.iter().filter(|d| !d.writable))
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        sum_len(self.descs.iter().filter(|d| d.writable))
    }

    /// Checks that readable buffers come before writable ones and that the
    /// chain holds at most `max_len` bytes.
    pub fn check(&self, max_len: u64) -> Result<(), ChainError> {
        let first_writable = self.descs.iter().position(|d| d.writable).unwrap_or(self.descs.len());
        if self.descs.iter().skip(first_writable).any(|d| !d.writable) {
            return Err(ChainError::Misordered);
        }
        let len = self.readable_len().saturating_add(self.writable_len());
        if len > max_len {
            return Err(ChainError::TooLong { len, max: max_len });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` of the readable stream.
    pub fn read_at(&self, mem: &dyn GuestMemory, offset: u64, buf: &mut [u8]) -> Result<(), ChainError> {
        let segs = self.descs.iter().filter(|d| !d.writable);
        for_each_piece(segs, offset, buf.len(), |gpa, range| {
            let dst = buf.get_mut(range).ok_or(ChainError::Short)?;
            mem.read(gpa, dst).map_err(ChainError::Memory)
        })
    }

    /// Writes `data` at `offset` of the writable stream.
    pub fn write_at(&self, mem: &mut dyn GuestMemory, offset: u64, data: &[u8]) -> Result<(), ChainError> {
        let segs = self.descs.iter().filter(|d| d.writable);
        for_each_piece(segs, offset, data.len(), |gpa, range| {
            let src = data.get(range).ok_or(ChainError::Short)?;
            mem.write(gpa, src).map_err(ChainError::Memory)
        })
    }
}

fn sum_len<'a>(descs: impl Iterator<Item = &'a Desc>) -> u64 {
    // At most MAX_QUEUE_SIZE lengths of at most u32::MAX: no overflow, but
    // saturate rather than argue.
    descs.fold(0u64, |acc, d| acc.saturating_add(u64::from(d.len)))
}

/// Splits bytes `offset..offset + len` of the stream formed by `segs` into
/// per-buffer pieces and calls `f(gpa, range in the caller's buffer)` for
/// each, in order. Fails with [`ChainError::Short`] (after the pieces that
/// exist) if the stream is shorter.
fn for_each_piece<'a>(
    segs: impl Iterator<Item = &'a Desc>,
    offset: u64,
    len: usize,
    mut f: impl FnMut(u64, core::ops::Range<usize>) -> Result<(), ChainError>,
) -> Result<(), ChainError> {
    let len64 = u64::try_from(len).map_err(|_| ChainError::Short)?;
    let end = offset.checked_add(len64).ok_or(ChainError::Short)?;
    // Stream position of the current segment's first byte, and of the
    // next byte to transfer. Invariant: seg_start <= next.
    let mut seg_start = 0u64;
    let mut next = offset;
    for d in segs {
        if next >= end {
            break;
        }
        let seg_end = seg_start.saturating_add(u64::from(d.len));
        if next < seg_end {
            let in_seg = next.saturating_sub(seg_start);
            let n = seg_end.min(end).saturating_sub(next);
            let gpa =
                d.addr.checked_add(in_seg).ok_or(ChainError::Memory(MemError { gpa: d.addr, len: d.len as usize }))?;
            let from = usize::try_from(next.saturating_sub(offset)).map_err(|_| ChainError::Short)?;
            let to = from.checked_add(usize::try_from(n).map_err(|_| ChainError::Short)?).ok_or(ChainError::Short)?;
            f(gpa, from..to)?;
            next = next.saturating_add(n);
        }
        seg_start = seg_end;
    }
    if next < end {
        Err(ChainError::Short)
    } else {
        Ok(())
    }
}

/// One split virtqueue's device-side state: what the driver configured
/// through the transport, and the device's positions in the rings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    max_size: u16,
    /// Current size; 0 when the driver wrote an invalid `QueueNum`.
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    /// Free-running count of chains taken from the available ring.
    last_avail: u16,
    /// `avail.idx` as [`Queue::offered`] last read (and validated) it:
    /// [`Queue::take`] takes chains up to it without reading it again.
    avail_seen: u16,
    /// Free-running count of chains put on the used ring (`used.idx`).
    next_used: u16,
}

impl Queue {
    /// A queue in its reset state (§4.2.3.2): not ready, addresses 0, size
    /// `max_size` until the driver writes `QueueNum`.
    pub fn new(max_size: u16) -> Self {
        Queue {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            last_avail: 0,
            avail_seen: 0,
            next_used: 0,
        }
    }

    /// `QueueNumMax`.
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// The queue size in use (0: invalid, the queue cannot be made ready).
    pub fn size(&self) -> u16 {
        self.size
    }

    /// `QueueReady`.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Addresses of the descriptor table, driver area and device area.
    pub fn addresses(&self) -> (u64, u64, u64) {
        (self.desc_table, self.avail_ring, self.used_ring)
    }

    /// Chains taken so far (free-running).
    pub fn last_avail_idx(&self) -> u16 {
        self.last_avail
    }

    /// Chains completed so far (free-running, = `used.idx`).
    pub fn next_used_idx(&self) -> u16 {
        self.next_used
    }

    /// `QueueNum`: a split queue's size is a power of two (§2.7) no larger
    /// than `QueueNumMax` (§4.2.2). Anything else leaves the queue with
    /// size 0, which refuses `QueueReady`. Returns whether it was valid.
    pub fn set_size(&mut self, num: u32) -> bool {
        let valid = num != 0 && num.is_power_of_two() && num <= u32::from(self.max_size);
        self.size = if valid { u16::try_from(num).unwrap_or(0) } else { 0 };
        valid
    }

    /// Sets the descriptor table address.
    pub fn set_desc_table(&mut self, gpa: u64) {
        self.desc_table = gpa;
    }

    /// Sets the driver area (available ring) address.
    pub fn set_avail_ring(&mut self, gpa: u64) {
        self.avail_ring = gpa;
    }

    /// Sets the device area (used ring) address.
    pub fn set_used_ring(&mut self, gpa: u64) {
        self.used_ring = gpa;
    }

    /// `QueueReady`: enabling starts both ring positions at 0; it is
    /// refused (returns false) while the size is invalid.
    pub fn set_ready(&mut self, ready: bool) -> bool {
        if ready && self.size == 0 {
            return false;
        }
        if ready && !self.ready {
            self.last_avail = 0;
            self.avail_seen = 0;
            self.next_used = 0;
        }
        self.ready = ready;
        true
    }

    /// Number of chains the driver has made available that the device has
    /// not taken yet.
    pub fn available(&self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        if self.size == 0 {
            return Err(QueueError::NotConfigured);
        }
        let idx = mem.read_u16(offset(self.avail_ring, IDX_OFFSET)?)?;
        let pending = idx.wrapping_sub(self.last_avail);
        if pending > self.size {
            return Err(QueueError::AvailIndexJump { last_seen: self.last_avail, idx });
        }
        Ok(pending)
    }

    /// As [`Queue::available`], and remembers the index read so that
    /// [`Queue::take`] takes that many chains without reading it again (a
    /// device taking a batch reads `avail.idx` once; chains offered after
    /// that read come with their own notification).
    pub fn offered(&mut self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        let pending = self.available(mem)?;
        self.avail_seen = self.last_avail.wrapping_add(pending);
        Ok(pending)
    }

    /// Takes the next available chain, if any, and walks it.
    pub fn pop(&mut self, mem: &dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        if self.offered(mem)? == 0 {
            return Ok(None);
        }
        self.take(mem)
    }

    /// Takes the next of the chains [`Queue::offered`] (or [`Queue::pop`])
    /// last counted, and walks it; `None` once they are all taken.
    pub fn take(&mut self, mem: &dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        if self.last_avail == self.avail_seen {
            return Ok(None);
        }
        // The ring entries and descriptors were written before avail.idx.
        mem.fence();
        let slot = self.last_avail.checked_rem(self.size).ok_or(QueueError::NotConfigured)?;
        let head = mem.read_u16(offset(self.avail_ring, RING_OFFSET + 2 * u64::from(slot))?)?;
        let chain = self.walk(mem, head)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    /// Copies the chain starting at `head` out of the descriptor table.
    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<Chain, QueueError> {
        if head >= self.size {
            return Err(QueueError::HeadOutOfRange { head });
        }
        // Room for a disk request's three (header, data, status) and one
        // more, allocated at once rather than grown on the first push.
        let mut descs = Vec::with_capacity(usize::from(self.size).min(4));
        let mut index = head;
        loop {
            if descs.len() >= usize::from(self.size) {
                return Err(QueueError::ChainLoop { head });
            }
            let mut raw = [0u8; DESC_SIZE as usize];
            mem.read(offset(self.desc_table, DESC_SIZE * u64::from(index))?, &mut raw)?;
            let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = raw;
            let flags = u16::from_le_bytes([f0, f1]);
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(QueueError::Indirect { index });
            }
            descs.push(Desc {
                addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
                len: u32::from_le_bytes([l0, l1, l2, l3]),
                writable: flags & VIRTQ_DESC_F_WRITE != 0,
            });
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(Chain { head, descs });
            }
            let next = u16::from_le_bytes([n0, n1]);
            if next >= self.size {
                return Err(QueueError::NextOutOfRange { index, next });
            }
            index = next;
        }
    }

    /// Puts a finished chain on the used ring: `len` is the number of bytes
    /// the device wrote into its writable buffers (§2.7.8).
    pub fn push_used(&mut self, mem: &mut dyn GuestMemory, head: u16, len: u32) -> Result<(), QueueError> {
        let slot = self.next_used.checked_rem(self.size).ok_or(QueueError::NotConfigured)?;
        let mut elem = [0u8; USED_ELEM_SIZE as usize];
        let (id, written) = elem.split_at_mut(4);
        id.copy_from_slice(&u32::from(head).to_le_bytes());
        written.copy_from_slice(&len.to_le_bytes());
        mem.write(offset(self.used_ring, RING_OFFSET + USED_ELEM_SIZE * u64::from(slot))?, &elem)?;
        // The element must be visible before the index that publishes it.
        mem.fence();
        self.next_used = self.next_used.wrapping_add(1);
        mem.write_u16(offset(self.used_ring, IDX_OFFSET)?, self.next_used)?;
        Ok(())
    }

    /// Whether the driver wants a used-buffer notification now (it has not
    /// set `VIRTQ_AVAIL_F_NO_INTERRUPT`, §2.7.7). Call after `push_used`.
    pub fn wants_interrupt(&self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        // used.idx must be visible before the flag is sampled.
        mem.fence();
        let flags = mem.read_u16(self.avail_ring)?;
        Ok(flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0)
    }
}

/// `base + off`, or [`QueueError::AddressOverflow`].
fn offset(base: u64, off: u64) -> Result<u64, QueueError> {
    base.checked_add(off).ok_or(QueueError::AddressOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VecMemory;

    const BASE: u64 = 0x4000_0000;
    const DESC: u64 = BASE;
    const AVAIL: u64 = BASE + 0x1000;
    const USED: u64 = BASE + 0x2000;

    fn setup(size: u16) -> (Queue, VecMemory) {
        let mut q = Queue::new(256);
        assert!(q.set_size(u32::from(size)));
        q.set_desc_table(DESC);
        q.set_avail_ring(AVAIL);
        q.set_used_ring(USED);
        assert!(q.set_ready(true));
        (q, VecMemory::new(BASE, 0x10000))
    }

    fn put_desc(m: &mut VecMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        m.write(DESC + 16 * u64::from(i), &raw).unwrap();
    }

    /// Offers `head` in avail slot `n` and sets avail.idx to n + 1.
    fn offer(m: &mut VecMemory, n: u16, size: u16, head: u16) {
        m.write_u16(AVAIL + 4 + 2 * u64::from(n % size), head).unwrap();
        m.write_u16(AVAIL + 2, n.wrapping_add(1)).unwrap();
    }

    #[test]
    fn empty_ring_yields_nothing() {
        let (mut q, m) = setup(8);
        assert_eq!(q.pop(&m), Ok(None));
        assert_eq!(q.last_avail_idx(), 0);
    }

    #[test]
    fn chain_is_copied_in_order_with_lengths() {
        let (mut q, mut m) = setup(8);
        put_desc(&mut m, 3, BASE + 0x4000, 16, VIRTQ_DESC_F_NEXT, 5);
        put_desc(&mut m, 5, BASE + 0x5000, 100, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 0);
        put_desc(&mut m, 0, BASE + 0x6000, 1, VIRTQ_DESC_F_WRITE, 7);
        offer(&mut m, 0, 8, 3);
        let c = q.pop(&m).unwrap().unwrap();
        assert_eq!(c.head(), 3);
        assert_eq!(c.descriptors().len(), 3);
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 101);
        assert_eq!(c.check(117), Ok(()));
        assert_eq!(c.check(116), Err(ChainError::TooLong { len: 117, max: 116 }));
        assert_eq!(q.pop(&m), Ok(None));
    }

    #[test]
    fn head_index_beyond_queue_size_breaks_the_queue() {
        let (mut q, mut m) = setup(8);
        offer(&mut m, 0, 8, 8);
        assert_eq!(q.pop(&m), Err(QueueError::HeadOutOfRange { head: 8 }));
    }

    #[test]
    fn next_index_beyond_queue_size_breaks_the_queue() {
        let (mut q, mut m) = setup(8);
        put_desc(&mut m, 0, BASE + 0x4000, 16, VIRTQ_DESC_F_NEXT, 200);
        offer(&mut m, 0, 8, 0);
        assert_eq!(q.pop(&m), Err(QueueError::NextOutOfRange { index: 0, next: 200 }));
    }

    #[test]
    fn looping_chain_breaks_the_queue() {
        let (mut q, mut m) = setup(4);
        put_desc(&mut m, 0, BASE + 0x4000, 16, VIRTQ_DESC_F_NEXT, 1);
        put_desc(&mut m, 1, BASE + 0x4000, 16, VIRTQ_DESC_F_NEXT, 0);
        offer(&mut m, 0, 4, 0);
        assert_eq!(q.pop(&m), Err(QueueError::ChainLoop { head: 0 }));
        // A self-loop too.
        let (mut q, mut m) = setup(4);
        put_desc(&mut m, 2, BASE + 0x4000, 16, VIRTQ_DESC_F_NEXT, 2);
        offer(&mut m, 0, 4, 2);
        assert_eq!(q.pop(&m), Err(QueueError::ChainLoop { head: 2 }));
    }

    /// Counts reads, to bound the work a hostile ring can cause.
    struct Counting<'a>(&'a VecMemory, core::cell::Cell<usize>);

    impl GuestMemory for Counting<'_> {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            self.1.set(self.1.get() + 1);
            self.0.read(gpa, buf)
        }
        fn write(&mut self, gpa: u64, _: &[u8]) -> Result<(), MemError> {
            Err(MemError { gpa, len: 0 })
        }
    }

    #[test]
    fn loop_is_detected_after_at_most_queue_size_descriptors() {
        let (mut q, mut m) = setup(16);
        for i in 0..16 {
            put_desc(&mut m, i, BASE + 0x4000, 1, VIRTQ_DESC_F_NEXT, (i + 1) % 16);
        }
        offer(&mut m, 0, 16, 0);
        let counting = Counting(&m, core::cell::Cell::new(0));
        assert_eq!(q.pop(&counting), Err(QueueError::ChainLoop { head: 0 }));
        // avail.idx, the ring slot, and 16 descriptors.
        assert_eq!(counting.1.get(), 2 + 16);
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Op {
        Read(u64),
        Write(u64),
        Fence,
    }

    /// Logs the order of accesses and barriers.
    struct Recording(VecMemory, core::cell::RefCell<Vec<Op>>);

    impl GuestMemory for Recording {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            self.1.borrow_mut().push(Op::Read(gpa));
            self.0.read(gpa, buf)
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
            self.1.borrow_mut().push(Op::Write(gpa));
            self.0.write(gpa, data)
        }
        fn fence(&self) {
            self.1.borrow_mut().push(Op::Fence);
        }
    }

    #[test]
    fn barriers_separate_index_and_ring_accesses() {
        let (mut q, mut m) = setup(8);
        put_desc(&mut m, 0, BASE + 0x4000, 1, 0, 0);
        offer(&mut m, 0, 8, 0);
        let mut rec = Recording(m, Default::default());
        q.pop(&rec).unwrap().unwrap();
        assert_eq!(*rec.1.borrow(), [Op::Read(AVAIL + 2), Op::Fence, Op::Read(AVAIL + 4), Op::Read(DESC)]);
        rec.1.borrow_mut().clear();
        q.push_used(&mut rec, 0, 1).unwrap();
        assert!(q.wants_interrupt(&rec).unwrap());
        assert_eq!(*rec.1.borrow(), [Op::Write(USED + 4), Op::Fence, Op::Write(USED + 2), Op::Fence, Op::Read(AVAIL)]);
    }

    #[test]
    fn take_takes_what_offered_counted_and_no_more() {
        let (mut q, mut m) = setup(8);
        for i in 0..3 {
            put_desc(&mut m, i, BASE + 0x4000 + u64::from(i), 1, 0, 0);
        }
        assert_eq!(q.take(&m), Ok(None), "nothing counted yet");
        offer(&mut m, 0, 8, 0);
        offer(&mut m, 1, 8, 1);
        let counting = Counting(&m, core::cell::Cell::new(0));
        assert_eq!(q.offered(&counting), Ok(2));
        assert_eq!(counting.1.get(), 1, "one read of avail.idx");
        // Offered after the count: not taken until counted.
        offer(&mut m, 2, 8, 2);
        let counting = Counting(&m, core::cell::Cell::new(0));
        assert_eq!(q.take(&counting).unwrap().unwrap().head(), 0);
        assert_eq!(q.take(&counting).unwrap().unwrap().head(), 1);
        assert_eq!(q.take(&counting), Ok(None));
        assert_eq!(counting.1.get(), 4, "a head and a descriptor each, avail.idx not again");
        assert_eq!(q.offered(&m), Ok(1));
        assert_eq!(q.take(&m).unwrap().unwrap().head(), 2);
        assert_eq!(q.take(&m), Ok(None));
        assert_eq!(q.pop(&m), Ok(None));
        // A reset queue counts from 0 again.
        assert!(q.set_ready(false));
        assert!(q.set_ready(true));
        assert_eq!(q.take(&m), Ok(None));
    }

    #[test]
    fn chain_using_every_descriptor_once_is_not_a_loop() {
        let (mut q, mut m) = setup(4);
        for i in 0..4 {
            let flags = if i < 3 { VIRTQ_DESC_F_NEXT } else { 0 };
            put_desc(&mut m, i, BASE + 0x4000, 1, flags, i + 1);
        }
        offer(&mut m, 0, 4, 0);
        assert_eq!(q.pop(&m).unwrap().unwrap().descriptors().len(), 4);
    }

    #[test]
    fn indirect_descriptor_breaks_the_queue() {
        let (mut q, mut m) = setup(8);
        put_desc(&mut m, 0, BASE + 0x4000, 16, VIRTQ_DESC_F_NEXT, 1);
        put_desc(&mut m, 1, BASE + 0x4000, 32, VIRTQ_DESC_F_INDIRECT, 0);
        offer(&mut m, 0, 8, 0);
        assert_eq!(q.pop(&m), Err(QueueError::Indirect { index: 1 }));
    }

    #[test]
    fn avail_index_jumping_past_queue_size_breaks_the_queue() {
        let (mut q, mut m) = setup(8);
        m.write_u16(AVAIL + 2, 9).unwrap();
        assert_eq!(q.pop(&m), Err(QueueError::AvailIndexJump { last_seen: 0, idx: 9 }));
        // Exactly `size` ahead is legal.
        m.write_u16(AVAIL + 2, 8).unwrap();
        assert_eq!(q.available(&m), Ok(8));
        // "Backwards" is a jump of almost 65536.
        m.write_u16(AVAIL + 2, 0xFFFF).unwrap();
        assert!(matches!(q.available(&m), Err(QueueError::AvailIndexJump { .. })));
    }

    #[test]
    fn descriptor_table_outside_ram_breaks_the_queue() {
        let (mut q, mut m) = setup(8);
        q.set_ready(false);
        q.set_desc_table(BASE + 0x10000 - 32);
        q.set_ready(true);
        offer(&mut m, 0, 8, 5);
        assert!(matches!(q.pop(&m), Err(QueueError::Memory(_))));
    }

    #[test]
    fn ring_address_overflowing_u64_breaks_the_queue() {
        let (mut q, m) = setup(8);
        q.set_ready(false);
        q.set_avail_ring(u64::MAX - 1);
        q.set_ready(true);
        assert_eq!(q.pop(&m), Err(QueueError::AddressOverflow));
    }

    #[test]
    fn used_ring_gets_elements_and_index_and_wraps() {
        let (mut q, mut m) = setup(2);
        for n in 0..3u16 {
            q.push_used(&mut m, 10 + n, 100 + u32::from(n)).unwrap();
        }
        assert_eq!(m.read_u16(USED + 2).unwrap(), 3);
        let mut e = [0u8; 8];
        m.read(USED + 4, &mut e).unwrap(); // slot 0 was rewritten by the third
        assert_eq!(e, [12, 0, 0, 0, 102, 0, 0, 0]);
        m.read(USED + 12, &mut e).unwrap();
        assert_eq!(e, [11, 0, 0, 0, 101, 0, 0, 0]);
        // Nothing written past the two slots.
        m.read(USED + 20, &mut e).unwrap();
        assert_eq!(e, [0; 8]);
    }

    #[test]
    fn no_interrupt_flag_is_honoured() {
        let (q, mut m) = setup(2);
        assert_eq!(q.wants_interrupt(&m), Ok(true));
        m.write_u16(AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT).unwrap();
        assert_eq!(q.wants_interrupt(&m), Ok(false));
    }

    #[test]
    fn queue_size_must_be_a_power_of_two_within_the_maximum() {
        let mut q = Queue::new(64);
        assert_eq!(q.size(), 64);
        assert!(!q.set_size(48));
        assert_eq!(q.size(), 0);
        assert!(!q.set_ready(true));
        assert!(!q.ready());
        assert!(!q.set_size(128));
        assert!(!q.set_size(0));
        assert!(!q.set_size(u32::MAX));
        assert!(q.set_size(1));
        assert!(q.set_ready(true));
    }

    #[test]
    fn streams_span_descriptors_and_skip_the_other_direction() {
        let mut m = VecMemory::new(BASE, 0x1000);
        m.write(BASE, b"abc").unwrap();
        m.write(BASE + 0x100, b"defgh").unwrap();
        let c = Chain {
            head: 0,
            descs: alloc::vec![
                Desc { addr: BASE, len: 3, writable: false },
                Desc { addr: BASE + 0x100, len: 5, writable: false },
                Desc { addr: BASE + 0x200, len: 2, writable: true },
                Desc { addr: BASE + 0x300, len: 0, writable: true },
                Desc { addr: BASE + 0x400, len: 4, writable: true },
            ],
        };
        let mut b = [0u8; 4];
        c.read_at(&m, 2, &mut b).unwrap();
        assert_eq!(&b, b"cdef");
        assert_eq!(c.read_at(&m, 5, &mut b), Err(ChainError::Short));
        c.write_at(&mut m, 1, b"WXYZ").unwrap();
        assert_eq!(m.bytes()[0x201], b'W');
        assert_eq!(m.bytes()[0x400..0x403], *b"XYZ");
        assert_eq!(c.write_at(&mut m, 6, b"x"), Err(ChainError::Short));
        assert_eq!(c.write_at(&mut m, u64::MAX, b"x"), Err(ChainError::Short));
        assert_eq!(c.check(u64::MAX), Ok(()));
    }

    #[test]
    fn readable_after_writable_is_misordered() {
        let c = Chain {
            head: 0,
            descs: alloc::vec![
                Desc { addr: BASE, len: 3, writable: true },
                Desc { addr: BASE, len: 3, writable: false },
            ],
        };
        assert_eq!(c.check(u64::MAX), Err(ChainError::Misordered));
    }

    #[test]
    fn buffer_outside_ram_is_a_chain_error() {
        let m = VecMemory::new(BASE, 0x1000);
        let c = Chain { head: 0, descs: alloc::vec![Desc { addr: BASE + 0xFFE, len: 4, writable: false }] };
        assert!(matches!(c.read_at(&m, 0, &mut [0; 4]), Err(ChainError::Memory(_))));
        let c = Chain { head: 0, descs: alloc::vec![Desc { addr: u64::MAX - 1, len: 4, writable: false }] };
        assert!(matches!(c.read_at(&m, 3, &mut [0; 1]), Err(ChainError::Memory(_))));
    }
}
