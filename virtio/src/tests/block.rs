//! virtio-blk requests end to end.

use alloc::vec;
use alloc::vec::Vec;

use crate::block::*;
use crate::mmio::MmioDevice;
use crate::testutil::*;
use crate::VecMemory;

const SECTORS: usize = 1024;

struct Disk {
    dev: MmioDevice<Block<MemDisk>>,
    mem: VecMemory,
    drv: Driver,
}

/// What the driver sees of a finished request.
#[derive(Debug, PartialEq, Eq)]
struct Done {
    status: u8,
    used_len: u32,
    data: Vec<u8>,
}

fn header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    h
}

impl Disk {
    fn new(block: Block<MemDisk>) -> Disk {
        let mut mem = memory();
        let mut dev = MmioDevice::new(block);
        let drv = Driver::probe(&mut dev, &mut mem, VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_RO, 128);
        Disk { dev, mem, drv }
    }

    fn rw() -> Disk {
        Disk::new(Block::new(MemDisk::new(SECTORS), false))
    }

    /// Submits header + `out` (in 4 KiB pieces) + `in_len` writable bytes
    /// (in 4 KiB pieces) + status, notifies, and collects the answer.
    fn request(&mut self, kind: u32, sector: u64, out: &[u8], in_len: usize) -> Done {
        let h = self.drv.buffer(&mut self.mem, &header(kind, sector));
        let mut bufs = vec![r(h, 16)];
        for piece in out.chunks(4096) {
            let at = self.drv.buffer(&mut self.mem, piece);
            bufs.push(r(at, piece.len() as u32));
        }
        let data = self.drv.alloc(in_len);
        let mut off = 0;
        while off < in_len {
            let n = (in_len - off).min(4096);
            bufs.push(w(data + off as u64, n as u32));
            off += n;
        }
        let s = self.drv.buffer(&mut self.mem, &[0xFF]);
        bufs.push(w(s, 1));
        self.submit_and_collect(&bufs, s, data, in_len)
    }

    fn submit_and_collect(&mut self, bufs: &[Buf], status_at: u64, data: u64, in_len: usize) -> Done {
        let head = self.drv.submit(&mut self.mem, 0, bufs);
        let out = self.drv.notify(&mut self.dev, &mut self.mem, 0);
        assert!(out.interrupt);
        assert!(!self.dev.needs_reset());
        let used = self.drv.used(&self.mem, 0);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].0, u32::from(head));
        Done { status: peek(&self.mem, status_at, 1)[0], used_len: used[0].1, data: peek(&self.mem, data, in_len) }
    }

    fn disk(&self) -> &MemDisk {
        self.dev.device().backend()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[test]
fn write_flush_read_back_returns_the_pattern() {
    let mut d = Disk::rw();
    // 100 KiB: several bounce-buffer rounds and 25 data descriptors.
    let data = pattern(100 * 1024, 7);
    let done = d.request(VIRTIO_BLK_T_OUT, 7, &data, 0);
    assert_eq!((done.status, done.used_len), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(&d.disk().bytes()[7 * 512..7 * 512 + data.len()], &data[..]);
    assert!(d.disk().bytes()[..7 * 512].iter().all(|&b| b == 0));

    let done = d.request(VIRTIO_BLK_T_FLUSH, 0, &[], 0);
    assert_eq!(done.status, VIRTIO_BLK_S_OK);
    assert_eq!(d.disk().flushes(), 1);

    let done = d.request(VIRTIO_BLK_T_IN, 7, &[], data.len());
    assert_eq!(done.status, VIRTIO_BLK_S_OK);
    assert_eq!(done.used_len as usize, data.len() + 1);
    assert_eq!(done.data, data);
    // A read straddling the pattern's start.
    let done = d.request(VIRTIO_BLK_T_IN, 6, &[], 1024);
    assert_eq!(done.data[..512], [0; 512]);
    assert_eq!(done.data[512..], data[..512]);
}

#[test]
fn data_in_one_descriptor_with_header_and_status_also_works() {
    // Framing is by bytes (§2.6.4): header and data in one readable
    // descriptor, data and status in one writable one.
    let mut d = Disk::rw();
    let mut req = header(VIRTIO_BLK_T_OUT, 3).to_vec();
    req.extend_from_slice(&[0x5A; 512]);
    let at = d.drv.buffer(&mut d.mem, &req);
    let s = d.drv.buffer(&mut d.mem, &[0xFF]);
    let done = d.submit_and_collect(&[r(at, 528), w(s, 1)], s, s, 0);
    assert_eq!(done.status, VIRTIO_BLK_S_OK);
    assert_eq!(d.disk().bytes()[3 * 512..4 * 512], [0x5A; 512]);

    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_IN, 3));
    let data_and_status = d.drv.alloc(513);
    let done = d.submit_and_collect(&[r(h, 16), w(data_and_status, 513)], data_and_status + 512, data_and_status, 512);
    assert_eq!(done.status, VIRTIO_BLK_S_OK);
    assert_eq!(done.data, [0x5A; 512]);
    assert_eq!(done.used_len, 513);
}

#[test]
fn read_only_disk_offers_ro_and_fails_writes_without_writing() {
    let mut d = Disk::new(Block::new(MemDisk::from_bytes(vec![0x11; 4096]), true));
    assert_ne!(d.dev.driver_features() & VIRTIO_BLK_F_RO, 0);
    let done = d.request(VIRTIO_BLK_T_OUT, 0, &[0x22; 512], 0);
    assert_eq!(done.status, VIRTIO_BLK_S_IOERR);
    assert!(d.disk().bytes().iter().all(|&b| b == 0x11));
    let done = d.request(VIRTIO_BLK_T_IN, 0, &[], 512);
    assert_eq!(done.status, VIRTIO_BLK_S_OK);
    assert_eq!(done.data, [0x11; 512]);
    assert_eq!(d.dev.device().stats().io_errors, 1);
}

#[test]
fn writable_disk_does_not_offer_ro() {
    let d = Disk::rw();
    assert_eq!(d.dev.device_features() & VIRTIO_BLK_F_RO, 0);
    assert_ne!(d.dev.device_features() & VIRTIO_BLK_F_FLUSH, 0);
}

#[test]
fn requests_beyond_the_end_fail_and_never_wrap() {
    let mut d = Disk::rw();
    let last = SECTORS as u64 - 1;
    assert_eq!(d.request(VIRTIO_BLK_T_IN, last, &[], 512).status, VIRTIO_BLK_S_OK);
    assert_eq!(d.request(VIRTIO_BLK_T_IN, last, &[], 1024).status, VIRTIO_BLK_S_IOERR);
    assert_eq!(d.request(VIRTIO_BLK_T_OUT, SECTORS as u64, &[1; 512], 0).status, VIRTIO_BLK_S_IOERR);
    // sector + count overflows u64: must not wrap to sector 0.
    assert_eq!(d.request(VIRTIO_BLK_T_OUT, u64::MAX, &[1; 1024], 0).status, VIRTIO_BLK_S_IOERR);
    assert_eq!(d.request(VIRTIO_BLK_T_IN, u64::MAX - 1, &[], 1024).status, VIRTIO_BLK_S_IOERR);
    assert!(d.disk().bytes().iter().all(|&b| b == 0));
    // A zero-length read at the very end is in range.
    assert_eq!(d.request(VIRTIO_BLK_T_IN, SECTORS as u64, &[], 0).status, VIRTIO_BLK_S_OK);
}

#[test]
fn data_length_not_a_multiple_of_512_fails() {
    let mut d = Disk::rw();
    assert_eq!(d.request(VIRTIO_BLK_T_OUT, 0, &[1; 100], 0).status, VIRTIO_BLK_S_IOERR);
    assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, &[], 513).status, VIRTIO_BLK_S_IOERR);
    assert!(d.disk().bytes().iter().all(|&b| b == 0));
}

#[test]
fn get_id_returns_the_nul_padded_serial() {
    let mut d = Disk::new(Block::new(MemDisk::new(8), false).with_serial(b"hv-disk-0"));
    let done = d.request(VIRTIO_BLK_T_GET_ID, 0, &[], ID_BYTES);
    assert_eq!(done.status, VIRTIO_BLK_S_OK);
    assert_eq!(done.used_len, ID_BYTES as u32 + 1);
    let mut expect = [0u8; ID_BYTES];
    expect[..9].copy_from_slice(b"hv-disk-0");
    assert_eq!(done.data, expect);
    // A serial longer than 20 bytes is cut.
    let mut d = Disk::new(Block::new(MemDisk::new(8), false).with_serial(&[b'x'; 40]));
    assert_eq!(d.request(VIRTIO_BLK_T_GET_ID, 0, &[], ID_BYTES).data, [b'x'; ID_BYTES]);
}

#[test]
fn unsupported_request_types_answer_unsupp() {
    let mut d = Disk::rw();
    for kind in [2, 10, 11, 13, 14, 0xDEAD_BEEF] {
        let done = d.request(kind, 0, &[], 0);
        assert_eq!((done.status, done.used_len), (VIRTIO_BLK_S_UNSUPP, 1), "type {kind}");
    }
    assert_eq!(d.dev.device().stats().unsupported, 6);
}

#[test]
fn short_header_fails() {
    let mut d = Disk::rw();
    let h = d.drv.buffer(&mut d.mem, &[0; 8]);
    let s = d.drv.buffer(&mut d.mem, &[0xFF]);
    assert_eq!(d.submit_and_collect(&[r(h, 8), w(s, 1)], s, s, 0).status, VIRTIO_BLK_S_IOERR);
}

#[test]
fn data_buffer_outside_ram_fails_the_request_only() {
    let mut d = Disk::rw();
    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_OUT, 0));
    let s = d.drv.buffer(&mut d.mem, &[0xFF]);
    let outside = BASE + RAM as u64 - 256; // straddles the end of RAM
    let done = d.submit_and_collect(&[r(h, 16), r(outside, 512), w(s, 1)], s, s, 0);
    assert_eq!(done.status, VIRTIO_BLK_S_IOERR);
    assert!(d.disk().bytes().iter().all(|&b| b == 0));
    // Reading into RAM that is not there.
    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_IN, 0));
    let done = d.submit_and_collect(&[r(h, 16), w(0x1000, 512), w(s, 1)], s, s, 0);
    assert_eq!(done.status, VIRTIO_BLK_S_IOERR);
    assert!(d.dev.live());
}

#[test]
fn huge_descriptor_lengths_fail_without_touching_memory() {
    let mut d = Disk::rw();
    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_IN, 0));
    let data = d.drv.alloc(16);
    let s = d.drv.buffer(&mut d.mem, &[0xFF]);
    let before = d.mem.clone();
    let done = d.submit_and_collect(&[r(h, 16), w(data, u32::MAX), w(data, u32::MAX), w(s, 1)], s, s, 0);
    assert_eq!(done.status, VIRTIO_BLK_S_IOERR);
    // Outside the queue's rings (which the driver and device both wrote),
    // only the status byte changed.
    let changed: Vec<usize> = (0x8000..RAM).filter(|&i| before.bytes()[i] != d.mem.bytes()[i]).collect();
    assert_eq!(changed, [(s - BASE) as usize]);
}

#[test]
fn request_over_the_size_limit_fails() {
    let mut d = Disk::new(Block::new(MemDisk::new(20_000), false));
    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_IN, 0));
    let data = d.drv.alloc(16);
    let s = d.drv.buffer(&mut d.mem, &[0xFF]);
    // MAX_DATA + 512 bytes in two descriptors (within the disk's capacity).
    let half = ((MAX_DATA + 512) / 2) as u32;
    let done = d.submit_and_collect(&[r(h, 16), w(data, half), w(data, half), w(s, 1)], s, s, 0);
    assert_eq!(done.status, VIRTIO_BLK_S_IOERR);
}

#[test]
fn misordered_chain_fails() {
    let mut d = Disk::rw();
    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_OUT, 0));
    let data = d.drv.buffer(&mut d.mem, &[1; 512]);
    let s = d.drv.buffer(&mut d.mem, &[0xFF]);
    // status (writable) before the data (readable).
    let done = d.submit_and_collect(&[r(h, 16), w(s, 1), r(data, 512)], s, s, 0);
    assert_eq!(done.status, VIRTIO_BLK_S_IOERR);
    assert!(d.disk().bytes().iter().all(|&b| b == 0));
}

#[test]
fn chain_without_a_writable_byte_is_returned_unanswered() {
    let mut d = Disk::rw();
    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_OUT, 0));
    let data = d.drv.buffer(&mut d.mem, &[1; 512]);
    let done = d.submit_and_collect(&[r(h, 16), r(data, 512)], data, data, 0);
    assert_eq!(done.used_len, 0);
    assert!(d.disk().bytes().iter().all(|&b| b == 0));
    assert_eq!(d.dev.device().stats().unanswerable, 1);
}

#[test]
fn status_byte_outside_ram_is_returned_unanswered() {
    let mut d = Disk::rw();
    let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_FLUSH, 0));
    let head = d.drv.submit(&mut d.mem, 0, &[r(h, 16), w(u64::MAX, 1)]);
    assert!(d.drv.notify(&mut d.dev, &mut d.mem, 0).interrupt);
    assert_eq!(d.drv.used(&d.mem, 0), [(u32::from(head), 0)]);
    assert!(d.dev.live());
    assert_eq!(d.dev.device().stats().unanswerable, 1);
}

struct BrokenDisk;

impl BlockBackend for BrokenDisk {
    fn capacity_sectors(&self) -> u64 {
        64
    }
    fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), BackendError> {
        Err(BackendError)
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), BackendError> {
        Err(BackendError)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        Err(BackendError)
    }
}

#[test]
fn backend_failures_answer_ioerr() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Block::new(BrokenDisk, false));
    let mut drv = Driver::probe(&mut dev, &mut mem, VIRTIO_BLK_F_FLUSH, 8);
    for (kind, writable) in [(VIRTIO_BLK_T_IN, true), (VIRTIO_BLK_T_OUT, false), (VIRTIO_BLK_T_FLUSH, false)] {
        let h = drv.buffer(&mut mem, &header(kind, 0));
        let data = drv.alloc(512);
        let s = drv.buffer(&mut mem, &[0xFF]);
        let data_buf = if writable { w(data, 512) } else { r(data, 512) };
        let bufs = if kind == VIRTIO_BLK_T_FLUSH { vec![r(h, 16), w(s, 1)] } else { vec![r(h, 16), data_buf, w(s, 1)] };
        drv.submit(&mut mem, 0, &bufs);
        let _ = drv.notify(&mut dev, &mut mem, 0);
        assert_eq!(peek(&mem, s, 1)[0], VIRTIO_BLK_S_IOERR, "type {kind}");
    }
}

#[test]
fn config_space_reports_capacity_and_limits() {
    let d = Disk::new(Block::new(MemDisk::new(0x1_2345), false));
    assert_eq!(d.dev.read(0x100, 4), Ok(0x1_2345));
    assert_eq!(d.dev.read(0x104, 4), Ok(0));
    assert_eq!(d.dev.read(0x100, 1), Ok(0x45));
    assert_eq!(d.dev.read(0x108, 4), Ok(u64::from(SIZE_MAX)));
    assert_eq!(d.dev.read(0x10C, 4), Ok(u64::from(SEG_MAX)));
    assert_eq!(d.dev.read(0x114, 4), Ok(512));
    // seg_max data descriptors plus header and status fit the queue.
    assert!(SEG_MAX as u16 + 2 <= QUEUE_SIZE);
}

#[test]
fn several_requests_in_one_notify_are_all_answered() {
    let mut d = Disk::rw();
    let mut statuses = Vec::new();
    for i in 0..10u64 {
        let h = d.drv.buffer(&mut d.mem, &header(VIRTIO_BLK_T_OUT, i));
        let data = d.drv.buffer(&mut d.mem, &[i as u8; 512]);
        let s = d.drv.buffer(&mut d.mem, &[0xFF]);
        d.drv.submit(&mut d.mem, 0, &[r(h, 16), r(data, 512), w(s, 1)]);
        statuses.push(s);
    }
    assert!(d.drv.notify(&mut d.dev, &mut d.mem, 0).interrupt);
    assert_eq!(d.drv.used(&d.mem, 0).len(), 10);
    for (i, s) in statuses.into_iter().enumerate() {
        assert_eq!(peek(&d.mem, s, 1)[0], VIRTIO_BLK_S_OK);
        assert_eq!(d.disk().bytes()[i * 512], i as u8);
    }
}

/// A backend that never refuses: sectors past its capacity wrap around, so
/// only the device's own range check protects the disk's start.
struct WrappingDisk {
    data: Vec<u8>,
    calls: usize,
}

impl WrappingDisk {
    fn at(&self, sector: u64) -> usize {
        (sector as usize % (self.data.len() / 512)) * 512
    }
}

impl BlockBackend for WrappingDisk {
    fn capacity_sectors(&self) -> u64 {
        (self.data.len() / 512) as u64
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.calls += 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.data[(self.at(sector) + i) % self.data.len()];
        }
        Ok(())
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        self.calls += 1;
        let at = self.at(sector);
        let len = self.data.len();
        for (i, b) in data.iter().enumerate() {
            self.data[(at + i) % len] = *b;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[test]
fn backend_is_never_asked_for_sectors_beyond_capacity() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Block::new(WrappingDisk { data: vec![0; 8 * 512], calls: 0 }, false));
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    for (kind, sector, len) in
        [(VIRTIO_BLK_T_OUT, 7, 1024), (VIRTIO_BLK_T_OUT, 8, 512), (VIRTIO_BLK_T_IN, u64::MAX, 512)]
    {
        let h = drv.buffer(&mut mem, &header(kind, sector));
        let data = drv.buffer(&mut mem, &vec![0xEE; len]);
        let s = drv.buffer(&mut mem, &[0xFF]);
        let data_buf = if kind == VIRTIO_BLK_T_IN { w(data, len as u32) } else { r(data, len as u32) };
        drv.submit(&mut mem, 0, &[r(h, 16), data_buf, w(s, 1)]);
        let _ = drv.notify(&mut dev, &mut mem, 0);
        assert_eq!(peek(&mem, s, 1)[0], VIRTIO_BLK_S_IOERR, "type {kind} sector {sector}");
    }
    assert_eq!(dev.device().backend().calls, 0);
    assert!(dev.device().backend().data.iter().all(|&b| b == 0));
}

/// A disk that records the batches it is given (kind letters, sectors).
struct BatchDisk {
    disk: MemDisk,
    batches: Vec<Vec<(char, u64)>>,
}

impl BlockBackend for BatchDisk {
    fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.disk.read(sector, buf)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        self.disk.write(sector, data)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        self.disk.flush()
    }
    fn execute(&mut self, ops: &mut [BlockOp]) {
        self.batches.push(
            ops.iter()
                .map(|op| match &op.kind {
                    OpKind::Read { sector, .. } => ('r', *sector),
                    OpKind::Write { sector, .. } => ('w', *sector),
                    OpKind::Flush => ('f', 0),
                })
                .collect(),
        );
        // Finish them last to first: the device may complete in any order.
        for op in ops.iter_mut().rev() {
            op.result = match &mut op.kind {
                OpKind::Read { sector, buf } => self.disk.read(*sector, buf),
                OpKind::Write { sector, data } => self.disk.write(*sector, data),
                OpKind::Flush => self.disk.flush(),
            };
        }
    }
}

#[test]
fn requests_of_one_notification_go_to_the_backend_together_and_a_flush_alone() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Block::new(BatchDisk { disk: MemDisk::new(SECTORS), batches: Vec::new() }, false));
    let mut drv = Driver::probe(&mut dev, &mut mem, VIRTIO_BLK_F_FLUSH, 128);
    // Two writes, a flush, a 64 KiB write (two operations), a read of the first.
    let mut statuses = Vec::new();
    let mut post = |drv: &mut Driver, mem: &mut VecMemory, kind: u32, sector: u64, data: &[u8], in_len: u32| {
        let h = drv.buffer(mem, &header(kind, sector));
        let mut bufs = vec![r(h, 16)];
        if !data.is_empty() {
            let d = drv.buffer(mem, data);
            bufs.push(r(d, data.len() as u32));
        }
        let rd = drv.alloc(in_len as usize);
        if in_len > 0 {
            bufs.push(w(rd, in_len));
        }
        let s = drv.buffer(mem, &[0xFF]);
        bufs.push(w(s, 1));
        drv.submit(mem, 0, &bufs);
        statuses.push((s, rd));
    };
    post(&mut drv, &mut mem, VIRTIO_BLK_T_OUT, 1, &[0x11; 512], 0);
    post(&mut drv, &mut mem, VIRTIO_BLK_T_OUT, 2, &[0x22; 512], 0);
    post(&mut drv, &mut mem, VIRTIO_BLK_T_FLUSH, 0, &[], 0);
    post(&mut drv, &mut mem, VIRTIO_BLK_T_OUT, 100, &vec![0x33; 64 * 1024], 0);
    post(&mut drv, &mut mem, VIRTIO_BLK_T_IN, 1, &[], 1024);
    let out = drv.notify(&mut dev, &mut mem, 0);
    assert!(out.interrupt);
    assert_eq!(drv.used(&mem, 0).len(), 5, "all five answered");
    for &(s, _) in &statuses {
        assert_eq!(peek(&mem, s, 1)[0], VIRTIO_BLK_S_OK);
    }
    assert_eq!(
        dev.device().backend().batches,
        vec![vec![('w', 1), ('w', 2)], vec![('f', 0)], vec![('w', 100), ('w', 164), ('r', 1)]],
        "the writes before the flush together, the flush alone, then the rest together"
    );
    let read = peek(&mem, statuses[4].1, 1024);
    assert!(read[..512].iter().all(|&b| b == 0x11) && read[512..].iter().all(|&b| b == 0x22));
}

/// A `MemDisk` whose reads from sector `bad` on fail.
struct FailsFrom {
    disk: MemDisk,
    bad: u64,
}

impl BlockBackend for FailsFrom {
    fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        if sector >= self.bad {
            return Err(BackendError);
        }
        self.disk.read(sector, buf)
    }
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        self.disk.write(sector, data)
    }
    fn flush(&mut self) -> Result<(), BackendError> {
        self.disk.flush()
    }
}

#[test]
fn a_failed_read_after_others_leaves_the_guest_buffer_untouched() {
    // Data buffers are reused between requests: what an earlier request
    // read or wrote must never reach the guest through a failed one.
    let mut mem = memory();
    let disk = MemDisk::from_bytes(pattern(64 * 512, 3));
    let mut dev = MmioDevice::new(Block::new(FailsFrom { disk, bad: 32 }, false));
    let mut drv = Driver::probe(&mut dev, &mut mem, VIRTIO_BLK_F_FLUSH, 8);
    let mut read = |mem: &mut VecMemory, dev: &mut MmioDevice<Block<FailsFrom>>, sector: u64| {
        let h = drv.buffer(mem, &header(VIRTIO_BLK_T_IN, sector));
        let data = drv.buffer(mem, &[0xA5; 4096]);
        let s = drv.buffer(mem, &[0xFF]);
        drv.submit(mem, 0, &[r(h, 16), w(data, 4096), w(s, 1)]);
        let _ = drv.notify(dev, mem, 0);
        (peek(mem, s, 1)[0], peek(mem, data, 4096))
    };
    let (status, data) = read(&mut mem, &mut dev, 8);
    assert_eq!(status, VIRTIO_BLK_S_OK);
    assert_eq!(data, pattern(64 * 512, 3)[8 * 512..16 * 512]);
    let (status, data) = read(&mut mem, &mut dev, 32);
    assert_eq!(status, VIRTIO_BLK_S_IOERR);
    assert!(data.iter().all(|&b| b == 0xA5), "the failed read wrote into the guest's buffer");
    let (status, data) = read(&mut mem, &mut dev, 0);
    assert_eq!(status, VIRTIO_BLK_S_OK);
    assert_eq!(data, pattern(64 * 512, 3)[..8 * 512]);
}
