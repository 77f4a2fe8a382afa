//! A minimal virtio-mmio *driver* for tests: negotiates features, lays out
//! split queues in a [`VecMemory`] and submits chains the way Linux's
//! virtio_mmio and virtio_ring do.

use alloc::vec::Vec;

use crate::device::{Device, VIRTIO_F_VERSION_1};
use crate::memory::{GuestMemory, VecMemory};
use crate::mmio::{reg, status, MmioDevice, Outcome};
use crate::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};

/// Guest RAM base (QEMU virt's) and size.
pub const BASE: u64 = 0x4000_0000;
pub const RAM: usize = 0x20_0000;
/// Each queue's rings live in a 32 KiB slot from BASE.
const QUEUE_SLOT: u64 = 0x8000;
/// Buffers are allocated from here on.
const HEAP: u64 = BASE + 0x4_0000;

pub fn memory() -> VecMemory {
    VecMemory::new(BASE, RAM)
}

/// A buffer of a chain being submitted.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

pub fn r(addr: u64, len: u32) -> Buf {
    Buf { addr, len, writable: false }
}

pub fn w(addr: u64, len: u32) -> Buf {
    Buf { addr, len, writable: true }
}

/// The driver's view of one queue.
#[derive(Clone, Debug)]
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    pub avail_idx: u16,
    used_seen: u16,
}

pub struct Driver {
    pub queues: Vec<DriverQueue>,
    heap: u64,
}

/// A 32-bit register write whose outcome does not matter.
pub fn wr<D: Device>(dev: &mut MmioDevice<D>, mem: &mut dyn GuestMemory, offset: u64, value: u32) {
    let _ = wr_out(dev, mem, offset, value);
}

/// A 32-bit register write.
pub fn wr_out<D: Device>(dev: &mut MmioDevice<D>, mem: &mut dyn GuestMemory, offset: u64, value: u32) -> Outcome {
    dev.write(mem, offset, 4, u64::from(value)).expect("32-bit register write")
}

pub fn rd<D: Device>(dev: &MmioDevice<D>, offset: u64) -> u32 {
    dev.read(offset, 4).expect("32-bit register read") as u32
}

impl Driver {
    /// Brings the device up like Linux: reset, ACKNOWLEDGE, DRIVER, read
    /// the features, accept `offered & wanted` plus VERSION_1, FEATURES_OK
    /// (checked), set up every queue with `min(QueueNumMax, queue_size)`
    /// entries, DRIVER_OK.
    pub fn probe<D: Device>(
        dev: &mut MmioDevice<D>,
        mem: &mut dyn GuestMemory,
        wanted: u64,
        queue_size: u16,
    ) -> Driver {
        let mut drv = Driver::negotiate(dev, mem, wanted);
        let mut index = 0u32;
        loop {
            wr(dev, mem, reg::QUEUE_SEL, index);
            let max = rd(dev, reg::QUEUE_NUM_MAX);
            if max == 0 {
                break;
            }
            assert_eq!(rd(dev, reg::QUEUE_READY), 0);
            let size = max.min(u32::from(queue_size)) as u16;
            let slot = BASE + QUEUE_SLOT * u64::from(index);
            let q = DriverQueue {
                size,
                desc: slot,
                avail: slot + 0x2000,
                used: slot + 0x4000,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            wr(dev, mem, reg::QUEUE_NUM, u32::from(size));
            for (low, addr) in
                [(reg::QUEUE_DESC_LOW, q.desc), (reg::QUEUE_DRIVER_LOW, q.avail), (reg::QUEUE_DEVICE_LOW, q.used)]
            {
                wr(dev, mem, low, addr as u32);
                wr(dev, mem, low + 4, (addr >> 32) as u32);
            }
            wr(dev, mem, reg::QUEUE_READY, 1);
            assert_eq!(rd(dev, reg::QUEUE_READY), 1, "queue {index} ready");
            drv.queues.push(q);
            index += 1;
        }
        let s = rd(dev, reg::STATUS);
        wr(dev, mem, reg::STATUS, s | status::DRIVER_OK);
        assert!(dev.live());
        drv
    }

    /// Up to and including FEATURES_OK, no queues.
    pub fn negotiate<D: Device>(dev: &mut MmioDevice<D>, mem: &mut dyn GuestMemory, wanted: u64) -> Driver {
        assert_eq!(rd(dev, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(rd(dev, reg::VERSION), 2);
        wr(dev, mem, reg::STATUS, 0);
        wr(dev, mem, reg::STATUS, status::ACKNOWLEDGE);
        wr(dev, mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let offered = read_features(dev, mem);
        let accept = offered & (wanted | VIRTIO_F_VERSION_1);
        write_features(dev, mem, accept);
        wr(dev, mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        assert_ne!(rd(dev, reg::STATUS) & status::FEATURES_OK, 0, "FEATURES_OK accepted");
        Driver { queues: Vec::new(), heap: HEAP }
    }

    /// Allocates `len` bytes of guest RAM for buffers (16-byte aligned).
    pub fn alloc(&mut self, len: usize) -> u64 {
        let at = self.heap;
        self.heap = (self.heap + len as u64 + 15) & !15;
        assert!(self.heap <= BASE + RAM as u64, "test heap exhausted");
        at
    }

    /// Allocates a buffer holding `data`.
    pub fn buffer(&mut self, mem: &mut dyn GuestMemory, data: &[u8]) -> u64 {
        let at = self.alloc(data.len());
        mem.write(at, data).unwrap();
        at
    }

    /// Writes a chain into free descriptors and makes it available;
    /// returns its head.
    pub fn submit(&mut self, mem: &mut dyn GuestMemory, q: usize, bufs: &[Buf]) -> u16 {
        let dq = &mut self.queues[q];
        let head = dq.next_desc;
        let n = bufs.len() as u16;
        for (i, b) in bufs.iter().enumerate() {
            let index = (head + i as u16) % dq.size;
            let next = (index + 1) % dq.size;
            let mut flags = if b.writable { VIRTQ_DESC_F_WRITE } else { 0 };
            if (i as u16) + 1 < n {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            write_desc(mem, dq.desc, index, b.addr, b.len, flags, next);
        }
        dq.next_desc = (head + n) % dq.size;
        dq.offer(mem, head);
        head
    }

    /// Rings the doorbell of queue `q`.
    pub fn notify<D: Device>(&self, dev: &mut MmioDevice<D>, mem: &mut dyn GuestMemory, q: usize) -> Outcome {
        wr_out(dev, mem, reg::QUEUE_NOTIFY, q as u32)
    }

    /// Used elements `(id, len)` published since the last call.
    pub fn used(&mut self, mem: &dyn GuestMemory, q: usize) -> Vec<(u32, u32)> {
        let dq = &mut self.queues[q];
        let idx = mem.read_u16(dq.used + 2).unwrap();
        let mut out = Vec::new();
        while dq.used_seen != idx {
            let slot = u64::from(dq.used_seen % dq.size);
            let mut e = [0u8; 8];
            mem.read(dq.used + 4 + 8 * slot, &mut e).unwrap();
            out.push((
                u32::from_le_bytes(e[0..4].try_into().unwrap()),
                u32::from_le_bytes(e[4..8].try_into().unwrap()),
            ));
            dq.used_seen = dq.used_seen.wrapping_add(1);
        }
        out
    }
}

impl DriverQueue {
    /// Puts `head` in the available ring and bumps `avail.idx`.
    pub fn offer(&mut self, mem: &mut dyn GuestMemory, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_u16(self.avail + 4 + 2 * slot, head).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_u16(self.avail + 2, self.avail_idx).unwrap();
    }
}

pub fn write_desc(mem: &mut dyn GuestMemory, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write(table + 16 * u64::from(index), &raw).unwrap();
}

pub fn read_features<D: Device>(dev: &mut MmioDevice<D>, mem: &mut dyn GuestMemory) -> u64 {
    wr(dev, mem, reg::DEVICE_FEATURES_SEL, 0);
    let low = rd(dev, reg::DEVICE_FEATURES);
    wr(dev, mem, reg::DEVICE_FEATURES_SEL, 1);
    let high = rd(dev, reg::DEVICE_FEATURES);
    u64::from(low) | (u64::from(high) << 32)
}

pub fn write_features<D: Device>(dev: &mut MmioDevice<D>, mem: &mut dyn GuestMemory, features: u64) {
    wr(dev, mem, reg::DRIVER_FEATURES_SEL, 0);
    wr(dev, mem, reg::DRIVER_FEATURES, features as u32);
    wr(dev, mem, reg::DRIVER_FEATURES_SEL, 1);
    wr(dev, mem, reg::DRIVER_FEATURES, (features >> 32) as u32);
}

/// Reads `len` bytes of guest memory.
pub fn peek(mem: &dyn GuestMemory, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = alloc::vec![0; len];
    mem.read(gpa, &mut v).unwrap();
    v
}
