//! virtio block device (device ID 2, virtio 1.x §5.2), one request queue.
//!
//! A request (§5.2.6) is a chain whose readable part starts with the
//! 16-byte header `{ le32 type; le32 reserved; le64 sector; }` and whose
//! writable part ends with one status byte; the data lies between (after
//! the header for writes, before the status for reads). Following §2.6.4
//! the device treats the two parts as byte streams and assumes no split
//! into descriptors.
//!
//! Every request that has a writable byte gets a status: `OK`, `IOERR`
//! (read-only disk, out of range, data length not a multiple of 512 bytes,
//! over [`MAX_DATA`], misordered chain, a buffer outside guest RAM, a
//! backend failure) or `UNSUPP` (unknown type). A chain with no writable
//! byte cannot be answered; it is returned with used length 0 and counted.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::{copy_config, Device, Served, DEVICE_ID_BLOCK};
use crate::memory::GuestMemory;
use crate::queue::{Chain, Queue, QueueError};

/// Feature: `size_max` bounds each data buffer.
pub const VIRTIO_BLK_F_SIZE_MAX: u64 = 1 << 1;
/// Feature: `seg_max` bounds the data buffers per request.
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// Feature: the device is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: the device takes `VIRTIO_BLK_T_FLUSH`.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Request type: read sectors.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Request type: write sectors.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Request type: make written data durable.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request type: read the device's 20-byte ID string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: the request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: the request type is not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Sector size of the `sector` field and of `capacity` (always 512 in
/// virtio, whatever the disk's block size).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the ID string (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
/// `QueueNumMax` of the request queue.
pub const QUEUE_SIZE: u16 = 128;
/// `seg_max`: data buffers per request, so that header + data + status fit
/// the queue without indirect descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// `size_max`: bytes per data buffer.
pub const SIZE_MAX: u32 = 64 * 1024;
/// Data bytes per request at most (what `seg_max` × `size_max` allows a
/// driver); larger requests fail with `IOERR`.
pub const MAX_DATA: u64 = SEG_MAX as u64 * SIZE_MAX as u64;

const HEADER_LEN: u64 = 16;
/// Bytes moved between guest and backend per operation: a request's data
/// is cut into operations of at most this.
const OP_LEN: usize = 32 * 1024;
const _: () = assert!((OP_LEN as u64).is_multiple_of(SECTOR_SIZE));
/// Data bytes of the operations handed to the backend at once (the
/// buffers of one batch are in memory together).
const BATCH_BYTES: usize = 256 * 1024;
/// Data buffers kept from one batch for the next, in bytes at most: a
/// request's buffer is then neither allocated nor zeroed again (the
/// backend fills a read's, the guest's data a write's, before either is
/// used). Small, as every disk keeps its own.
const SPARE_BYTES: usize = 16 * 1024;

/// A backend could not do what was asked (the guest gets `IOERR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendError;

/// Storage behind a block device: `capacity_sectors()` sectors of 512
/// bytes. Dom0 implements it on a slice of a real disk. The device only
/// calls `read` and `write` with whole sectors inside the capacity.
pub trait BlockBackend {
    /// Size in 512-byte sectors.
    fn capacity_sectors(&self) -> u64;
    /// Fills `buf` (a multiple of 512 bytes) from `sector` on.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Writes `data` (a multiple of 512 bytes) from `sector` on.
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError>;
    /// Makes completed writes durable.
    fn flush(&mut self) -> Result<(), BackendError>;
    /// Does every operation of `ops` and sets its `result`. They are
    /// independent: the backend may have them all in flight at once and
    /// finish them in any order (a virtio driver that needs an order waits
    /// for one request's completion before it sends the next; a flush is
    /// only ever in a batch of its own). The default does them one by one
    /// with `read`, `write` and `flush`.
    fn execute(&mut self, ops: &mut [BlockOp]) {
        for op in ops.iter_mut() {
            op.result = match &mut op.kind {
                OpKind::Read { sector, buf } => self.read(*sector, buf),
                OpKind::Write { sector, data } => self.write(*sector, data),
                OpKind::Flush => self.flush(),
            };
        }
    }
}

/// One operation of a batch ([`BlockBackend::execute`]): what to do, and
/// once done, how it went.
#[derive(Debug)]
pub struct BlockOp {
    pub kind: OpKind,
    pub result: Result<(), BackendError>,
}

/// What a [`BlockOp`] does; sectors are the backend's.
#[derive(Debug)]
pub enum OpKind {
    /// Fill `buf` (whole sectors) from `sector` on.
    Read { sector: u64, buf: Vec<u8> },
    /// Write `data` (whole sectors) from `sector` on.
    Write { sector: u64, data: Vec<u8> },
    /// Make completed writes durable.
    Flush,
}

impl BlockOp {
    pub fn new(kind: OpKind) -> Self {
        BlockOp { kind, result: Err(BackendError) }
    }
}

/// A disk in a `Vec`, for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemDisk {
    data: Vec<u8>,
    flushes: u64,
}

impl MemDisk {
    /// `sectors` zeroed sectors.
    pub fn new(sectors: usize) -> Self {
        MemDisk { data: vec![0; sectors.saturating_mul(SECTOR_SIZE as usize)], flushes: 0 }
    }

    /// A disk holding `data` (its length rounded down to whole sectors).
    pub fn from_bytes(mut data: Vec<u8>) -> Self {
        data.truncate(data.len() - data.len() % SECTOR_SIZE as usize);
        MemDisk { data, flushes: 0 }
    }

    /// The disk's contents.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// How many times it was flushed.
    pub fn flushes(&self) -> u64 {
        self.flushes
    }

    fn range(&self, sector: u64, len: usize) -> Result<core::ops::Range<usize>, BackendError> {
        let start = sector.checked_mul(SECTOR_SIZE).and_then(|s| usize::try_from(s).ok()).ok_or(BackendError)?;
        let end = start.checked_add(len).ok_or(BackendError)?;
        if end > self.data.len() {
            return Err(BackendError);
        }
        Ok(start..end)
    }
}

impl BlockBackend for MemDisk {
    fn capacity_sectors(&self) -> u64 {
        self.data.len() as u64 / SECTOR_SIZE
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let range = self.range(sector, buf.len())?;
        buf.copy_from_slice(self.data.get(range).ok_or(BackendError)?);
        Ok(())
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        let range = self.range(sector, data.len())?;
        self.data.get_mut(range).ok_or(BackendError)?.copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        self.flushes = self.flushes.saturating_add(1);
        Ok(())
    }
}

/// Counters of the block device's answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests taken from the queue.
    pub requests: u64,
    /// Answered `IOERR`.
    pub io_errors: u64,
    /// Answered `UNSUPP`.
    pub unsupported: u64,
    /// Returned without a status (no writable byte, or the status byte not
    /// in guest RAM).
    pub unanswerable: u64,
}

/// The block device type over a [`BlockBackend`].
#[derive(Debug)]
pub struct Block<B> {
    backend: B,
    read_only: bool,
    serial: [u8; ID_BYTES],
    stats: BlockStats,
    /// Data buffers of earlier operations, for the next ones (at most
    /// [`SPARE_BYTES`] together). What they hold is stale and never read:
    /// a buffer is overwritten whole before an operation uses it.
    spare: Vec<Vec<u8>>,
    /// Scratch vectors kept between notifications (their memory, not their
    /// contents: both are empty between calls), so that a request costs no
    /// allocation for them.
    jobs: Vec<Job>,
    batch: Batch,
}

/// The operations handed to the backend together, and for each, its job
/// and the offset of its piece in the request's data.
#[derive(Debug, Default)]
struct Batch {
    places: Vec<(usize, u64)>,
    ops: Vec<BlockOp>,
}

impl Batch {
    fn push(&mut self, job: usize, off: u64, op: BlockOp) {
        self.places.push((job, off));
        self.ops.push(op);
    }

    fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A request taken from the queue, parsed; done in a batch with the other
/// requests of its turn, then answered.
#[derive(Debug)]
struct Job {
    chain: Chain,
    /// Offset of the status byte in the chain's writable part.
    status_at: u64,
    work: Work,
    /// An operation of it failed.
    failed: bool,
}

/// What a [`Job`] asks of the backend.
#[derive(Debug)]
enum Work {
    /// Answered without it: the status and the data bytes written (GET_ID,
    /// or a request refused).
    Done(u8, u64),
    In { sector: u64, len: u64 },
    Out { sector: u64, len: u64 },
    Flush,
    /// No writable byte for a status: returned with used length 0.
    Unanswerable,
}

/// Why a request failed (answered `IOERR`).
struct IoError;

impl<B: BlockBackend> Block<B> {
    /// A block device over `backend`; `read_only` offers
    /// `VIRTIO_BLK_F_RO` and fails writes.
    pub fn new(backend: B, read_only: bool) -> Self {
        Block { backend, read_only, serial: [0; ID_BYTES], stats: BlockStats::default(), spare: Vec::new(), jobs: Vec::new(), batch: Batch::default() }
    }

    /// Sets the ID string `GET_ID` returns (NUL-padded, cut at 20 bytes).
    pub fn with_serial(mut self, serial: &[u8]) -> Self {
        self.serial = [0; ID_BYTES];
        let n = serial.len().min(ID_BYTES);
        if let (Some(dst), Some(src)) = (self.serial.get_mut(..n), serial.get(..n)) {
            dst.copy_from_slice(src);
        }
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutable (after changing its capacity, call
    /// `MmioDevice::config_changed`).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The counters.
    pub fn stats(&self) -> &BlockStats {
        &self.stats
    }

    /// Parses one request; what needs no backend is done at once.
    fn parse(&mut self, mem: &mut dyn GuestMemory, chain: Chain) -> Job {
        let Some(status_at) = chain.writable_len().checked_sub(1) else {
            return Job { chain, status_at: 0, work: Work::Unanswerable, failed: false };
        };
        let work = self.classify(mem, &chain, status_at).unwrap_or_else(|status| Work::Done(status, 0));
        Job { chain, status_at, work, failed: false }
    }

    /// What a request whose writable part has `data_in` bytes before the
    /// status byte asks for, or the status that refuses it.
    fn classify(&mut self, mem: &mut dyn GuestMemory, chain: &Chain, data_in: u64) -> Result<Work, u8> {
        const IOERR: u8 = VIRTIO_BLK_S_IOERR;
        chain.check(HEADER_LEN + MAX_DATA + 1).map_err(|_| IOERR)?;
        let mut header = [0u8; HEADER_LEN as usize];
        chain.read_at(mem, 0, &mut header).map_err(|_| IOERR)?;
        let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        match u32::from_le_bytes([t0, t1, t2, t3]) {
            VIRTIO_BLK_T_IN => {
                self.check_range(sector, data_in).map_err(|_| IOERR)?;
                Ok(Work::In { sector, len: data_in })
            }
            VIRTIO_BLK_T_OUT => {
                // §5.2.6.2: a read-only device fails writes and writes nothing.
                if self.read_only {
                    return Err(IOERR);
                }
                let data_out = chain.readable_len().saturating_sub(HEADER_LEN);
                self.check_range(sector, data_out).map_err(|_| IOERR)?;
                Ok(Work::Out { sector, len: data_out })
            }
            VIRTIO_BLK_T_FLUSH => Ok(Work::Flush),
            VIRTIO_BLK_T_GET_ID => {
                let n = usize::try_from(data_in).unwrap_or(usize::MAX).min(ID_BYTES);
                let id = self.serial.get(..n).ok_or(IOERR)?;
                chain.write_at(mem, 0, id).map_err(|_| IOERR)?;
                Ok(Work::Done(VIRTIO_BLK_S_OK, n as u64))
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    /// `len` bytes from `sector` are whole sectors inside the disk (the end
    /// computed without wrapping).
    fn check_range(&self, sector: u64, len: u64) -> Result<(), IoError> {
        if !len.is_multiple_of(SECTOR_SIZE) || len > MAX_DATA {
            return Err(IoError);
        }
        match sector.checked_add(len / SECTOR_SIZE) {
            Some(end) if end <= self.backend.capacity_sectors() => Ok(()),
            _ => Err(IoError),
        }
    }

    /// Does the jobs' disk work: their data cut into operations of at most
    /// `OP_LEN`, handed to the backend in batches of at most `BATCH_BYTES`
    /// (a flush alone, after everything before it), read data put into the
    /// guest's buffers as each batch ends.
    fn run(&mut self, mem: &mut dyn GuestMemory, jobs: &mut [Job]) {
        let mut batch = core::mem::take(&mut self.batch);
        let mut bytes = 0usize;
        for j in 0..jobs.len() {
            let (sector, len, write) = match jobs[j].work {
                Work::In { sector, len } => (sector, len, false),
                Work::Out { sector, len } => (sector, len, true),
                Work::Flush => {
                    self.execute(mem, jobs, &mut batch);
                    batch.push(j, 0, BlockOp::new(OpKind::Flush));
                    self.execute(mem, jobs, &mut batch);
                    bytes = 0;
                    continue;
                }
                Work::Done(..) | Work::Unanswerable => continue,
            };
            let mut off = 0u64;
            while off < len {
                let n = (len - off).min(OP_LEN as u64) as usize;
                if bytes + n > BATCH_BYTES && !batch.is_empty() {
                    self.execute(mem, jobs, &mut batch);
                    bytes = 0;
                }
                let at = sector.saturating_add(off / SECTOR_SIZE);
                let kind = if write {
                    let mut data = self.buffer(n);
                    if jobs[j].chain.read_at(mem, HEADER_LEN.saturating_add(off), &mut data).is_err() {
                        jobs[j].failed = true;
                        break;
                    }
                    OpKind::Write { sector: at, data }
                } else {
                    OpKind::Read { sector: at, buf: self.buffer(n) }
                };
                batch.push(j, off, BlockOp::new(kind));
                bytes += n;
                off += n as u64;
            }
        }
        self.execute(mem, jobs, &mut batch);
        self.batch = batch;
    }

    /// A data buffer of `n` bytes whose contents are whatever they are: a
    /// spare one of that size, else a new one.
    fn buffer(&mut self, n: usize) -> Vec<u8> {
        match self.spare.iter().position(|b| b.len() == n) {
            Some(i) => self.spare.swap_remove(i),
            None => vec![0; n],
        }
    }

    /// Keeps `buf` for a later operation if there is room among the spares.
    fn keep(&mut self, buf: Vec<u8>) {
        let kept: usize = self.spare.iter().map(Vec::len).sum();
        if !buf.is_empty() && kept + buf.len() <= SPARE_BYTES {
            self.spare.push(buf);
        }
    }

    /// Hands `batch` to the backend, then records failures and copies read
    /// data to the guest; empties `batch`.
    fn execute(&mut self, mem: &mut dyn GuestMemory, jobs: &mut [Job], batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        self.backend.execute(&mut batch.ops);
        for ((j, off), op) in batch.places.drain(..).zip(batch.ops.drain(..)) {
            let Some(job) = jobs.get_mut(j) else { continue };
            match (&op.result, &op.kind) {
                (Err(_), _) => job.failed = true,
                (Ok(()), OpKind::Read { buf, .. }) => {
                    if job.chain.write_at(mem, off, buf).is_err() {
                        job.failed = true;
                    }
                }
                (Ok(()), _) => {}
            }
            match op.kind {
                OpKind::Read { buf, .. } => self.keep(buf),
                OpKind::Write { data, .. } => self.keep(data),
                OpKind::Flush => {}
            }
        }
    }

    /// Writes the job's status and returns the used length (bytes written
    /// to the guest, status included).
    fn finish(&mut self, mem: &mut dyn GuestMemory, job: &Job) -> u32 {
        self.stats.requests = self.stats.requests.saturating_add(1);
        let (status, data_written) = match job.work {
            Work::Unanswerable => {
                self.stats.unanswerable = self.stats.unanswerable.saturating_add(1);
                return 0;
            }
            Work::Done(status, written) => (status, written),
            _ if job.failed => (VIRTIO_BLK_S_IOERR, 0),
            Work::In { len, .. } => (VIRTIO_BLK_S_OK, len),
            Work::Out { .. } | Work::Flush => (VIRTIO_BLK_S_OK, 0),
        };
        match status {
            VIRTIO_BLK_S_IOERR => self.stats.io_errors = self.stats.io_errors.saturating_add(1),
            VIRTIO_BLK_S_UNSUPP => self.stats.unsupported = self.stats.unsupported.saturating_add(1),
            _ => {}
        }
        if job.chain.write_at(mem, job.status_at, &[status]).is_err() {
            self.stats.unanswerable = self.stats.unanswerable.saturating_add(1);
            return 0;
        }
        // data_written <= MAX_DATA, far below u32::MAX.
        u32::try_from(data_written.saturating_add(1)).unwrap_or(u32::MAX)
    }
}

impl<B: BlockBackend> Device for Block<B> {
    fn device_id(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_FLUSH | ro
    }

    fn queue_count(&self) -> usize {
        1
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    /// The start of `struct virtio_blk_config` (§5.2.4): `le64 capacity;
    /// le32 size_max; le32 seg_max; geometry (0); le32 blk_size; topology
    /// (0); u8 writeback; u8 unused; le16 num_queues`.
    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let mut cfg = [0u8; 36];
        cfg[0..8].copy_from_slice(&self.backend.capacity_sectors().to_le_bytes());
        cfg[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        cfg[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        cfg[34..36].copy_from_slice(&1u16.to_le_bytes());
        copy_config(&cfg, offset, data);
    }

    fn reset(&mut self) {}

    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        budget: usize,
    ) -> Result<Served, QueueError> {
        let mut served = Served::default();
        if index != 0 {
            return Ok(served);
        }
        // Take up to `budget` requests, do their disk work together (the
        // backend may have it all in flight at once), then answer them.
        let mut jobs = core::mem::take(&mut self.jobs);
        let result = self.take_and_serve(queue, mem, budget, &mut jobs, &mut served);
        jobs.clear();
        self.jobs = jobs;
        result.map(|()| served)
    }
}

impl<B: BlockBackend> Block<B> {
    /// `process`'s work, into `jobs` (empty on entry).
    fn take_and_serve(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        budget: usize,
        jobs: &mut Vec<Job>,
        served: &mut Served,
    ) -> Result<(), QueueError> {
        // One read of `avail.idx` a turn: requests offered after it come
        // with their own notification, and so another turn.
        let offered = usize::from(queue.offered(mem)?);
        while jobs.len() < budget {
            let Some(chain) = queue.take(mem)? else { break };
            jobs.push(self.parse(mem, chain));
        }
        served.more = offered > budget;
        self.run(mem, jobs);
        for job in jobs.iter() {
            let used = self.finish(mem, job);
            queue.push_used(mem, job.chain.head(), used)?;
            served.completed = served.completed.saturating_add(1);
        }
        Ok(())
    }
}
