//! IO requests: the page the hypervisor shares with dom0 to forward guest
//! device accesses, and the ring protocol on it. See `docs/hypercalls.md`,
//! "IO requests".
//!
//! A guest data abort on an IPA that dom0 emulates becomes an [`IoRequest`]
//! that the hypervisor pushes onto the *request ring*; dom0's backend
//! handles it and pushes an [`IoCompletion`] with the same `seq` onto the
//! *completion ring*; the hypervisor matches the completion to the waiting
//! vCPU and resumes it (with `data` in the target register for a read).
//! Both rings live in one 4 KiB page, laid out as [`IoPage`].
//!
//! Each ring is single-producer/single-consumer. The hypervisor has many
//! producers (vCPUs of every VM, on every physical CPU) and serialises them
//! with a lock on the request ring (and its consumers of completions with
//! one on the completion ring); dom0 likewise serialises its own threads.
//!
//! This crate has no `unsafe`, so it cannot do the atomic accesses on the
//! shared page itself. It gives the layout (offsets asserted at compile
//! time), the index arithmetic as a state machine ([`RingIndices`]) that
//! validates whatever the peer wrote, byte codecs for the slots, and an
//! in-memory [`Ring`] that runs the same arithmetic (host tools, tests).
//! The code that maps the page does the loads and stores in the order
//! documented on [`RingIndices`].

use core::mem::{offset_of, size_of};

/// Size of the shared page.
pub const IO_PAGE_SIZE: usize = 4096;
/// Slots in each ring of the page (a power of two).
pub const IO_RING_SLOTS: u32 = 64;

/// Direction of an access ([`IoRequest::dir`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    /// The guest loads: dom0 returns the value in [`IoCompletion::data`].
    Read = 0,
    /// The guest stores [`IoRequest::data`].
    Write = 1,
}

impl Direction {
    /// The direction [`IoRequest::dir`] encodes, if any.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Direction::Read),
            1 => Some(Direction::Write),
            _ => None,
        }
    }
}

/// One guest access, hypervisor → dom0. 32 bytes, little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IoRequest {
    /// Nonzero id chosen by the hypervisor, unique for the page's lifetime
    /// (a 64-bit counter); the completion echoes it.
    pub seq: u64,
    /// The VM that made the access.
    pub vm: u16,
    /// The vCPU (index within the VM) that made it; it waits until completed.
    pub vcpu: u16,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// [`Direction`] as u8.
    pub dir: u8,
    /// [`POSTED`] or 0.
    pub flags: u8,
    /// Zero.
    pub reserved: u8,
    /// The IPA accessed (the guest's physical address).
    pub addr: u64,
    /// For a write, the value stored, in the low `size` bytes (the upper
    /// bytes zero), as the guest's register held it (the hypervisor has
    /// already undone a big-endian guest's byte swap). 0 for a read.
    pub data: u64,
}

const _: () = assert!(size_of::<IoRequest>() == 32);
const _: () = assert!(offset_of!(IoRequest, seq) == 0);
const _: () = assert!(offset_of!(IoRequest, vm) == 8);
const _: () = assert!(offset_of!(IoRequest, vcpu) == 10);
const _: () = assert!(offset_of!(IoRequest, size) == 12);
const _: () = assert!(offset_of!(IoRequest, dir) == 13);
const _: () = assert!(offset_of!(IoRequest, flags) == 14);
const _: () = assert!(offset_of!(IoRequest, reserved) == 15);

/// [`IoRequest::flags`]: a posted write. The vCPU did not wait for it (the
/// window was mapped with [`IO_MAP_POST_WRITES`]), so dom0 carries it out
/// and sends no completion. Requests are still handled in ring order, so a
/// later read of the same device sees the write's effect.
pub const POSTED: u8 = 1;

/// [`IoRequest::flags`]: the vCPU waits for this answer on another
/// physical CPU than the dom0 vCPU that was signalled, so a quick answer
/// saves it a context switch; dom0 may keep polling the ring for a short
/// while after such a request. (Without it the vCPU has given its CPU away,
/// possibly to dom0 itself: polling would only delay it.)
pub const WAITING_ELSEWHERE: u8 = 2;

/// Every flag bit defined.
const FLAGS: u8 = POSTED | WAITING_ELSEWHERE;

/// `IoMap` flags (x4): writes to the window are posted (the vCPU goes on at
/// once); reads still wait. For devices whose writes return nothing, such
/// as a UART's data register.
pub const IO_MAP_POST_WRITES: u64 = 1;
const _: () = assert!(offset_of!(IoRequest, addr) == 16);
const _: () = assert!(offset_of!(IoRequest, data) == 24);

/// Why a request read from the ring is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    ZeroSeq,
    Size(u8),
    Direction(u8),
    /// `reserved` is not zero, or `flags` has an unknown bit.
    Reserved,
    /// A read marked [`POSTED`].
    PostedRead,
    /// A write's `data` has bits above `size` bytes.
    DataTooWide,
}

impl IoRequest {
    pub const SIZE: usize = size_of::<IoRequest>();

    pub const fn new(seq: u64, vm: u16, vcpu: u16, dir: Direction, size: u8, addr: u64, data: u64) -> Self {
        IoRequest { seq, vm, vcpu, size, dir: dir as u8, flags: 0, reserved: 0, addr, data }
    }

    /// A write the vCPU does not wait for.
    pub const fn posted(seq: u64, vm: u16, vcpu: u16, size: u8, addr: u64, data: u64) -> Self {
        IoRequest { seq, vm, vcpu, size, dir: Direction::Write as u8, flags: POSTED, reserved: 0, addr, data }
    }

    /// Whether the requesting vCPU waits on another physical CPU.
    pub const fn waiting_elsewhere(&self) -> bool {
        self.flags & WAITING_ELSEWHERE != 0
    }

    /// Whether the request is a posted write (no completion is sent).
    pub const fn is_posted(&self) -> bool {
        self.flags & POSTED != 0
    }

    /// Checks every field; dom0 calls this on its copy of a slot.
    pub const fn validate(&self) -> Result<Direction, BadRequest> {
        if self.seq == 0 {
            return Err(BadRequest::ZeroSeq);
        }
        if !matches!(self.size, 1 | 2 | 4 | 8) {
            return Err(BadRequest::Size(self.size));
        }
        if self.reserved != 0 || self.flags & !FLAGS != 0 {
            return Err(BadRequest::Reserved);
        }
        let Some(dir) = Direction::from_u8(self.dir) else {
            return Err(BadRequest::Direction(self.dir));
        };
        if matches!(dir, Direction::Read) && self.is_posted() {
            return Err(BadRequest::PostedRead);
        }
        if matches!(dir, Direction::Write) && self.data & !size_mask(self.size) != 0 {
            return Err(BadRequest::DataTooWide);
        }
        Ok(dir)
    }

    /// The slot's bytes as laid out in shared memory (field offsets from
    /// the `#[repr(C)]` layout above).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        put(&mut out, offset_of!(IoRequest, seq), self.seq.to_le_bytes());
        put(&mut out, offset_of!(IoRequest, vm), self.vm.to_le_bytes());
        put(&mut out, offset_of!(IoRequest, vcpu), self.vcpu.to_le_bytes());
        put(&mut out, offset_of!(IoRequest, size), [self.size]);
        put(&mut out, offset_of!(IoRequest, dir), [self.dir]);
        put(&mut out, offset_of!(IoRequest, flags), [self.flags]);
        put(&mut out, offset_of!(IoRequest, reserved), [self.reserved]);
        put(&mut out, offset_of!(IoRequest, addr), self.addr.to_le_bytes());
        put(&mut out, offset_of!(IoRequest, data), self.data.to_le_bytes());
        out
    }

    /// The slot as four 8-byte words, each the value a little-endian load
    /// of that word gives (the bytes of `to_bytes`, eight at a time): a
    /// producer can fill the slot with four stores instead of 32.
    pub const fn to_words(&self) -> [u64; 4] {
        let packed = self.vm as u64
            | (self.vcpu as u64) << 16
            | (self.size as u64) << 32
            | (self.dir as u64) << 40
            | (self.flags as u64) << 48
            | (self.reserved as u64) << 56;
        [self.seq, packed, self.addr, self.data]
    }

    /// Decodes a slot read as four little-endian 8-byte words (the
    /// counterpart of `to_words`; not validated): a consumer copies the
    /// slot out with four loads.
    pub const fn from_words(w: [u64; 4]) -> Self {
        IoRequest {
            seq: w[0],
            vm: w[1] as u16,
            vcpu: (w[1] >> 16) as u16,
            size: (w[1] >> 32) as u8,
            dir: (w[1] >> 40) as u8,
            flags: (w[1] >> 48) as u8,
            reserved: (w[1] >> 56) as u8,
            addr: w[2],
            data: w[3],
        }
    }

    /// Decodes a slot copied out of shared memory (not validated).
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        IoRequest {
            seq: u64::from_le_bytes(get(b, offset_of!(IoRequest, seq))),
            vm: u16::from_le_bytes(get(b, offset_of!(IoRequest, vm))),
            vcpu: u16::from_le_bytes(get(b, offset_of!(IoRequest, vcpu))),
            size: b[offset_of!(IoRequest, size)],
            dir: b[offset_of!(IoRequest, dir)],
            flags: b[offset_of!(IoRequest, flags)],
            reserved: b[offset_of!(IoRequest, reserved)],
            addr: u64::from_le_bytes(get(b, offset_of!(IoRequest, addr))),
            data: u64::from_le_bytes(get(b, offset_of!(IoRequest, data))),
        }
    }
}

/// The bits an access of `size` bytes carries (all bits for sizes ≥ 8).
pub const fn size_mask(size: u8) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (size as u32 * 8)) - 1 }
}

/// How dom0 handled a request ([`IoCompletion::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum IoStatus {
    /// Done; for a read, `data` holds the value.
    Ok = 0,
    /// The device refused the access: the hypervisor injects a synchronous
    /// external abort into the guest instead of completing it.
    Fault = 1,
}

impl IoStatus {
    /// Unknown values read as `Fault`: a broken backend never completes a
    /// read with garbage silently.
    pub const fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Ok,
            _ => Self::Fault,
        }
    }
}

/// dom0's answer to one request, dom0 → hypervisor. 24 bytes, little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IoCompletion {
    /// The request's `seq`. The hypervisor drops a completion whose `seq`
    /// no vCPU is waiting for (e.g. its VM was destroyed meanwhile).
    pub seq: u64,
    /// For a read, the value; the hypervisor keeps only the low `size`
    /// bytes (then sign-extends as the guest's instruction says). Ignored
    /// for a write.
    pub data: u64,
    /// [`IoStatus`] as u32.
    pub status: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(size_of::<IoCompletion>() == 24);
const _: () = assert!(offset_of!(IoCompletion, seq) == 0);
const _: () = assert!(offset_of!(IoCompletion, data) == 8);
const _: () = assert!(offset_of!(IoCompletion, status) == 16);
const _: () = assert!(offset_of!(IoCompletion, reserved) == 20);

impl IoCompletion {
    pub const SIZE: usize = size_of::<IoCompletion>();

    pub const fn new(seq: u64, status: IoStatus, data: u64) -> Self {
        IoCompletion { seq, data, status: status as u32, reserved: 0 }
    }

    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        put(&mut out, offset_of!(IoCompletion, seq), self.seq.to_le_bytes());
        put(&mut out, offset_of!(IoCompletion, data), self.data.to_le_bytes());
        put(&mut out, offset_of!(IoCompletion, status), self.status.to_le_bytes());
        put(&mut out, offset_of!(IoCompletion, reserved), self.reserved.to_le_bytes());
        out
    }

    /// The slot as three little-endian 8-byte words (the bytes of
    /// `to_bytes`, eight at a time).
    pub const fn to_words(&self) -> [u64; 3] {
        [self.seq, self.data, self.status as u64 | (self.reserved as u64) << 32]
    }

    /// Decodes a slot read as three little-endian 8-byte words (the
    /// counterpart of `IoRequest::to_words`).
    pub const fn from_words(w: [u64; 3]) -> Self {
        IoCompletion { seq: w[0], data: w[1], status: w[2] as u32, reserved: (w[2] >> 32) as u32 }
    }

    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        IoCompletion {
            seq: u64::from_le_bytes(get(b, offset_of!(IoCompletion, seq))),
            data: u64::from_le_bytes(get(b, offset_of!(IoCompletion, data))),
            status: u32::from_le_bytes(get(b, offset_of!(IoCompletion, status))),
            reserved: u32::from_le_bytes(get(b, offset_of!(IoCompletion, reserved))),
        }
    }
}

/// Writes a field's little-endian bytes at `at` (an `offset_of!` of a
/// fixed-size slot, so always in bounds).
fn put<const N: usize>(out: &mut [u8], at: usize, bytes: [u8; N]) {
    out[at..at + N].copy_from_slice(&bytes);
}

/// Reads a field's `N` bytes at `at` (as [`put`]).
fn get<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut w = [0u8; N];
    w.copy_from_slice(&b[at..at + N]);
    w
}

/// A ring's indices in shared memory. `prod` and `cons` sit on separate
/// 64-byte cache lines, since the two sides write them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct RingHeader {
    /// Entries ever produced (wraps); written only by the producer.
    pub prod: u32,
    /// Slots in the ring; written by the hypervisor when it sets the page
    /// up (to [`IO_RING_SLOTS`]), then never. Both sides check it once and
    /// then use their own copy, never the shared one.
    pub cap: u32,
    pub reserved0: [u32; 14],
    /// Entries ever consumed (wraps); written only by the consumer.
    pub cons: u32,
    /// Nonzero while the consumer polls the ring: the producer need not
    /// signal it. Written only by the consumer, which clears it and then
    /// looks at `prod` once more before it stops polling; the producer
    /// publishes `prod` and then reads this, each with a full barrier
    /// between, so an entry is always either seen by the poll or signalled.
    pub polling: u32,
    pub reserved1: [u32; 14],
}

const _: () = assert!(size_of::<RingHeader>() == 128);
const _: () = assert!(offset_of!(RingHeader, prod) == 0);
const _: () = assert!(offset_of!(RingHeader, cap) == 4);
const _: () = assert!(offset_of!(RingHeader, cons) == 64);
const _: () = assert!(offset_of!(RingHeader, polling) == 68);

impl RingHeader {
    pub const fn new(cap: u32) -> Self {
        RingHeader { prod: 0, cap, reserved0: [0; 14], cons: 0, polling: 0, reserved1: [0; 14] }
    }
}

/// The shared page, exactly 4 KiB: requests (hypervisor → dom0) and
/// completions (dom0 → hypervisor). The hypervisor allocates and zeroes it
/// and sets both `cap` fields before dom0 sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct IoPage {
    pub req: RingHeader,
    pub cpl: RingHeader,
    pub requests: [IoRequest; IO_RING_SLOTS as usize],
    pub completions: [IoCompletion; IO_RING_SLOTS as usize],
    pub reserved: [u8; 256],
}

const _: () = assert!(size_of::<IoPage>() == IO_PAGE_SIZE);
const _: () = assert!(offset_of!(IoPage, req) == REQ_HEADER_OFFSET);
const _: () = assert!(offset_of!(IoPage, cpl) == CPL_HEADER_OFFSET);
const _: () = assert!(offset_of!(IoPage, requests) == REQ_SLOTS_OFFSET);
const _: () = assert!(offset_of!(IoPage, completions) == CPL_SLOTS_OFFSET);

/// Byte offsets in the page, for the code that accesses it with atomics.
pub const REQ_HEADER_OFFSET: usize = 0;
pub const CPL_HEADER_OFFSET: usize = 128;
pub const REQ_SLOTS_OFFSET: usize = 256;
pub const CPL_SLOTS_OFFSET: usize = REQ_SLOTS_OFFSET + IO_RING_SLOTS as usize * IoRequest::SIZE;
pub const REQ_PROD_OFFSET: usize = REQ_HEADER_OFFSET + offset_of!(RingHeader, prod);
pub const REQ_CONS_OFFSET: usize = REQ_HEADER_OFFSET + offset_of!(RingHeader, cons);
pub const CPL_PROD_OFFSET: usize = CPL_HEADER_OFFSET + offset_of!(RingHeader, prod);
pub const CPL_CONS_OFFSET: usize = CPL_HEADER_OFFSET + offset_of!(RingHeader, cons);
/// Dom0 polls the request ring (see [`RingHeader::polling`]).
pub const REQ_POLLING_OFFSET: usize = REQ_HEADER_OFFSET + offset_of!(RingHeader, polling);
/// The hypervisor polls the completion ring: here it is a count of the
/// CPUs waiting at EL2 for an answer, and while it is nonzero dom0 may skip
/// `IoComplete` (those CPUs take the completions, and each looks once more
/// after it stops).
pub const CPL_POLLING_OFFSET: usize = CPL_HEADER_OFFSET + offset_of!(RingHeader, polling);

/// Offset of request slot `slot` (from [`RingIndices::slot_of`]).
pub const fn request_slot_offset(slot: usize) -> usize {
    REQ_SLOTS_OFFSET + (slot & (IO_RING_SLOTS as usize - 1)) * IoRequest::SIZE
}

/// Offset of completion slot `slot`.
pub const fn completion_slot_offset(slot: usize) -> usize {
    CPL_SLOTS_OFFSET + (slot & (IO_RING_SLOTS as usize - 1)) * IoCompletion::SIZE
}

impl IoPage {
    /// The page as the hypervisor sets it up: zeroed, both capacities set.
    pub const fn new() -> Self {
        IoPage {
            req: RingHeader::new(IO_RING_SLOTS),
            cpl: RingHeader::new(IO_RING_SLOTS),
            requests: [IoRequest::new(0, 0, 0, Direction::Read, 0, 0, 0); IO_RING_SLOTS as usize],
            completions: [IoCompletion::new(0, IoStatus::Ok, 0); IO_RING_SLOTS as usize],
            reserved: [0; 256],
        }
    }
}

impl Default for IoPage {
    fn default() -> Self {
        Self::new()
    }
}

/// What went wrong on a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The capacity is not a power of two in 1..=2^31 (or not the one the
    /// ABI fixes).
    BadCapacity(u32),
    /// The indices would put more than `cap` entries in the ring, or the
    /// consumer ahead of the producer: the peer is broken or hostile. The
    /// page must not be used further.
    Corrupt { prod: u32, cons: u32 },
    /// No free slot (push).
    Full,
}

/// One side's view of a ring's indices, and the only arithmetic on them.
///
/// Each side keeps its own `RingIndices` in private memory. Its own counter
/// there is authoritative (it alone writes it); the peer's is the last value
/// read from shared memory that passed validation. Counters are u32 and
/// wrap; `prod - cons` (wrapping) is the number of entries, which must never
/// exceed `cap`.
///
/// Producer, for each entry:
/// 1. acquire-load the shared `cons`, [`observe_cons`](Self::observe_cons);
/// 2. [`producer_slot`](Self::producer_slot) (`None`: full);
/// 3. write the slot;
/// 4. [`produced`](Self::produced), then release-store the new `prod`
///    (the slot's contents become visible before the index does).
///
/// Consumer, for each entry:
/// 1. acquire-load the shared `prod`, [`observe_prod`](Self::observe_prod);
/// 2. [`consumer_slot`](Self::consumer_slot) (`None`: empty);
/// 3. copy the slot out of shared memory once and work on the copy (the
///    peer may change the slot at any time; never read a field twice);
/// 4. [`consumed`](Self::consumed), then release-store the new `cons` (the
///    copy is finished before the producer may reuse the slot).
///
/// A side may take several entries per index load and store the index once
/// for all of them. On AArch64 acquire/release are `LDAR`/`STLR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingIndices {
    prod: u32,
    cons: u32,
    cap: u32,
}

impl RingIndices {
    /// An empty ring of `cap` slots, both counters 0.
    pub const fn new(cap: u32) -> Result<Self, RingError> {
        Self::with_counters(cap, 0, 0)
    }

    /// A view of a ring whose counters are already `prod` and `cons` (e.g.
    /// read from a page when re-attaching to it); checks both.
    pub const fn with_counters(cap: u32, prod: u32, cons: u32) -> Result<Self, RingError> {
        if !cap.is_power_of_two() || cap > 1 << 31 {
            return Err(RingError::BadCapacity(cap));
        }
        if prod.wrapping_sub(cons) > cap {
            return Err(RingError::Corrupt { prod, cons });
        }
        Ok(RingIndices { prod, cons, cap })
    }

    pub const fn prod(&self) -> u32 {
        self.prod
    }

    pub const fn cons(&self) -> u32 {
        self.cons
    }

    pub const fn cap(&self) -> u32 {
        self.cap
    }

    /// The slot a counter value names.
    pub const fn slot_of(&self, counter: u32) -> usize {
        (counter & (self.cap - 1)) as usize
    }

    /// Entries produced and not yet consumed.
    pub const fn len(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub const fn is_full(&self) -> bool {
        self.len() == self.cap
    }

    /// Producer: takes the consumer's index as read from shared memory.
    /// Rejected (and the view unchanged) if it would make the ring hold more
    /// than `cap` entries or put the consumer past the producer.
    pub fn observe_cons(&mut self, cons: u32) -> Result<(), RingError> {
        *self = Self::with_counters(self.cap, self.prod, cons)?;
        Ok(())
    }

    /// Consumer: takes the producer's index as read from shared memory;
    /// checked as `observe_cons`.
    pub fn observe_prod(&mut self, prod: u32) -> Result<(), RingError> {
        *self = Self::with_counters(self.cap, prod, self.cons)?;
        Ok(())
    }

    /// Producer: the slot to write next, if the ring is not full.
    pub const fn producer_slot(&self) -> Option<usize> {
        if self.is_full() { None } else { Some(self.slot_of(self.prod)) }
    }

    /// Producer: the slot from `producer_slot` is written; returns the new
    /// `prod` to release-store. Panics if the ring is full (a caller bug:
    /// it skipped `producer_slot`).
    pub fn produced(&mut self) -> u32 {
        assert!(!self.is_full(), "produced() on a full ring");
        self.prod = self.prod.wrapping_add(1);
        self.prod
    }

    /// Consumer: the slot to read next, if the ring is not empty.
    pub const fn consumer_slot(&self) -> Option<usize> {
        if self.is_empty() { None } else { Some(self.slot_of(self.cons)) }
    }

    /// Consumer: the slot from `consumer_slot` is copied out; returns the
    /// new `cons` to release-store. Panics if the ring is empty.
    pub fn consumed(&mut self) -> u32 {
        assert!(!self.is_empty(), "consumed() on an empty ring");
        self.cons = self.cons.wrapping_add(1);
        self.cons
    }
}

/// An in-memory ring of `N` slots (a power of two) driven by [`RingIndices`]
/// exactly as the shared page is: for host tools and tests. Both sides are
/// this one value, so there are no peers to validate.
#[derive(Clone, Debug)]
pub struct Ring<T: Copy + Default, const N: usize> {
    idx: RingIndices,
    slots: [T; N],
}

impl<T: Copy + Default, const N: usize> Ring<T, N> {
    const CAP: u32 = {
        assert!(N.is_power_of_two() && N <= 1 << 31, "ring size must be a power of two");
        N as u32
    };

    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// An empty ring whose counters start at `counter` (to exercise
    /// wrap-around; the shared page starts at 0).
    pub fn starting_at(counter: u32) -> Self {
        let idx = match RingIndices::with_counters(Self::CAP, counter, counter) {
            Ok(idx) => idx,
            Err(_) => unreachable!(),
        };
        Ring { idx, slots: [T::default(); N] }
    }

    pub fn indices(&self) -> RingIndices {
        self.idx
    }

    pub fn len(&self) -> usize {
        self.idx.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.idx.is_full()
    }

    pub fn push(&mut self, item: T) -> Result<(), RingError> {
        let slot = self.idx.producer_slot().ok_or(RingError::Full)?;
        self.slots[slot] = item;
        self.idx.produced();
        Ok(())
    }

    pub fn pop(&mut self) -> Option<T> {
        let slot = self.idx.consumer_slot()?;
        let item = self.slots[slot];
        self.idx.consumed();
        Some(item)
    }
}

impl<T: Copy + Default, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    fn req(seq: u64) -> IoRequest {
        IoRequest::new(seq, 1, 0, Direction::Write, 4, 0x0A00_0000 + seq * 4, seq & 0xFFFF_FFFF)
    }

    /// The bytes a little-endian machine stores for these words.
    fn word_bytes<const N: usize>(words: &[u64]) -> [u8; N] {
        let mut out = [0u8; N];
        for (chunk, w) in out.chunks_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    #[test]
    fn request_words_are_the_slot_bytes_eight_at_a_time() {
        let mut r = IoRequest::posted(0x0123_4567_89ab_cdef, 0x3e, 7, 2, 0x0A00_0e10, 0xbeef);
        r.flags |= WAITING_ELSEWHERE;
        r.reserved = 0x5a;
        assert_eq!(word_bytes::<{ IoRequest::SIZE }>(&r.to_words()), r.to_bytes());
        let read = IoRequest::new(u64::MAX, u16::MAX, u16::MAX, Direction::Read, 8, u64::MAX - 1, 0);
        assert_eq!(word_bytes::<{ IoRequest::SIZE }>(&read.to_words()), read.to_bytes());
        assert_eq!(IoRequest::from_bytes(&word_bytes(&read.to_words())), read);
        for req in [r, read] {
            let b = req.to_bytes();
            let words: [u64; 4] = core::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()));
            assert_eq!(IoRequest::from_words(words), req, "from_words reads the slot's bytes");
        }
    }

    #[test]
    fn completion_from_words_reads_the_slot_bytes() {
        let c = IoCompletion { seq: 0xfedc_ba98_7654_3210, data: 0x1122_3344_5566_7788, status: IoStatus::Fault as u32, reserved: 0xdead_beef };
        let b = c.to_bytes();
        let words: [u64; 3] = core::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()));
        assert_eq!(IoCompletion::from_words(words), c);
        assert_eq!(c.to_words(), words, "to_words gives the slot's bytes");
    }

    #[test]
    fn ring_pops_in_push_order() {
        let mut ring: Ring<IoRequest, 8> = Ring::new();
        for seq in 1..=5 {
            ring.push(req(seq)).unwrap();
        }
        for seq in 1..=5 {
            assert_eq!(ring.pop(), Some(req(seq)));
        }
        assert_eq!(ring.pop(), None);
    }

    #[test]
    fn ring_is_full_at_capacity_and_empty_after_draining() {
        let mut ring: Ring<IoRequest, 4> = Ring::new();
        assert!(ring.is_empty() && !ring.is_full());
        for seq in 1..=4 {
            ring.push(req(seq)).unwrap();
        }
        assert!(ring.is_full());
        assert_eq!(ring.push(req(5)), Err(RingError::Full));
        assert_eq!(ring.pop(), Some(req(1)));
        ring.push(req(5)).unwrap();
        let drained: Vec<u64> = core::iter::from_fn(|| ring.pop()).map(|r| r.seq).collect();
        assert_eq!(drained, [2, 3, 4, 5]);
        assert!(ring.is_empty());
    }

    #[test]
    fn counters_wrap_past_u32_max_without_losing_order() {
        let mut ring: Ring<IoRequest, 4> = Ring::starting_at(u32::MAX - 5);
        let mut next_in = 1;
        let mut next_out = 1;
        // Drive the counters across the wrap several ring-lengths over,
        // filling the ring completely each round.
        for _ in 0..6 {
            while ring.push(req(next_in)).is_ok() {
                next_in += 1;
            }
            assert_eq!(ring.len(), 4);
            while let Some(r) = ring.pop() {
                assert_eq!(r.seq, next_out);
                next_out += 1;
            }
        }
        assert!(ring.indices().prod() < 100, "the producer counter wrapped");
        assert_eq!(next_in, next_out);
    }

    #[test]
    fn indices_name_slots_by_masking_and_count_across_the_wrap() {
        let idx = RingIndices::with_counters(8, 2, u32::MAX - 1).unwrap();
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.slot_of(u32::MAX), 7);
        assert_eq!(idx.slot_of(u32::MAX.wrapping_add(1)), 0);
        assert_eq!(idx.consumer_slot(), Some(6));
        assert_eq!(idx.producer_slot(), Some(2));
        assert!(RingIndices::with_counters(8, 6, u32::MAX - 1).unwrap().is_full());
    }

    #[test]
    fn hostile_producer_index_is_rejected_and_leaves_the_view_alone() {
        let mut consumer = RingIndices::with_counters(IO_RING_SLOTS, 10, 10).unwrap();
        // More entries than slots.
        assert_eq!(consumer.observe_prod(10 + IO_RING_SLOTS + 1), Err(RingError::Corrupt { prod: 75, cons: 10 }));
        // The producer moved behind the consumer.
        assert!(matches!(consumer.observe_prod(9), Err(RingError::Corrupt { .. })));
        assert!(matches!(consumer.observe_prod(u32::MAX), Err(RingError::Corrupt { .. })));
        assert_eq!(consumer, RingIndices::with_counters(IO_RING_SLOTS, 10, 10).unwrap());
        // Exactly full is fine.
        consumer.observe_prod(10 + IO_RING_SLOTS).unwrap();
        assert_eq!(consumer.len(), IO_RING_SLOTS);
        // Near the wrap too.
        let mut c = RingIndices::with_counters(4, u32::MAX, u32::MAX).unwrap();
        assert!(c.observe_prod(3).is_ok()); // 4 entries across the wrap
        assert!(c.observe_prod(4).is_err()); // 5
    }

    #[test]
    fn hostile_consumer_index_is_rejected() {
        let mut producer = RingIndices::with_counters(8, 100, 98).unwrap();
        assert!(matches!(producer.observe_cons(101), Err(RingError::Corrupt { .. })));
        assert!(matches!(producer.observe_cons(91), Err(RingError::Corrupt { .. })));
        producer.observe_cons(100).unwrap();
        assert!(producer.is_empty());
    }

    #[test]
    fn capacity_must_be_a_power_of_two() {
        assert_eq!(RingIndices::new(0), Err(RingError::BadCapacity(0)));
        assert_eq!(RingIndices::new(48), Err(RingError::BadCapacity(48)));
        assert!(RingIndices::new(1).is_ok());
        assert!(RingIndices::new(1 << 31).is_ok());
    }

    /// The hypervisor's model: many vCPUs push under one lock, one consumer.
    #[test]
    fn many_producers_behind_a_lock_deliver_every_request_once_in_order() {
        const SOURCES: u64 = 6;
        const EACH: u64 = 2000;
        let ring: Arc<Mutex<Ring<IoRequest, 8>>> = Arc::new(Mutex::new(Ring::new()));
        let producers: Vec<_> = (0..SOURCES)
            .map(|src| {
                let ring = Arc::clone(&ring);
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let r = IoRequest::new(src << 32 | (i + 1), 1, src as u16, Direction::Read, 8, i, 0);
                        while ring.lock().unwrap().push(r).is_err() {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut seen = HashSet::new();
        let mut last = [0u64; SOURCES as usize];
        while seen.len() < (SOURCES * EACH) as usize {
            let Some(r) = ring.lock().unwrap().pop() else {
                std::thread::yield_now();
                continue;
            };
            assert!(seen.insert(r.seq), "seq {:#x} popped twice", r.seq);
            let src = r.vcpu as usize;
            assert_eq!(r.seq & 0xFFFF_FFFF, last[src] + 1, "source {src} out of order");
            last[src] += 1;
        }
        for p in producers {
            p.join().unwrap();
        }
        assert!(ring.lock().unwrap().is_empty());
    }

    /// The protocol over real shared memory: two threads, atomics on a
    /// byte page, acquire/release exactly as `RingIndices` documents,
    /// counters starting near the wrap.
    #[test]
    fn spsc_protocol_over_a_shared_page_with_acquire_release() {
        const N: u64 = 20_000;
        struct Shared {
            prod: AtomicU32,
            cons: AtomicU32,
            slots: Vec<AtomicU8>, // IO_RING_SLOTS request slots, byte by byte
        }
        let start = u32::MAX - 100;
        let shared = Arc::new(Shared {
            prod: AtomicU32::new(start),
            cons: AtomicU32::new(start),
            slots: (0..IO_RING_SLOTS as usize * IoRequest::SIZE).map(|_| AtomicU8::new(0)).collect(),
        });
        let producer = {
            let sh = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut idx = RingIndices::with_counters(IO_RING_SLOTS, start, start).unwrap();
                let mut seq = 1;
                while seq <= N {
                    idx.observe_cons(sh.cons.load(Ordering::Acquire)).unwrap();
                    let Some(slot) = idx.producer_slot() else {
                        std::thread::yield_now();
                        continue;
                    };
                    let bytes = req(seq).to_bytes();
                    for (i, b) in bytes.iter().enumerate() {
                        sh.slots[slot * IoRequest::SIZE + i].store(*b, Ordering::Relaxed);
                    }
                    sh.prod.store(idx.produced(), Ordering::Release);
                    seq += 1;
                }
            })
        };
        let mut idx = RingIndices::with_counters(IO_RING_SLOTS, start, start).unwrap();
        let mut expect = 1;
        while expect <= N {
            idx.observe_prod(shared.prod.load(Ordering::Acquire)).unwrap();
            // Take everything available, then publish `cons` once.
            let mut took = false;
            while let Some(slot) = idx.consumer_slot() {
                let mut bytes = [0u8; IoRequest::SIZE];
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = shared.slots[slot * IoRequest::SIZE + i].load(Ordering::Relaxed);
                }
                let r = IoRequest::from_bytes(&bytes);
                assert_eq!(r, req(expect));
                assert_eq!(r.validate(), Ok(Direction::Write));
                expect += 1;
                idx.consumed();
                took = true;
            }
            if took {
                shared.cons.store(idx.cons(), Ordering::Release);
            } else {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
    }

    #[test]
    fn page_layout_matches_the_documented_offsets() {
        assert_eq!(size_of::<IoPage>(), 4096);
        assert_eq!((REQ_PROD_OFFSET, REQ_CONS_OFFSET), (0, 64));
        assert_eq!((CPL_PROD_OFFSET, CPL_CONS_OFFSET), (128, 192));
        assert_eq!((REQ_SLOTS_OFFSET, CPL_SLOTS_OFFSET), (0x100, 0x900));
        assert_eq!(request_slot_offset(63), 0x100 + 63 * 32);
        assert_eq!(completion_slot_offset(63) + IoCompletion::SIZE, 0x900 + 64 * 24);
        assert!(CPL_SLOTS_OFFSET + 64 * IoCompletion::SIZE <= offset_of!(IoPage, reserved));
        let page = IoPage::new();
        assert_eq!((page.req.cap, page.cpl.cap), (IO_RING_SLOTS, IO_RING_SLOTS));
        assert!(IO_RING_SLOTS.is_power_of_two());
    }

    #[test]
    fn slots_round_trip_through_their_byte_layout() {
        let r = IoRequest::new(0x1122_3344_5566_7788, 0x0102, 0x0304, Direction::Write, 2, 0x0A00_0010, 0xBEEF);
        let b = r.to_bytes();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!((b[8], b[10], b[12], b[13]), (0x02, 0x04, 2, 1));
        assert_eq!(IoRequest::from_bytes(&b), r);
        let c = IoCompletion::new(7, IoStatus::Fault, 0xAB);
        let cb = c.to_bytes();
        assert_eq!(cb[16], 1);
        assert_eq!(IoCompletion::from_bytes(&cb), c);
        assert_eq!(IoStatus::from_u32(0), IoStatus::Ok);
        assert_eq!(IoStatus::from_u32(99), IoStatus::Fault);
    }

    #[test]
    fn malformed_requests_are_named() {
        let ok = IoRequest::new(1, 1, 0, Direction::Read, 4, 0x0900_0000, 0);
        assert_eq!(ok.validate(), Ok(Direction::Read));
        assert_eq!(IoRequest { seq: 0, ..ok }.validate(), Err(BadRequest::ZeroSeq));
        assert_eq!(IoRequest { size: 3, ..ok }.validate(), Err(BadRequest::Size(3)));
        assert_eq!(IoRequest { dir: 2, ..ok }.validate(), Err(BadRequest::Direction(2)));
        assert_eq!(IoRequest { reserved: 1, ..ok }.validate(), Err(BadRequest::Reserved));
        assert_eq!(IoRequest { flags: 4, ..ok }.validate(), Err(BadRequest::Reserved));
        assert_eq!(IoRequest { flags: WAITING_ELSEWHERE, ..ok }.validate(), Ok(Direction::Read));
        assert!(IoRequest { flags: WAITING_ELSEWHERE, ..ok }.waiting_elsewhere() && !ok.waiting_elsewhere());
        let posted = IoRequest::posted(7, 1, 0, 4, 0x900_0000, 0x41);
        assert!(posted.is_posted() && !ok.is_posted());
        assert_eq!(posted.validate(), Ok(Direction::Write));
        assert_eq!(IoRequest::from_bytes(&posted.to_bytes()), posted);
        assert_eq!(IoRequest { dir: Direction::Read as u8, data: 0, ..posted }.validate(), Err(BadRequest::PostedRead));
        let w = IoRequest::new(1, 1, 0, Direction::Write, 1, 0, 0x100);
        assert_eq!(w.validate(), Err(BadRequest::DataTooWide));
        assert_eq!(IoRequest { size: 8, data: u64::MAX, ..w }.validate(), Ok(Direction::Write));
    }
}
