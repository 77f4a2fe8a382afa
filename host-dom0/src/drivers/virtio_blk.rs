//! The real disk: a virtio-blk device on one of the platform's virtio-mmio
//! transports (QEMU `virt` has 32 at 0x0a00_0000 + n * 0x200; most are empty,
//! DeviceID 0), driven by the `virtio-drivers` crate.
//!
//! - **Discovery**: [`init`] walks dom0's device tree for enabled
//!   `virtio,mmio` nodes, reads each one's magic, version and DeviceID, and
//!   takes the first block device (DeviceID 2). Legacy (version 1) and
//!   modern (version 2) transports both work; `virtio-drivers` handles the
//!   difference (queue PFN vs. split descriptor/driver/device addresses).
//! - **Mapping**: the window is outside `/memory`, so dom0's identity map
//!   (`crate::pagetable`) already maps it Device-nGnRE, execute-never; the
//!   hypervisor maps it at stage 2 IPA = PA with the other passed-through
//!   devices. Nothing to map here.
//! - **DMA**: dom0's memory is identity mapped (VA = IPA) and the hypervisor
//!   gives dom0 IPA = PA, so a buffer's virtual address is the address the
//!   device uses. Queues come from the heap as zeroed, page-aligned
//!   allocations; data buffers are the callers' own (`share` is the
//!   identity, checked to lie in dom0's RAM, `unshare` does nothing: virtio
//!   devices are cache coherent).
//! - **Requests**: dom0's own small request engine on `virtio-drivers`'
//!   split virtqueue (`VirtQueue`) and MMIO transport, rather than the
//!   crate's `VirtIOBlk`: that one waits for ever for a device that never
//!   answers and has no way to give up on a flush. Each request is boxed
//!   (header, a data buffer of its own, status byte) so its memory stays
//!   put while the device owns it.
//! - **Completion and timeouts**: a guest disk's batch of operations
//!   ([`Disk::execute`], from dom0's IO worker) is in flight on the device
//!   together, as far as the queue takes it; on the worker's CPU, where
//!   [`enable_interrupt`] routes the device's SPI, the wait for answers is
//!   a WFI the interrupt ends, elsewhere (the shell's own `disk` requests,
//!   a dom0 on one CPU) it spins. Every request waits at most the disk's
//!   timeout ([`DEFAULT_TIMEOUT_MS`], the shell's `disk timeout MS`
//!   changes it). A request that gets no answer in time fails
//!   ([`DiskError::Timeout`]); the device keeps its buffers (the request
//!   is *stranded*), and until it has answered every stranded request, the
//!   disk counts as stalled and new requests fail at once
//!   ([`DiskError::Stalled`]) rather than each waiting out a timeout.
//!   Each request, and [`take_notices`] from the shell between commands,
//!   first takes whatever the device has answered; once nothing is
//!   stranded the disk works again. Both changes are told once, as
//!   [`take_notices`] (the shell prints them; requests also run on the IO
//!   worker, which does not print).
//! - **Flush**: the driver accepts `VIRTIO_BLK_F_FLUSH` when the device
//!   offers it (QEMU does, for its default write-back cache), and
//!   [`Disk::flush`] then sends `VIRTIO_BLK_T_FLUSH` and waits for it. A device
//!   that does not offer it has no volatile write cache to flush (QEMU offers
//!   FLUSH exactly when its backend caches writes, e.g. not with
//!   `cache=writethrough`; Linux treats such a device as write-through too):
//!   `flush` then sends nothing, and [`Disk::flush_supported`] says so.
//!
//! [`disk`] is the API the rest of dom0 uses (through `super::disk`, which
//! falls back to the SD card, and runs the shell's `disk` command);
//! [`print_status`] is what `disk` says about this device.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use spin::{Mutex, Once};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::Transport;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hv_virtio::block::{BackendError, BlockOp, OpKind};

use crate::arch::aarch64::{cpu, gic, timer};

use crate::fdt_scan::{self, Tree};
use crate::println;

/// Bytes per sector: virtio-blk addresses the disk in 512-byte units whatever
/// its block size.
pub const SECTOR_SIZE: usize = 512;
/// Sectors in one request at most; longer reads and writes are split.
const MAX_REQUEST_SECTORS: u64 = 128;
/// virtio-mmio registers (virtio 1.2, 4.2.2).
const MAGIC: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const INTERRUPT_STATUS: usize = 0x060;
const INTERRUPT_ACK: usize = 0x064;
const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const DEVICE_ID_BLOCK: u32 = 2;
/// How long a request may wait for the device unless the shell says
/// otherwise (`disk timeout MS`).
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// The request queue and its size (each request takes two or three
/// descriptors; stranded requests keep theirs).
const QUEUE: u16 = 0;
const QUEUE_SIZE: usize = 32;
/// Request types and statuses (virtio 1.2, 5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const S_OK: u8 = 0;
const S_UNSUPP: u8 = 2;

bitflags::bitflags! {
    /// The features the driver accepts (virtio 1.2, 5.2.3 and 6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        /// `VIRTIO_BLK_F_RO`.
        const RO = 1 << 5;
        /// `VIRTIO_BLK_F_FLUSH`.
        const FLUSH = 1 << 9;
        /// `VIRTIO_F_VERSION_1`: must be accepted when offered.
        const VERSION_1 = 1 << 32;
    }
}
/// The header and config space the transport may touch.
const MIN_WINDOW: u64 = 0x200;
/// RAM regions remembered for the `share` check.
const MAX_RAM_REGIONS: usize = 16;

/// Why a disk request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskError {
    /// `sectors` sectors from `sector` reach past the last one (`capacity`
    /// sectors in all), or the sum overflows. Nothing was sent.
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    /// The buffer is empty or not a whole number of sectors. Nothing was sent.
    BadLength(usize),
    /// A write to a read-only disk (`VIRTIO_BLK_F_RO`). Nothing was sent.
    ReadOnly,
    /// The device answered `VIRTIO_BLK_S_IOERR`.
    Io,
    /// The device answered `VIRTIO_BLK_S_UNSUPP`.
    Unsupported,
    /// No memory for the request.
    NoMemory,
    /// The device did not answer within the disk's timeout (milliseconds);
    /// it still holds the request.
    Timeout { ms: u64 },
    /// The device has not yet answered a request that timed out: nothing
    /// was sent.
    Stalled,
    /// Any other failure the driver reported.
    Driver(virtio_drivers::Error),
}

impl From<virtio_drivers::Error> for DiskError {
    fn from(e: virtio_drivers::Error) -> Self {
        match e {
            virtio_drivers::Error::IoError => Self::Io,
            virtio_drivers::Error::Unsupported => Self::Unsupported,
            virtio_drivers::Error::DmaError => Self::NoMemory,
            other => Self::Driver(other),
        }
    }
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange {
                sector,
                sectors,
                capacity,
            } => write!(
                f,
                "{sectors} sector(s) from sector {sector} are beyond the end of the disk ({capacity} sectors)"
            ),
            Self::BadLength(n) => write!(
                f,
                "{n} bytes is not a whole, non-zero number of {SECTOR_SIZE}-byte sectors"
            ),
            Self::ReadOnly => f.write_str("the disk is read-only"),
            Self::Io => f.write_str("I/O error (reported by the device)"),
            Self::Unsupported => f.write_str("request not supported by the device"),
            Self::NoMemory => f.write_str("out of DMA memory"),
            Self::Timeout { ms } => write!(f, "no answer from the disk in {ms} ms"),
            Self::Stalled => f.write_str("the disk has not answered an earlier request yet"),
            Self::Driver(e) => write!(f, "virtio: {e}"),
        }
    }
}

/// One request as the device sees it: the header it reads, the data it
/// reads (a write) or fills (a read), and the status byte it writes. Boxed,
/// so that its buffers stay where the device was told they are.
struct Request {
    header: [u8; 16],
    data: Vec<u8>,
    status: [u8; 1],
    kind: u32,
}

impl Request {
    fn new(kind: u32, sector: u64, data: Vec<u8>) -> Box<Request> {
        let mut r = Box::new(Request { header: [0; 16], data: Vec::new(), status: [0xff], kind });
        r.set(kind, sector, data);
        r
    }

    /// Makes `self` (new, or a spare one) the request `kind` at `sector`
    /// with `data`, its status not yet written by the device.
    fn set(&mut self, kind: u32, sector: u64, data: Vec<u8>) {
        self.header = [0; 16];
        self.header[..4].copy_from_slice(&kind.to_le_bytes());
        self.header[8..].copy_from_slice(&sector.to_le_bytes());
        self.data = data;
        self.status = [0xff];
        self.kind = kind;
    }

    /// What the request is, for messages.
    fn describe(&self) -> String {
        let sector = u64::from_le_bytes(self.header[8..].try_into().unwrap_or_default());
        let sectors = self.data.len() / SECTOR_SIZE;
        match self.kind {
            T_IN => alloc::format!("read of {sectors} sector(s) at {sector}"),
            T_OUT => alloc::format!("write of {sectors} sector(s) at {sector}"),
            _ => String::from("flush"),
        }
    }
}

/// Adds `r` to `queue` (readable: header, write data; writable: read data,
/// status); returns its token.
///
/// # Safety
/// `r` must not be touched or freed until `pop` has taken it back.
unsafe fn push(queue: &mut VirtQueue<DmaHal, QUEUE_SIZE>, r: &mut Request) -> virtio_drivers::Result<u16> {
    let Request { header, data, status, kind } = r;
    // SAFETY: the caller keeps `r` alive and untouched until `pop`.
    unsafe {
        match *kind {
            T_IN => queue.add(&[header.as_slice()], &mut [data.as_mut_slice(), status.as_mut_slice()]),
            T_OUT => queue.add(&[header.as_slice(), data.as_slice()], &mut [status.as_mut_slice()]),
            _ => queue.add(&[header.as_slice()], &mut [status.as_mut_slice()]),
        }
    }
}

/// Takes `r`, which `push` added as `token`, back from the used ring
/// (it must be next there).
///
/// # Safety
/// `r` must be what `push` added when it returned `token`.
unsafe fn pop(queue: &mut VirtQueue<DmaHal, QUEUE_SIZE>, token: u16, r: &mut Request) -> virtio_drivers::Result<u32> {
    let Request { header, data, status, kind } = r;
    // SAFETY: the same buffers, in the same order, as `push` gave.
    unsafe {
        match *kind {
            T_IN => queue.pop_used(token, &[header.as_slice()], &mut [data.as_mut_slice(), status.as_mut_slice()]),
            T_OUT => queue.pop_used(token, &[header.as_slice(), data.as_slice()], &mut [status.as_mut_slice()]),
            _ => queue.pop_used(token, &[header.as_slice()], &mut [status.as_mut_slice()]),
        }
    }
}

/// Puts `r`'s buffer back into `op` (a read's data, or a write's).
fn give_back(op: &mut BlockOp, r: &mut Request) {
    match &mut op.kind {
        OpKind::Read { buf, .. } => *buf = core::mem::take(&mut r.data),
        OpKind::Write { data, .. } => *data = core::mem::take(&mut r.data),
        OpKind::Flush => {}
    }
}

/// Answered requests `Disk` keeps for reuse.
const SPARE_REQUESTS: usize = 8;

/// Since when the disk has been stalled, and what first went unanswered.
struct Stall {
    since: u64,
    what: String,
}

/// The disk: one virtio-blk device.
pub struct Disk {
    transport: MmioTransport<'static>,
    queue: VirtQueue<DmaHal, QUEUE_SIZE>,
    base: u64,
    capacity: u64,
    read_only: bool,
    flush: bool,
    version: MmioVersion,
    timeout_ms: u64,
    /// Requests that timed out, still the device's, with their tokens.
    stranded: Vec<(u16, Box<Request>)>,
    /// `execute`'s requests in flight (empty between calls; kept for its
    /// memory): (token, operation, when sent, request).
    flight: Vec<(u16, usize, u64, Box<Request>)>,
    /// Requests the device answered, for `execute` to use again (at most
    /// `SPARE_REQUESTS`): no allocation per request.
    spare: Vec<Box<Request>>,
    stall: Option<Stall>,
    /// Requests that timed out, and answers that came after that.
    timeouts: u64,
    late_answers: u64,
    /// What the shell should say (`take_notices`).
    notices: Vec<String>,
    /// The device's SPI (INTID, level-triggered) from the device tree, and
    /// the CPU it is enabled on (`enable_interrupt`): batches there wait
    /// for it instead of spinning.
    irq: Option<(u32, bool)>,
    irq_cpu: Option<usize>,
    /// Most requests a batch had in flight at once.
    in_flight_max: usize,
}

// SAFETY: `Disk` owns its transport's MMIO window outright (nothing else in
// dom0 touches it), its queue memory and its requests' buffers; all are
// identity mapped the same way on every CPU, so the disk may move between
// CPUs. Access is through `&mut Disk`, i.e. one CPU at a time (the `Mutex`
// in `DISK`).
unsafe impl Send for Disk {}

impl Disk {
    /// Size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity
    }

    /// The device refuses writes (`VIRTIO_BLK_F_RO`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// `VIRTIO_BLK_F_FLUSH` was negotiated: [`Disk::flush`] reaches the device.
    pub fn flush_supported(&self) -> bool {
        self.flush
    }

    /// Physical address of the virtio-mmio window.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The transport is virtio-mmio version 1 (legacy) rather than 2.
    pub fn legacy(&self) -> bool {
        self.version == MmioVersion::Legacy
    }

    /// How long a request waits for the device, in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    pub fn set_timeout_ms(&mut self, ms: u64) {
        self.timeout_ms = ms.max(1);
    }

    /// Requests that timed out and answers that came late, so far.
    pub fn fault_counts(&self) -> (u64, u64) {
        (self.timeouts, self.late_answers)
    }

    /// Whether the disk is stalled: since how many milliseconds, and what
    /// went unanswered first.
    pub fn stalled(&self) -> Option<(u64, &str)> {
        self.stall.as_ref().map(|s| (elapsed_ms(s.since), s.what.as_str()))
    }

    /// Reads `buf.len() / 512` sectors from `sector` into `buf`. Range and
    /// length are checked before anything is sent.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.check(sector, buf.len())?;
        let step = MAX_REQUEST_SECTORS as usize * SECTOR_SIZE;
        for (i, chunk) in buf.chunks_mut(step).enumerate() {
            let at = sector + (i as u64) * MAX_REQUEST_SECTORS;
            let r = self.run(Request::new(T_IN, at, vec![0; chunk.len()]))?;
            chunk.copy_from_slice(&r.data);
        }
        Ok(())
    }

    /// Writes `buf` (a whole number of sectors) from `sector` on. The data
    /// may sit in the device's write cache until [`Disk::flush`]. Requests
    /// go out 128 sectors at a time: after an error, earlier ones may have
    /// been written.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.check(sector, buf.len())?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let step = MAX_REQUEST_SECTORS as usize * SECTOR_SIZE;
        for (i, chunk) in buf.chunks(step).enumerate() {
            let at = sector + (i as u64) * MAX_REQUEST_SECTORS;
            self.run(Request::new(T_OUT, at, chunk.to_vec()))?;
        }
        Ok(())
    }

    /// Makes every completed write durable: `VIRTIO_BLK_T_FLUSH`, waited
    /// for. Without `VIRTIO_BLK_F_FLUSH` the device has no write cache and
    /// this does nothing.
    pub fn flush(&mut self) -> Result<(), DiskError> {
        if !self.flush {
            return Ok(());
        }
        self.run(Request::new(T_FLUSH, 0, Vec::new())).map(drop)
    }

    /// Sends `r` and waits for its answer, at most the timeout; gives it
    /// back answered.
    fn run(&mut self, mut r: Box<Request>) -> Result<Box<Request>, DiskError> {
        self.take_answers();
        if self.stall.is_some() {
            return Err(DiskError::Stalled);
        }
        // SAFETY: `r` is boxed and kept (here, or in `stranded`) untouched
        // until `pop` takes it back.
        let token = unsafe { push(&mut self.queue, &mut r) }?;
        if self.queue.should_notify() {
            self.transport.notify(QUEUE);
        }
        let ticks = cpu::counter_frequency().saturating_mul(self.timeout_ms) / 1000;
        let deadline = cpu::counter().saturating_add(ticks);
        loop {
            match self.queue.peek_used() {
                Some(t) if t == token => break,
                // Cannot be a stranded one (there are none): the device
                // answered something it was never given.
                Some(_) if !self.take_answers() => return Err(DiskError::Driver(virtio_drivers::Error::WrongToken)),
                Some(_) => {}
                None if cpu::counter() >= deadline => {
                    self.stall_on(r.describe());
                    self.stranded.push((token, r));
                    return Err(DiskError::Timeout { ms: self.timeout_ms });
                }
                None => core::hint::spin_loop(),
            }
        }
        // SAFETY: `token` is next in the used ring and `r` is what `push`
        // added for it.
        let popped = unsafe { pop(&mut self.queue, token, &mut r) };
        self.transport.ack_interrupt();
        popped?;
        match r.status[0] {
            S_OK => Ok(r),
            S_UNSUPP => Err(DiskError::Unsupported),
            _ => Err(DiskError::Io),
        }
    }

    /// Does a batch of independent operations (`hv_virtio::BlockOp`) with
    /// as many in flight on the device as its queue takes, each failing
    /// after the timeout like a single request. On the CPU the device's
    /// interrupt goes to (`enable_interrupt`), the wait for answers is a
    /// WFI that the interrupt (or the timeout's timer) ends; elsewhere it
    /// spins.
    pub fn execute(&mut self, ops: &mut [BlockOp]) {
        self.take_answers();
        let ticks = cpu::counter_frequency().saturating_mul(self.timeout_ms) / 1000;
        let mut flight = core::mem::take(&mut self.flight);
        let mut next = 0;
        loop {
            let mut sent = false;
            while next < ops.len() && self.stall.is_none() {
                let Some(mut r) = self.request_for(&mut ops[next]) else {
                    next += 1;
                    continue;
                };
                // SAFETY: `r` is boxed and kept (in `flight`, or in
                // `stranded`) untouched until `pop` takes it back.
                match unsafe { push(&mut self.queue, &mut r) } {
                    Ok(token) => {
                        flight.push((token, next, cpu::counter(), r));
                        next += 1;
                        sent = true;
                    }
                    Err(virtio_drivers::Error::QueueFull) if !flight.is_empty() => {
                        give_back(&mut ops[next], &mut r);
                        break;
                    }
                    Err(_) => {
                        give_back(&mut ops[next], &mut r);
                        ops[next].result = Err(BackendError);
                        next += 1;
                    }
                }
            }
            self.in_flight_max = self.in_flight_max.max(flight.len());
            if sent && self.queue.should_notify() {
                self.transport.notify(QUEUE);
            }
            // Take every answer there is.
            let mut answered = false;
            while let Some(t) = self.queue.peek_used() {
                if let Some(i) = flight.iter().position(|f| f.0 == t) {
                    let (token, op, _, mut r) = flight.swap_remove(i);
                    // SAFETY: `token` is next in the used ring, `r` is
                    // what `push` added for it.
                    let popped = unsafe { pop(&mut self.queue, token, &mut r) };
                    let ok = popped.is_ok() && r.status[0] == S_OK;
                    give_back(&mut ops[op], &mut r);
                    if self.spare.len() < SPARE_REQUESTS {
                        self.spare.push(r);
                    }
                    ops[op].result = if ok { Ok(()) } else { Err(BackendError) };
                    answered = true;
                } else if !self.take_answers() {
                    break;
                }
            }
            if flight.is_empty() && (next >= ops.len() || self.stall.is_some()) {
                break;
            }
            if answered || sent {
                continue;
            }
            let oldest = flight.iter().map(|f| f.2).min().unwrap_or_else(cpu::counter);
            let deadline = oldest.saturating_add(ticks);
            if cpu::counter() >= deadline {
                // The device keeps what it has: all of it is stranded, and
                // the disk is stalled until it answers.
                self.stall_on(flight.iter().map(|f| f.3.describe()).next().unwrap_or_default());
                for (token, op, _, r) in flight.drain(..) {
                    ops[op].result = Err(BackendError);
                    self.stranded.push((token, r));
                }
                break;
            }
            self.wait_for_answer(deadline);
        }
        self.flight = flight;
        // Not sent: the disk stalled first.
        for op in ops.iter_mut().skip(next) {
            op.result = Err(BackendError);
        }
        self.transport.ack_interrupt();
    }

    /// Waits until the used ring has something or `deadline` (a counter
    /// value) passes: with WFI where the device interrupts this CPU.
    fn wait_for_answer(&self, deadline: u64) {
        if self.irq_cpu == Some(cpu::index()) {
            let f = cpu::counter_frequency().max(1);
            let left = deadline.saturating_sub(cpu::counter());
            let micros = (u128::from(left) * 1_000_000 / u128::from(f)) as u64;
            timer::wait_micros(micros.max(1), || self.queue.can_pop());
        } else {
            core::hint::spin_loop();
        }
    }

    /// The request for `op`, its buffer moved into it; `None` (and the
    /// op's result set) if it needs no request or cannot be sent.
    fn request_for(&mut self, op: &mut BlockOp) -> Option<Box<Request>> {
        let (kind, sector, data) = match &mut op.kind {
            OpKind::Read { sector, buf } => (T_IN, *sector, buf),
            OpKind::Write { sector, data } => (T_OUT, *sector, data),
            OpKind::Flush if !self.flush => {
                op.result = Ok(());
                return None;
            }
            OpKind::Flush => return Some(Request::new(T_FLUSH, 0, Vec::new())),
        };
        let refused = self.check(sector, data.len()).is_err()
            || data.len() > MAX_REQUEST_SECTORS as usize * SECTOR_SIZE
            || (kind == T_OUT && self.read_only)
            || self.stall.is_some();
        if refused {
            op.result = Err(BackendError);
            return None;
        }
        let data = core::mem::take(data);
        Some(match self.spare.pop() {
            Some(mut r) => {
                r.set(kind, sector, data);
                r
            }
            None => Request::new(kind, sector, data),
        })
    }

    /// A request (`what`) got no answer in time: the disk is stalled from
    /// now until it has answered what it holds; said once.
    fn stall_on(&mut self, what: String) {
        self.timeouts += 1;
        self.notices.push(alloc::format!(
            "virtio-blk: a {what} got no answer in {} ms: requests fail with IO errors until the disk answers",
            self.timeout_ms
        ));
        self.stall = Some(Stall { since: cpu::counter(), what });
    }

    /// Takes back every stranded request the device has answered since;
    /// once none is left, the disk works again. Returns whether it took
    /// one (false: the used ring is empty or its next entry is not ours).
    fn take_answers(&mut self) -> bool {
        let mut took = false;
        while let Some(t) = self.queue.peek_used() {
            let Some(i) = self.stranded.iter().position(|(token, _)| *token == t) else { break };
            let (token, mut r) = self.stranded.swap_remove(i);
            // SAFETY: `token` is next in the used ring and `r` is what
            // `push` added for it (kept untouched since).
            let _ = unsafe { pop(&mut self.queue, token, &mut r) };
            self.transport.ack_interrupt();
            self.late_answers += 1;
            took = true;
        }
        if self.stranded.is_empty() {
            if let Some(stall) = self.stall.take() {
                self.notices.push(alloc::format!(
                    "virtio-blk: the disk answers again, {} ms after a {} went unanswered",
                    elapsed_ms(stall.since),
                    stall.what
                ));
            }
        }
        took
    }

    /// A request of `len` bytes from `sector` is whole sectors, non-empty and
    /// inside the disk.
    fn check(&self, sector: u64, len: usize) -> Result<(), DiskError> {
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(DiskError::BadLength(len));
        }
        let sectors = (len / SECTOR_SIZE) as u64;
        match sector.checked_add(sectors) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(DiskError::OutOfRange {
                sector,
                sectors,
                capacity: self.capacity,
            }),
        }
    }
}

static DISK: Once<Option<Mutex<Disk>>> = Once::new();
static RAM: Once<([(u64, u64); MAX_RAM_REGIONS], usize)> = Once::new();

/// The disk, if [`init`] found one. Requests spin until the device
/// answers or the disk's timeout passes.
pub fn disk() -> Option<&'static Mutex<Disk>> {
    DISK.get().and_then(Option::as_ref)
}

/// The disk's virtio-mmio window, for the interrupt handler.
static IRQ_BASE: AtomicUsize = AtomicUsize::new(0);
/// Device interrupts taken.
static IRQS: AtomicU64 = AtomicU64::new(0);

/// Routes the disk's interrupt to this CPU (the IO worker's) and lets the
/// device interrupt on used buffers: batches run here then wait with WFI
/// instead of spinning. Without an interrupt in the device tree, or a GIC
/// that takes it, the disk stays polled.
pub fn enable_interrupt() {
    let Some(d) = disk() else { return };
    let mut d = d.lock();
    let Some((intid, level)) = d.irq else {
        log::info!("virtio-blk: no interrupt in the device tree: polled");
        return;
    };
    IRQ_BASE.store(d.base as usize, Ordering::Release);
    if let Err(e) = gic::enable(intid, level, on_interrupt) {
        log::warn!("virtio-blk: interrupt {intid}: {e}: polled");
        return;
    }
    d.queue.set_dev_notify(true);
    d.irq_cpu = Some(cpu::index());
}

/// The disk's interrupt: acknowledged at the device (so its line drops and
/// the next used buffer raises it again); the waiting batch looks at the
/// used ring itself.
fn on_interrupt() {
    IRQS.fetch_add(1, Ordering::Relaxed);
    let base = IRQ_BASE.load(Ordering::Acquire);
    if base != 0 {
        // SAFETY: the disk's virtio-mmio window (mapped Device by the
        // identity map); reading InterruptStatus and writing it back to
        // InterruptACK only acknowledges the interrupt.
        unsafe {
            let status = hv_mmio::read32(base + INTERRUPT_STATUS);
            hv_mmio::write32(base + INTERRUPT_ACK, status);
        }
    }
}

/// What the disk has to say since the last call (a stall, its end), for
/// the shell to print. Takes the disk's lock only if it is free.
pub fn take_notices() -> Vec<String> {
    let Some(d) = disk() else { return Vec::new() };
    let daif = cpu::save_and_mask_irqs();
    let notes = d.try_lock().map(|mut d| {
        if d.stall.is_some() {
            d.take_answers();
        }
        core::mem::take(&mut d.notices)
    });
    cpu::restore_irqs(daif);
    notes.unwrap_or_default()
}

fn elapsed_ms(since: u64) -> u64 {
    let f = cpu::counter_frequency().max(1);
    (u128::from(cpu::counter().saturating_sub(since)) * 1000 / u128::from(f)) as u64
}

/// Finds the first virtio-blk device among the tree's `virtio,mmio` nodes
/// and initialises it. Called once, on the boot CPU, after the heap and the
/// console; later calls do nothing.
pub fn init(blob: &[u8]) {
    RAM.call_once(|| {
        let mut ram = [(0, 0); MAX_RAM_REGIONS];
        let mut n = 0;
        fdt_scan::for_each_memory(blob, |base, size| {
            if n < MAX_RAM_REGIONS {
                ram[n] = (base, size);
                n += 1;
            }
        });
        (ram, n)
    });
    DISK.call_once(|| probe(blob).map(Mutex::new));
}

fn probe(blob: &[u8]) -> Option<Disk> {
    let tree = Tree::new(blob);
    let mut slots = 0;
    for dev in tree.devices() {
        if !tree.is_compatible(&dev.path, "virtio,mmio") {
            continue;
        }
        slots += 1;
        let Some(base) = dev.base.filter(|_| dev.size >= MIN_WINDOW) else {
            log::warn!("virtio-blk: {}: unusable reg", dev.path);
            continue;
        };
        let addr = base as usize;
        // SAFETY: a virtio-mmio header the device tree describes (at least
        // 0x200 bytes), passed through to dom0 and mapped Device-nGnRE by
        // the identity map; these reads have no side effects.
        let (magic, version, id) = unsafe {
            (
                hv_mmio::read32(addr + MAGIC),
                hv_mmio::read32(addr + VERSION),
                hv_mmio::read32(addr + DEVICE_ID),
            )
        };
        if magic != MAGIC_VALUE || id != DEVICE_ID_BLOCK {
            continue;
        }
        let Some(header) = NonNull::new(addr as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: as above; the window is dom0's alone and stays mapped for
        // ever. No other `MmioTransport` is made for it: `init` runs once
        // and stops at the first block device.
        let transport = match unsafe { MmioTransport::new(header, dev.size as usize) } {
            Ok(t) => t,
            Err(e) => {
                log::warn!("virtio-blk: {} (version {version}): {e}", dev.path);
                continue;
            }
        };
        return match start(transport, base, spi(&tree, &dev.path)) {
            Ok(disk) => {
                log::info!(
                    "virtio-blk: {} ({}), {} sectors ({} MiB), {}, flush {}; polled",
                    dev.path,
                    transport_name(&disk),
                    disk.capacity,
                    disk.capacity / 2048,
                    if disk.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    if disk.flush {
                        "supported"
                    } else {
                        "not offered"
                    },
                );
                Some(disk)
            }
            Err(e) => {
                log::warn!("virtio-blk: {}: initialisation failed: {e}", dev.path);
                None
            }
        };
    }
    if slots > 0 {
        log::debug!("virtio-blk: no block device on {slots} virtio-mmio transport(s)");
    }
    None
}

/// The device's interrupt from the device tree (`interrupts`, three GIC
/// cells: SPI, number, flags): its INTID and whether it is level-triggered.
fn spi(tree: &Tree, path: &str) -> Option<(u32, bool)> {
    let cells = tree.property(path, "interrupts")?;
    let cell = |i: usize| Some(u32::from_be_bytes(cells.get(i * 4..i * 4 + 4)?.try_into().ok()?));
    // Type 0 is an SPI (the GIC binding); flags 4 and 8 are level.
    (cell(0)? == 0).then_some(())?;
    Some((32 + cell(1)?, cell(2)? & 0xc != 0))
}

fn start(mut transport: MmioTransport<'static>, base: u64, irq: Option<(u32, bool)>) -> Result<Disk, DiskError> {
    let version = transport.version();
    let features = transport.begin_init(Features::all());
    let capacity = transport.read_consistent(|| {
        let low: u32 = transport.read_config_space(0)?;
        let high: u32 = transport.read_config_space(4)?;
        Ok(u64::from(low) | u64::from(high) << 32)
    })?;
    let mut queue = VirtQueue::<DmaHal, QUEUE_SIZE>::new(&mut transport, QUEUE, false, false)?;
    // Polled: the device need not interrupt.
    queue.set_dev_notify(false);
    transport.finish_init();
    Ok(Disk {
        capacity,
        read_only: features.contains(Features::RO),
        flush: features.contains(Features::FLUSH),
        base,
        version,
        transport,
        queue,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        stranded: Vec::new(),
        flight: Vec::new(),
        spare: Vec::new(),
        stall: None,
        timeouts: 0,
        late_answers: 0,
        notices: Vec::new(),
        irq,
        irq_cpu: None,
        in_flight_max: 0,
    })
}

fn transport_name(disk: &Disk) -> &'static str {
    if disk.legacy() {
        "legacy virtio-mmio v1"
    } else {
        "virtio-mmio v2"
    }
}

/// `virtio-drivers`' view of dom0's memory: identity mapped, coherent.
pub struct DmaHal;

fn dma_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

fn in_ram(start: u64, len: u64) -> bool {
    let Some(&(ram, n)) = RAM.get() else {
        return false;
    };
    let end = start.saturating_add(len);
    ram[..n]
        .iter()
        .any(|&(base, size)| base <= start && end <= base.saturating_add(size))
}

// SAFETY: `dma_alloc` returns fresh, zeroed, page-aligned heap memory (so
// valid and unaliased until `dma_dealloc`) whose physical address is its
// virtual one (dom0's identity map over IPA = PA RAM); `mmio_phys_to_virt`
// is the identity, which the identity map makes valid for any device window.
unsafe impl Hal for DmaHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages).filter(|l| l.size() > 0) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        match NonNull::new(p) {
            Some(p) => (p.as_ptr() as PhysAddr, p),
            // `Dma::new` takes physical address 0 as failure.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Some(layout) = dma_layout(pages) else {
            return -1;
        };
        // SAFETY: the caller passes what `dma_alloc` returned for `pages`,
        // allocated with this same layout.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("virtio: MMIO at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let va = buffer.cast::<u8>().as_ptr() as u64;
        // Identity only holds for dom0's own RAM; anything else would send
        // the device to the wrong memory.
        assert!(
            in_ram(va, buffer.len() as u64),
            "virtio: DMA buffer at {va:#x} ({} bytes) is not in dom0's identity-mapped RAM",
            buffer.len()
        );
        va
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

// ---- the shell's `disk` command ---------------------------------------------

/// What the shell's `disk` prints about this disk.
pub fn print_status(disk: &Disk) {
    let c = disk.capacity_sectors();
    let completion = match disk.irq_cpu {
        Some(c) => alloc::format!(
            "interrupt-driven on cpu{c} ({} interrupts taken), up to {} requests in flight so far",
            IRQS.load(Ordering::Relaxed),
            disk.in_flight_max
        ),
        None => String::from("polled"),
    };
    println!("disk: virtio-blk at {:#x} ({}), {completion}, requests time out after {} ms", disk.base(), transport_name(disk), disk.timeout_ms());
    let (timeouts, late) = disk.fault_counts();
    if timeouts > 0 {
        println!("disk: {timeouts} request(s) timed out, {late} answered late");
    }
    if let Some((ms, what)) = disk.stalled() {
        println!("disk: STALLED for {ms} ms (a {what} is unanswered): requests fail at once");
    }
    println!("disk: capacity {c} sectors of {SECTOR_SIZE} bytes ({} MiB)", c / 2048);
    println!("disk: {}", if disk.read_only() { "read-only" } else { "read-write" });
    println!(
        "disk: flush {}",
        if disk.flush_supported() { "supported (VIRTIO_BLK_F_FLUSH)" } else { "not offered (write-through device)" }
    );
}
