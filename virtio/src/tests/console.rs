//! virtio-console: output, input, bounds.

use crate::console::*;
use crate::device::RxError;
use crate::mmio::{MmioDevice, Outcome};
use crate::testutil::*;
use crate::VecMemory;

fn up(console: Console) -> (MmioDevice<Console>, VecMemory, Driver) {
    let mut mem = memory();
    let mut dev = MmioDevice::new(console);
    let drv = Driver::probe(&mut dev, &mut mem, VIRTIO_CONSOLE_F_SIZE, 64);
    (dev, mem, drv)
}

#[test]
fn transmitted_bytes_reach_the_output_in_order() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    let a = drv.buffer(&mut mem, b"hello ");
    let b = drv.buffer(&mut mem, b"wo");
    let c = drv.buffer(&mut mem, b"rld\n");
    drv.submit(&mut mem, TRANSMITQ, &[r(a, 6)]);
    drv.submit(&mut mem, TRANSMITQ, &[r(b, 2), r(c, 4)]);
    assert!(drv.notify(&mut dev, &mut mem, TRANSMITQ).interrupt);
    assert_eq!(drv.used(&mem, TRANSMITQ), [(0, 0), (1, 0)]);
    assert_eq!(dev.device_mut().take_output(), b"hello world\n");
    assert!(dev.device().output().is_empty());
}

#[test]
fn input_fills_receive_buffers_in_order() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    let b1 = drv.alloc(4);
    let b2 = drv.alloc(16);
    drv.submit(&mut mem, RECEIVEQ, &[w(b1, 4)]);
    drv.submit(&mut mem, RECEIVEQ, &[w(b2, 16)]);
    let _ = drv.notify(&mut dev, &mut mem, RECEIVEQ);
    assert!(drv.used(&mem, RECEIVEQ).is_empty(), "no input yet");
    let out = dev.deliver_rx(&mut mem, b"abcdef").unwrap();
    assert!(out.interrupt);
    assert_eq!(drv.used(&mem, RECEIVEQ), [(0, 4), (1, 2)]);
    assert_eq!(peek(&mem, b1, 4), b"abcd");
    assert_eq!(peek(&mem, b2, 2), b"ef");
    assert_eq!(dev.device().pending_input(), 0);
}

#[test]
fn input_waits_for_receive_buffers() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    assert_eq!(dev.deliver_rx(&mut mem, b"early"), Ok(Outcome::default()));
    assert_eq!(dev.device().pending_input(), 5);
    let b = drv.alloc(64);
    drv.submit(&mut mem, RECEIVEQ, &[w(b, 64)]);
    assert!(drv.notify(&mut dev, &mut mem, RECEIVEQ).interrupt);
    assert_eq!(drv.used(&mem, RECEIVEQ), [(0, 5)]);
    assert_eq!(peek(&mem, b, 5), b"early");
}

#[test]
fn input_is_bounded_and_refused_whole_when_full() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    let big = [b'x'; INPUT_CAPACITY - 2];
    assert!(dev.deliver_rx(&mut mem, &big).is_ok());
    assert_eq!(dev.deliver_rx(&mut mem, b"abc"), Err(RxError::Full));
    assert_eq!(dev.device().pending_input(), INPUT_CAPACITY - 2);
    assert_eq!(dev.device().stats().input_refused, 3);
    assert!(dev.deliver_rx(&mut mem, b"ab").is_ok());
    // Draining makes room again; the order is kept across the wrap.
    let b = drv.alloc(INPUT_CAPACITY);
    drv.submit(&mut mem, RECEIVEQ, &[w(b, 100)]);
    let _ = drv.notify(&mut dev, &mut mem, RECEIVEQ);
    assert!(dev.deliver_rx(&mut mem, b"tail").is_ok());
    drv.submit(&mut mem, RECEIVEQ, &[w(b, INPUT_CAPACITY as u32)]);
    let _ = drv.notify(&mut dev, &mut mem, RECEIVEQ);
    let used = drv.used(&mem, RECEIVEQ);
    assert_eq!(used[1].1 as usize, INPUT_CAPACITY - 100 + 4);
    assert_eq!(peek(&mem, b + INPUT_CAPACITY as u64 - 100, 4), b"tail");
}

#[test]
fn input_is_kept_when_the_receive_buffer_is_outside_ram() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    drv.submit(&mut mem, RECEIVEQ, &[w(0x10, 8)]);
    let _ = dev.deliver_rx(&mut mem, b"keep").unwrap();
    assert_eq!(drv.used(&mem, RECEIVEQ), [(0, 0)]);
    assert_eq!(dev.device().pending_input(), 4);
    assert_eq!(dev.device().stats().bad_buffers, 1);
    assert!(dev.live());
}

#[test]
fn output_stalls_at_the_limit_until_drained() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    let chunk = 40 * 1024;
    for i in 0..3u8 {
        let b = drv.buffer(&mut mem, &alloc::vec![b'a' + i; chunk]);
        drv.submit(&mut mem, TRANSMITQ, &[r(b, chunk as u32)]);
    }
    let _ = drv.notify(&mut dev, &mut mem, TRANSMITQ);
    assert_eq!(drv.used(&mem, TRANSMITQ).len(), 2, "third buffer left in the ring");
    assert_eq!(dev.device().output().len(), 2 * chunk);
    let _ = dev.poll(&mut mem);
    assert_eq!(drv.used(&mem, TRANSMITQ).len(), 0, "still stalled");
    let out = dev.device_mut().take_output();
    assert_eq!(out.len(), 2 * chunk);
    assert!(dev.poll(&mut mem).interrupt);
    assert_eq!(drv.used(&mem, TRANSMITQ).len(), 1);
    assert_eq!(dev.device().output(), &alloc::vec![b'c'; chunk][..]);
}

#[test]
fn over_long_transmit_buffer_is_truncated_and_counted() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    let len = MAX_TX_CHAIN as usize + 100;
    let b = drv.buffer(&mut mem, &alloc::vec![b'z'; len]);
    drv.submit(&mut mem, TRANSMITQ, &[r(b, len as u32)]);
    let _ = drv.notify(&mut dev, &mut mem, TRANSMITQ);
    assert_eq!(dev.device().output().len(), MAX_TX_CHAIN as usize);
    assert_eq!(dev.device().stats().output_truncated, 100);
}

#[test]
fn transmit_buffer_outside_ram_is_returned_and_counted() {
    let (mut dev, mut mem, mut drv) = up(Console::new());
    let ok = drv.buffer(&mut mem, b"ok");
    drv.submit(&mut mem, TRANSMITQ, &[r(ok, 2), r(BASE + RAM as u64, 2)]);
    drv.submit(&mut mem, TRANSMITQ, &[r(ok, 2)]);
    assert!(drv.notify(&mut dev, &mut mem, TRANSMITQ).interrupt);
    assert_eq!(drv.used(&mem, TRANSMITQ).len(), 2);
    assert_eq!(dev.device().output(), b"ok", "the bad buffer contributed nothing");
    assert_eq!(dev.device().stats().bad_buffers, 1);
    assert!(dev.live());
}

#[test]
fn console_size_is_in_the_configuration() {
    let (dev, _, _) = up(Console::with_size(132, 43));
    assert_ne!(dev.driver_features() & VIRTIO_CONSOLE_F_SIZE, 0);
    assert_eq!(dev.read(0x100, 2), Ok(132));
    assert_eq!(dev.read(0x102, 2), Ok(43));
    assert_eq!(dev.read(0x104, 4), Ok(1));
}
