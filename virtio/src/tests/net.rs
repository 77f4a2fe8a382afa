//! virtio-net: frames out, frames in, and two guests joined by a switch.

use alloc::vec::Vec;

use crate::device::RxError;
use crate::mmio::{reg, status, MmioDevice};
use crate::net::*;
use crate::switch::{Route, Switch};
use crate::testutil::*;
use crate::VecMemory;

const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xA];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xB];

struct Guest {
    dev: MmioDevice<Net>,
    mem: VecMemory,
    drv: Driver,
}

impl Guest {
    fn new(mac: [u8; 6]) -> Guest {
        let mut mem = memory();
        let mut dev = MmioDevice::new(Net::new(mac));
        let drv = Driver::probe(&mut dev, &mut mem, VIRTIO_NET_F_MAC, 16);
        Guest { dev, mem, drv }
    }

    /// Sends a frame the way Linux does: header and frame in one buffer.
    fn send(&mut self, frame: &[u8]) {
        let mut buf = alloc::vec![0u8; NET_HDR_LEN];
        buf.extend_from_slice(frame);
        let at = self.drv.buffer(&mut self.mem, &buf);
        self.drv.submit(&mut self.mem, TRANSMITQ, &[r(at, buf.len() as u32)]);
        assert!(self.drv.notify(&mut self.dev, &mut self.mem, TRANSMITQ).interrupt);
    }

    /// Posts one receive buffer of `len` bytes.
    fn post_rx(&mut self, len: usize) -> u64 {
        let at = self.drv.alloc(len);
        self.drv.submit(&mut self.mem, RECEIVEQ, &[w(at, len as u32)]);
        at
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(payload);
    f
}

#[test]
fn mac_is_offered_and_in_the_configuration() {
    let g = Guest::new(MAC_A);
    assert_ne!(g.dev.driver_features() & VIRTIO_NET_F_MAC, 0);
    let mac: Vec<u8> = (0..6).map(|i| g.dev.read(0x100 + i, 1).unwrap() as u8).collect();
    assert_eq!(mac, MAC_A);
}

#[test]
fn transmitted_frames_come_out_without_the_header() {
    let mut g = Guest::new(MAC_A);
    let f1 = frame(MAC_B, MAC_A, b"first");
    g.send(&f1);
    // Header in its own descriptor, frame split over two more.
    let f2 = frame(MAC_B, MAC_A, &[7; 100]);
    let h = g.drv.buffer(&mut g.mem, &[0; NET_HDR_LEN]);
    let p1 = g.drv.buffer(&mut g.mem, &f2[..20]);
    let p2 = g.drv.buffer(&mut g.mem, &f2[20..]);
    g.drv.submit(&mut g.mem, TRANSMITQ, &[r(h, 12), r(p1, 20), r(p2, f2.len() as u32 - 20)]);
    let _ = g.drv.notify(&mut g.dev, &mut g.mem, TRANSMITQ);
    assert_eq!(g.dev.device_mut().take_tx(), Some(f1));
    assert_eq!(g.dev.device_mut().take_tx(), Some(f2));
    assert_eq!(g.dev.device_mut().take_tx(), None);
    assert_eq!(g.drv.used(&g.mem, TRANSMITQ).len(), 2);
    assert_eq!(g.dev.device().stats().tx_frames, 2);
}

#[test]
fn oversized_and_runt_transmits_are_dropped_and_counted() {
    let mut g = Guest::new(MAC_A);
    g.send(&frame(MAC_B, MAC_A, &[0; MAX_FRAME - 14 + 1]));
    g.send(&[1, 2, 3]);
    // A huge length that is not even in RAM: dropped on size alone.
    g.drv.submit(&mut g.mem, TRANSMITQ, &[r(BASE, u32::MAX)]);
    let _ = g.drv.notify(&mut g.dev, &mut g.mem, TRANSMITQ);
    g.send(&frame(MAC_B, MAC_A, &[0; MAX_FRAME - 14]));
    assert_eq!(g.dev.device().stats().tx_dropped_size, 3);
    assert_eq!(g.dev.device_mut().take_tx().map(|f| f.len()), Some(MAX_FRAME));
    assert_eq!(g.dev.device_mut().take_tx(), None);
    assert_eq!(g.drv.used(&g.mem, TRANSMITQ).len(), 4);
    assert!(g.dev.live());
}

#[test]
fn transmit_outbox_is_bounded_without_losing_frames() {
    let mut g = Guest::new(MAC_A);
    g.dev.set_budget(usize::MAX);
    let mut sent = 0;
    // Fill the outbox (256) and then some, 16 at a time.
    while sent < TX_OUTBOX + 8 {
        for _ in 0..16 {
            let f = frame(MAC_B, MAC_A, &(sent as u32).to_le_bytes());
            let mut buf = alloc::vec![0u8; NET_HDR_LEN];
            buf.extend_from_slice(&f);
            let at = g.drv.buffer(&mut g.mem, &buf);
            g.drv.submit(&mut g.mem, TRANSMITQ, &[r(at, buf.len() as u32)]);
            sent += 1;
        }
        let _ = g.drv.notify(&mut g.dev, &mut g.mem, TRANSMITQ);
    }
    assert_eq!(g.dev.device().tx_pending(), TX_OUTBOX);
    assert_eq!(g.drv.used(&g.mem, TRANSMITQ).len(), TX_OUTBOX);
    // The rest waits in the ring; draining lets it through, in order.
    let mut got = Vec::new();
    while let Some(f) = g.dev.device_mut().take_tx() {
        got.push(u32::from_le_bytes(f[14..18].try_into().unwrap()));
    }
    let _ = g.dev.poll(&mut g.mem);
    while let Some(f) = g.dev.device_mut().take_tx() {
        got.push(u32::from_le_bytes(f[14..18].try_into().unwrap()));
    }
    assert_eq!(got, (0..sent as u32).collect::<Vec<_>>());
}

#[test]
fn received_frames_get_a_header_with_one_buffer() {
    let mut g = Guest::new(MAC_A);
    let at = g.post_rx(1526);
    let f = frame(MAC_A, MAC_B, b"payload");
    assert!(g.dev.deliver_rx(&mut g.mem, &f).unwrap().interrupt);
    let used = g.drv.used(&g.mem, RECEIVEQ);
    assert_eq!(used, [(0, (NET_HDR_LEN + f.len()) as u32)]);
    let got = peek(&g.mem, at, NET_HDR_LEN + f.len());
    assert_eq!(got[..10], [0; 10]);
    assert_eq!(got[10..12], [1, 0], "num_buffers = 1");
    assert_eq!(got[12..], f[..]);
    assert_eq!(g.dev.device().stats().rx_frames, 1);
}

#[test]
fn frames_wait_in_the_backlog_for_receive_buffers() {
    let mut g = Guest::new(MAC_A);
    let f = frame(MAC_A, MAC_B, b"x");
    assert!(!g.dev.deliver_rx(&mut g.mem, &f).unwrap().interrupt);
    assert_eq!(g.dev.device().rx_pending(), 1);
    g.post_rx(2048);
    assert!(g.drv.notify(&mut g.dev, &mut g.mem, RECEIVEQ).interrupt);
    assert_eq!(g.dev.device().rx_pending(), 0);
}

#[test]
fn frame_larger_than_the_receive_chain_is_dropped_and_counted() {
    let mut g = Guest::new(MAC_A);
    let small = g.post_rx(64);
    let big = g.post_rx(1526);
    let f = frame(MAC_A, MAC_B, &[9; 100]);
    let _ = g.dev.deliver_rx(&mut g.mem, &f).unwrap();
    assert_eq!(g.drv.used(&g.mem, RECEIVEQ), [(0, 0)]);
    assert_eq!(g.dev.device().stats().rx_buffer_too_small, 1);
    assert_eq!(peek(&g.mem, small, 64), [0; 64]);
    // The next frame goes into the next buffer.
    let _ = g.dev.deliver_rx(&mut g.mem, &f).unwrap();
    assert_eq!(g.drv.used(&g.mem, RECEIVEQ), [(1, (NET_HDR_LEN + f.len()) as u32)]);
    assert_eq!(peek(&g.mem, big + 12, f.len()), f);
}

#[test]
fn frames_are_refused_before_the_driver_is_up() {
    let mut mem = memory();
    let mut dev = MmioDevice::new(Net::new(MAC_A));
    let f = frame(MAC_A, MAC_B, b"x");
    assert_eq!(dev.deliver_rx(&mut mem, &f), Err(RxError::NotReady));
    Driver::probe(&mut dev, &mut mem, VIRTIO_NET_F_MAC, 16);
    assert!(dev.deliver_rx(&mut mem, &f).is_ok());
    wr(&mut dev, &mut mem, reg::STATUS, 0);
    assert_eq!(dev.device().rx_pending(), 0, "reset drops the backlog");
    assert_eq!(dev.deliver_rx(&mut mem, &f), Err(RxError::NotReady));
    assert_eq!(dev.device().stats().rx_dropped_not_ready, 2);
    assert_eq!(dev.status() & status::DRIVER_OK, 0);
}

#[test]
fn receive_backlog_is_bounded() {
    let mut g = Guest::new(MAC_A);
    let f = frame(MAC_A, MAC_B, b"x");
    for _ in 0..RX_BACKLOG {
        assert!(g.dev.deliver_rx(&mut g.mem, &f).is_ok());
    }
    assert_eq!(g.dev.deliver_rx(&mut g.mem, &f), Err(RxError::Full));
    assert_eq!(g.dev.device().stats().rx_dropped_full, 1);
    assert_eq!(g.dev.deliver_rx(&mut g.mem, &[0; 13]), Err(RxError::Invalid));
    assert_eq!(g.dev.deliver_rx(&mut g.mem, &[0; MAX_FRAME + 1]), Err(RxError::Invalid));
}

#[test]
fn two_guests_talk_through_the_switch() {
    let mut guests = [Guest::new(MAC_A), Guest::new(MAC_B)];
    let mut sw = Switch::new(16);
    for g in guests.iter_mut() {
        g.post_rx(1526);
        g.post_rx(1526);
    }
    // A → broadcast (ARP-like), B → A unicast.
    guests[0].send(&frame([0xFF; 6], MAC_A, b"who has B"));
    guests[1].send(&frame(MAC_A, MAC_B, b"B is here"));
    let mut delivered = [0usize; 2];
    for round in 0..2 {
        for port in 0..2 {
            while let Some(f) = guests[port].dev.device_mut().take_tx() {
                let route = sw.route(port, &f);
                if round == 0 && port == 0 {
                    assert_eq!(route, Route::Flood { except: 0 });
                }
                for dst in (0..2).filter(|&p| route.includes(p)) {
                    let g = &mut guests[dst];
                    assert!(g.dev.deliver_rx(&mut g.mem, &f).unwrap().interrupt);
                    delivered[dst] += 1;
                }
            }
        }
    }
    assert_eq!(delivered, [1, 1]);
    assert_eq!(sw.lookup(&MAC_A), Some(0));
    assert_eq!(sw.lookup(&MAC_B), Some(1));
    let used_a = guests[0].drv.used(&guests[0].mem, RECEIVEQ);
    assert_eq!(used_a.len(), 1);
    // A now reaches B by unicast.
    assert_eq!(sw.route(0, &frame(MAC_B, MAC_A, b"")), Route::Port(1));
}
