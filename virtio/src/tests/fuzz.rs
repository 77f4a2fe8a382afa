//! Randomised hostile guests: random register accesses, random guest
//! memory (rings and descriptors included), notifications, input. Nothing
//! may panic, and no device write may land outside guest RAM.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::block::{Block, MemDisk};
use crate::console::Console;
use crate::device::Device;
use crate::memory::{GuestMemory, MemError, VecMemory};
use crate::mmio::{reg, MmioDevice, INTERRUPT_CONFIG_CHANGE};
use crate::net::Net;
use crate::queue::{VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::testutil::*;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// Guest memory that checks, independently of `VecMemory`, that every
/// write it accepts is inside RAM and every one it refuses is not.
struct Watched {
    inner: VecMemory,
    accepted: u64,
    refused: u64,
}

impl Watched {
    fn inside(&self, gpa: u64, len: usize) -> bool {
        let (start, end) = (u128::from(gpa), u128::from(gpa) + len as u128);
        let base = u128::from(self.inner.base());
        start >= base && end <= base + self.inner.bytes().len() as u128
    }
}

impl GuestMemory for Watched {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.inner.read(gpa, buf);
        assert_eq!(r.is_ok(), self.inside(gpa, buf.len()), "read {gpa:#x}+{}", buf.len());
        r
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let inside = self.inside(gpa, data.len());
        let r = self.inner.write(gpa, data);
        assert_eq!(
            r.is_ok(),
            inside,
            "write {gpa:#x}+{} {}",
            data.len(),
            if inside { "refused" } else { "accepted outside RAM" }
        );
        if inside {
            self.accepted += 1;
        } else {
            self.refused += 1;
        }
        r
    }
}

const REGS: [u64; 22] = [
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::INTERRUPT_ACK,
    reg::STATUS,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DESC_HIGH,
    reg::QUEUE_DRIVER_LOW,
    reg::QUEUE_DRIVER_HIGH,
    reg::QUEUE_DEVICE_LOW,
    reg::QUEUE_DEVICE_HIGH,
    reg::SHM_SEL,
    reg::QUEUE_RESET,
    reg::MAGIC_VALUE,
    reg::CONFIG_GENERATION,
    0x100,
    0x104,
    0x1FF,
];

/// A value a hostile driver might write: small numbers, RAM addresses,
/// addresses near the edges, or anything.
fn value(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => rng.below(4),
        1 => 1 << rng.below(17),
        2 => BASE + rng.below(RAM as u64),
        3 => BASE + RAM as u64 - rng.below(64),
        4 => u64::from(u32::MAX) - rng.below(4),
        _ => rng.next(),
    }
}

fn fuzz_device<D: Device>(seed: u64, make: impl Fn() -> D, drain: impl Fn(&mut D), iterations: usize) {
    let mut rng = Rng(seed);
    let mut mem = Watched { inner: memory(), accepted: 0, refused: 0 };
    let mut dev = MmioDevice::new(make());
    let mut drv: Option<Driver> = None;
    let mut interrupts = 0u64;
    let mut broken = 0u64;
    for _ in 0..iterations {
        let was_broken = dev.needs_reset();
        match rng.below(16) {
            // A proper bring-up, so that the rest reaches deep.
            0 if rng.chance(4) => {
                if rng.chance(3) {
                    dev.set_budget(1 + rng.below(8) as usize);
                }
                drv = Some(Driver::probe(&mut dev, &mut mem, u64::MAX, 1 << rng.below(9)));
            }
            // Register writes: mostly 32-bit to real registers.
            1..=3 => {
                let offset =
                    if rng.chance(8) { rng.next() % 0x220 } else { REGS[rng.below(REGS.len() as u64) as usize] };
                let size = if rng.chance(8) { [0, 1, 2, 3, 8, 16][rng.below(6) as usize] } else { 4 };
                let v = value(&mut rng);
                if let Ok(out) = dev.write(&mut mem, offset, size, v) {
                    interrupts += u64::from(out.interrupt);
                }
            }
            4 => {
                let offset = rng.next() % if rng.chance(2) { 0x100 } else { 0x1_0000 };
                let _ = dev.read(offset, [1, 2, 4, 8][rng.below(4) as usize]);
            }
            // Scribble on a ring or descriptor table, or anywhere.
            5 | 6 => {
                let at = if rng.chance(2) {
                    BASE + rng.below(8) * 0x8000 + rng.below(3) * 0x2000 + rng.below(64)
                } else {
                    BASE + rng.below(RAM as u64)
                };
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                let _ = mem.inner.write(at, &bytes);
            }
            // A plausible-looking descriptor in a queue's table.
            7 => {
                if let Some(d) = &drv {
                    if let Some(q) = d.queues.get(rng.below(d.queues.len().max(1) as u64) as usize) {
                        let flags = [
                            0,
                            VIRTQ_DESC_F_NEXT,
                            VIRTQ_DESC_F_WRITE,
                            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
                            VIRTQ_DESC_F_INDIRECT,
                        ][rng.below(5) as usize];
                        let len = if rng.chance(4) { rng.next() as u32 } else { rng.below(2048) as u32 };
                        let index = rng.below(u64::from(q.size) + 2) as u16;
                        let next = rng.below(u64::from(q.size) + 2) as u16;
                        let addr = value(&mut rng);
                        write_desc_raw(&mut mem.inner, q.desc, index, addr, len, flags, next);
                    }
                }
            }
            // Well-formed chains, random buffers.
            8 | 9 => {
                if let Some(d) = drv.as_mut() {
                    let q = rng.below(d.queues.len().max(1) as u64) as usize;
                    if q < d.queues.len() {
                        let n = 1 + rng.below(4);
                        let bufs: Vec<Buf> = (0..n)
                            .map(|i| {
                                let addr =
                                    if rng.chance(6) { value(&mut rng) } else { BASE + 0x4_0000 + rng.below(0x1_0000) };
                                let len = if rng.chance(8) {
                                    rng.next() as u32
                                } else {
                                    [1, 16, 512, 1024, 1526][rng.below(5) as usize]
                                };
                                Buf { addr, len, writable: i > 0 && rng.chance(2) }
                            })
                            .collect();
                        if bufs.len() <= usize::from(d.queues[q].size) {
                            d.submit(&mut mem, q, &bufs);
                        }
                    }
                }
            }
            10 | 11 => {
                let q = if rng.chance(8) { rng.next() as u32 } else { rng.below(3) as u32 };
                if let Ok(out) = dev.write(&mut mem, reg::QUEUE_NOTIFY, 4, u64::from(q)) {
                    interrupts += u64::from(out.interrupt);
                }
            }
            12 => interrupts += u64::from(dev.poll(&mut mem).interrupt),
            13 => {
                let data: Vec<u8> = (0..rng.below(1600)).map(|_| rng.next() as u8).collect();
                if let Ok(out) = dev.deliver_rx(&mut mem, &data) {
                    interrupts += u64::from(out.interrupt);
                }
            }
            14 => {
                let _ = dev.write(&mut mem, reg::INTERRUPT_ACK, 4, rng.below(4));
            }
            // The host side drains what the device produced.
            _ => drain(dev.device_mut()),
        }
        // Invariants the register file must keep whatever happened.
        assert_eq!(dev.interrupt_pending(), dev.read(reg::INTERRUPT_STATUS, 4).unwrap() != 0);
        assert_eq!(dev.read(reg::STATUS, 4).unwrap() as u32, dev.status());
        if dev.needs_reset() {
            assert!(!dev.live());
            assert!(dev.error().is_some());
            if !was_broken {
                assert_ne!(dev.interrupt_status() & INTERRUPT_CONFIG_CHANGE, 0);
                broken += 1;
            }
            if rng.chance(2) {
                let _ = dev.write(&mut mem, reg::STATUS, 4, 0);
                assert_eq!(dev.status(), 0);
                assert!(!dev.interrupt_pending());
            }
        }
    }
    // The fuzzer did reach request processing.
    assert!(interrupts > 0, "no interrupt in {iterations} steps (seed {seed:#x})");
    assert!(mem.accepted > 0);
    assert!(broken > 0, "the fuzzer never broke a queue (seed {seed:#x})");
}

/// Like `testutil::write_desc` (which cannot be used while the memory
/// is borrowed through `Watched`).
fn write_desc_raw(mem: &mut VecMemory, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    let _ = mem.write(table + 16 * u64::from(index), &raw);
}

const ITERATIONS: usize = 50_000;

#[test]
fn fuzz_console() {
    for seed in 1..=4 {
        fuzz_device(
            (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            Console::new,
            |c| drop(c.take_output()),
            ITERATIONS,
        );
    }
}

#[test]
fn fuzz_block() {
    for seed in 1..=4 {
        fuzz_device(
            (seed as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            || Block::new(MemDisk::new(256), false),
            |_| {},
            ITERATIONS,
        );
    }
}

#[test]
fn fuzz_read_only_block() {
    fuzz_device(0xDEAD_BEEF, || Block::new(MemDisk::new(64), true), |_| {}, ITERATIONS);
}

#[test]
fn fuzz_net() {
    for seed in 1..=4 {
        fuzz_device(
            (seed as u64).wrapping_mul(0x1234_5678_9ABC_DEF1),
            || Net::new([2, 0, 0, 0, 0, 1]),
            |n| while n.take_tx().is_some() {},
            ITERATIONS,
        );
    }
}

#[test]
fn fuzz_boxed_device() {
    fuzz_device(77, || -> Box<dyn Device> { Box::new(Console::with_size(80, 24)) }, |_| {}, ITERATIONS / 4);
}
