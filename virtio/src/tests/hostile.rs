//! A guest breaking the queue protocol: the device sets
//! DEVICE_NEEDS_RESET, raises a configuration-change interrupt, serves
//! nothing more until reset, and other devices are unaffected.

use crate::block::{Block, MemDisk, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_OUT};
use crate::console::{Console, RECEIVEQ, TRANSMITQ};
use crate::mmio::{reg, status, MmioDevice, Outcome, INTERRUPT_CONFIG_CHANGE};
use crate::queue::{QueueError, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT};
use crate::testutil::*;
use crate::{GuestMemory, VecMemory};

fn up() -> (MmioDevice<Console>, VecMemory, Driver) {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Console::new());
    let drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    (dev, mem, drv)
}

/// Notifies the transmit queue and checks the device broke with `expect`.
fn assert_breaks(dev: &mut MmioDevice<Console>, mem: &mut VecMemory, drv: &Driver, expect: QueueError) {
    let out = drv.notify(dev, mem, TRANSMITQ);
    assert_eq!(out, Outcome { interrupt: true, more_work: false });
    assert!(dev.needs_reset());
    assert_eq!(dev.error(), Some(expect));
    assert_ne!(rd(dev, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(rd(dev, reg::INTERRUPT_STATUS) & INTERRUPT_CONFIG_CHANGE, INTERRUPT_CONFIG_CHANGE);
    assert!(!dev.live());
}

#[test]
fn descriptor_table_outside_ram_needs_reset() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Console::new());
    Driver::negotiate(&mut dev, &mut mem, 0);
    // Set up queue 1 by hand with its descriptor table past the end of RAM.
    wr(&mut dev, &mut mem, reg::QUEUE_SEL, 1);
    wr(&mut dev, &mut mem, reg::QUEUE_NUM, 8);
    let avail = BASE + 0x1000;
    let outside = BASE + RAM as u64;
    wr(&mut dev, &mut mem, reg::QUEUE_DESC_LOW, outside as u32);
    wr(&mut dev, &mut mem, reg::QUEUE_DRIVER_LOW, avail as u32);
    wr(&mut dev, &mut mem, reg::QUEUE_DEVICE_LOW, (BASE + 0x2000) as u32);
    wr(&mut dev, &mut mem, reg::QUEUE_READY, 1);
    wr(&mut dev, &mut mem, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    mem.write_u16(avail + 2, 1).unwrap();
    let out = wr_out(&mut dev, &mut mem, reg::QUEUE_NOTIFY, 1);
    assert!(out.interrupt);
    assert!(matches!(dev.error(), Some(QueueError::Memory(e)) if e.gpa == outside));
    assert!(dev.needs_reset());
}

#[test]
fn used_ring_outside_ram_needs_reset() {
    let (mut dev, mut mem, mut drv) = up();
    wr(&mut dev, &mut mem, reg::QUEUE_SEL, TRANSMITQ as u32);
    wr(&mut dev, &mut mem, reg::QUEUE_READY, 0);
    wr(&mut dev, &mut mem, reg::QUEUE_DEVICE_HIGH, 0x10);
    wr(&mut dev, &mut mem, reg::QUEUE_READY, 1);
    let b = drv.buffer(&mut mem, b"x");
    drv.submit(&mut mem, TRANSMITQ, &[r(b, 1)]);
    let _ = drv.notify(&mut dev, &mut mem, TRANSMITQ);
    assert!(matches!(dev.error(), Some(QueueError::Memory(_))));
}

#[test]
fn next_index_out_of_range_needs_reset() {
    let (mut dev, mut mem, drv) = up();
    let q = drv.queues[TRANSMITQ].clone();
    write_desc(&mut mem, q.desc, 0, BASE + 0x5_0000, 1, VIRTQ_DESC_F_NEXT, 8);
    let mut q2 = q.clone();
    q2.offer(&mut mem, 0);
    assert_breaks(&mut dev, &mut mem, &drv, QueueError::NextOutOfRange { index: 0, next: 8 });
}

#[test]
fn head_index_out_of_range_needs_reset() {
    let (mut dev, mut mem, drv) = up();
    let mut q = drv.queues[TRANSMITQ].clone();
    q.offer(&mut mem, 0xFFFF);
    assert_breaks(&mut dev, &mut mem, &drv, QueueError::HeadOutOfRange { head: 0xFFFF });
}

#[test]
fn looping_chain_needs_reset() {
    let (mut dev, mut mem, drv) = up();
    let mut q = drv.queues[TRANSMITQ].clone();
    for i in 0..3u16 {
        write_desc(&mut mem, q.desc, i, BASE + 0x5_0000, 1, VIRTQ_DESC_F_NEXT, (i + 1) % 3);
    }
    q.offer(&mut mem, 1);
    assert_breaks(&mut dev, &mut mem, &drv, QueueError::ChainLoop { head: 1 });
}

#[test]
fn indirect_descriptor_needs_reset() {
    let (mut dev, mut mem, drv) = up();
    let mut q = drv.queues[TRANSMITQ].clone();
    write_desc(&mut mem, q.desc, 2, BASE + 0x5_0000, 32, VIRTQ_DESC_F_INDIRECT, 0);
    q.offer(&mut mem, 2);
    assert_breaks(&mut dev, &mut mem, &drv, QueueError::Indirect { index: 2 });
}

#[test]
fn avail_index_jump_beyond_queue_size_needs_reset() {
    let (mut dev, mut mem, drv) = up();
    mem.write_u16(drv.queues[TRANSMITQ].avail + 2, 9).unwrap();
    assert_breaks(&mut dev, &mut mem, &drv, QueueError::AvailIndexJump { last_seen: 0, idx: 9 });
}

#[test]
fn broken_device_serves_nothing_until_reset_then_works_again() {
    let (mut dev, mut mem, drv) = up();
    mem.write_u16(drv.queues[TRANSMITQ].avail + 2, 100).unwrap();
    assert_breaks(&mut dev, &mut mem, &drv, QueueError::AvailIndexJump { last_seen: 0, idx: 100 });
    wr(&mut dev, &mut mem, reg::INTERRUPT_ACK, INTERRUPT_CONFIG_CHANGE);
    assert!(!dev.interrupt_pending());
    // Repair the ring: still nothing is served, by notify, poll or input.
    mem.write_u16(drv.queues[TRANSMITQ].avail + 2, 0).unwrap();
    let mut drv = drv;
    let b = drv.buffer(&mut mem, b"lost");
    drv.submit(&mut mem, TRANSMITQ, &[r(b, 4)]);
    let rx = drv.alloc(16);
    drv.submit(&mut mem, RECEIVEQ, &[w(rx, 16)]);
    assert_eq!(drv.notify(&mut dev, &mut mem, TRANSMITQ), Outcome::default());
    assert_eq!(dev.deliver_rx(&mut mem, b"in"), Ok(Outcome::default()));
    assert!(drv.used(&mem, TRANSMITQ).is_empty());
    assert!(drv.used(&mem, RECEIVEQ).is_empty());
    // The driver cannot clear the bit except by resetting.
    let s = rd(&dev, reg::STATUS);
    wr(&mut dev, &mut mem, reg::STATUS, s & !status::DEVICE_NEEDS_RESET);
    assert!(dev.needs_reset());
    wr(&mut dev, &mut mem, reg::STATUS, s | status::FAILED);
    assert!(dev.needs_reset());
    // Reset and probe again: a working device.
    wr(&mut dev, &mut mem, reg::STATUS, 0);
    assert!(!dev.needs_reset());
    assert_eq!(dev.error(), None);
    let mut mem = memory();
    let mut drv = Driver::probe(&mut dev, &mut mem, 0, 8);
    let b = drv.buffer(&mut mem, b"back");
    drv.submit(&mut mem, TRANSMITQ, &[r(b, 4)]);
    assert!(drv.notify(&mut dev, &mut mem, TRANSMITQ).interrupt);
    assert_eq!(dev.device().output(), b"back");
}

#[test]
fn broken_device_does_not_affect_another_device() {
    // Two guests, each with a console, and a block device in the second.
    let (mut bad, mut bad_mem, bad_drv) = up();
    let (mut good, mut good_mem, mut good_drv) = up();
    let mut disk_mem = memory();
    let mut disk = MmioDevice::new(Block::new(MemDisk::new(16), false));
    let mut disk_drv = Driver::probe(&mut disk, &mut disk_mem, 0, 8);

    mem_scribble_queue(&mut bad_mem, &bad_drv);
    assert_breaks(&mut bad, &mut bad_mem, &bad_drv, QueueError::HeadOutOfRange { head: 9 });

    let b = good_drv.buffer(&mut good_mem, b"fine");
    good_drv.submit(&mut good_mem, TRANSMITQ, &[r(b, 4)]);
    assert!(good_drv.notify(&mut good, &mut good_mem, TRANSMITQ).interrupt);
    assert_eq!(good.device().output(), b"fine");
    assert!(!good.needs_reset());

    let mut hdr = [0u8; 16];
    hdr[0..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
    let h = disk_drv.buffer(&mut disk_mem, &hdr);
    let d = disk_drv.buffer(&mut disk_mem, &[0xAB; 512]);
    let s = disk_drv.buffer(&mut disk_mem, &[0xFF]);
    disk_drv.submit(&mut disk_mem, 0, &[r(h, 16), r(d, 512), w(s, 1)]);
    assert!(disk_drv.notify(&mut disk, &mut disk_mem, 0).interrupt);
    assert_eq!(disk_mem.bytes()[(s - BASE) as usize], VIRTIO_BLK_S_OK);
    assert_eq!(disk.device().backend().bytes()[..512], [0xAB; 512]);

    // And the broken one is still broken.
    assert_eq!(bad_drv.notify(&mut bad, &mut bad_mem, TRANSMITQ), Outcome::default());
}

fn mem_scribble_queue(mem: &mut VecMemory, drv: &Driver) {
    let mut q = drv.queues[TRANSMITQ].clone();
    q.offer(mem, 9);
}
