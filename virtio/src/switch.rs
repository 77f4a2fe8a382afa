//! A virtual Ethernet (L2) switch between network devices: learns which
//! port each source MAC address is on and forwards frames by destination.
//!
//! Ports are the caller's indices (e.g. one per guest network device, one
//! for dom0). The switch only decides; the caller moves the frames:
//!
//! ```
//! # use hv_virtio::switch::Switch;
//! let mut sw = Switch::new(256);
//! let frame = [0xff; 14]; // broadcast from ff:..; a real frame has more
//! let route = sw.route(0, &frame);
//! let ports: Vec<usize> = (0..3).filter(|&p| route.includes(p)).collect();
//! assert_eq!(ports, [1, 2]);
//! ```
//!
//! The table holds at most `capacity` addresses; learning a new one when it
//! is full evicts the one seen longest ago. Lookups scan the table, which
//! is fine for the few dozen guests a dom0 serves.

use alloc::vec::Vec;

use crate::net::ETH_HLEN;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Nowhere: a runt frame, or its destination is on the port it came
    /// from.
    Drop,
    /// To the one port its destination was learnt on.
    Port(usize),
    /// To every port except the one it came from: broadcast, multicast or
    /// an unknown destination.
    Flood { except: usize },
}

impl Route {
    /// Whether the frame goes to `port`.
    pub fn includes(&self, port: usize) -> bool {
        match *self {
            Route::Drop => false,
            Route::Port(p) => p == port,
            Route::Flood { except } => port != except,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    mac: [u8; 6],
    port: usize,
    last_seen: u64,
}

/// The switch's MAC address table.
#[derive(Clone, Debug, Default)]
pub struct Switch {
    table: Vec<Entry>,
    capacity: usize,
    clock: u64,
}

impl Switch {
    /// A switch that learns at most `capacity` addresses.
    pub fn new(capacity: usize) -> Self {
        Switch { table: Vec::new(), capacity, clock: 0 }
    }

    /// Learns the frame's source address on `in_port` and decides where
    /// the frame goes.
    pub fn route(&mut self, in_port: usize, frame: &[u8]) -> Route {
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            return Route::Drop;
        };
        if frame.len() < ETH_HLEN {
            return Route::Drop;
        }
        self.learn(src, in_port);
        if is_group(&dst) {
            return Route::Flood { except: in_port };
        }
        match self.lookup(&dst) {
            Some(port) if port == in_port => Route::Drop,
            Some(port) => Route::Port(port),
            None => Route::Flood { except: in_port },
        }
    }

    /// The port `mac` was learnt on.
    pub fn lookup(&self, mac: &[u8; 6]) -> Option<usize> {
        self.table.iter().find(|e| e.mac == *mac).map(|e| e.port)
    }

    /// Forgets every address on `port` (its device went away).
    pub fn forget_port(&mut self, port: usize) {
        self.table.retain(|e| e.port != port);
    }

    /// Addresses learnt.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing is learnt.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn learn(&mut self, mac: [u8; 6], port: usize) {
        // Group addresses are never a source; all-zero is not a station.
        if is_group(&mac) || mac == [0; 6] || self.capacity == 0 {
            return;
        }
        self.clock = self.clock.wrapping_add(1);
        let entry = Entry { mac, port, last_seen: self.clock };
        if let Some(e) = self.table.iter_mut().find(|e| e.mac == mac) {
            *e = entry;
        } else if self.table.len() < self.capacity {
            self.table.push(entry);
        } else if let Some(oldest) = self.table.iter_mut().min_by_key(|e| e.last_seen) {
            *oldest = entry;
        }
    }
}

/// The I/G bit: multicast and broadcast addresses.
fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

fn mac_at(frame: &[u8], at: usize) -> Option<[u8; 6]> {
    frame.get(at..at.checked_add(6)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xA];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xB];
    const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xC];
    const BROADCAST: [u8; 6] = [0xFF; 6];
    const MULTICAST: [u8; 6] = [0x01, 0x00, 0x5E, 0, 0, 1];

    fn frame(dst: [u8; 6], src: [u8; 6]) -> [u8; 60] {
        let mut f = [0u8; 60];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    fn ports(route: Route, n: usize) -> Vec<usize> {
        (0..n).filter(|&p| route.includes(p)).collect()
    }

    #[test]
    fn unknown_destination_floods_all_other_ports() {
        let mut sw = Switch::new(8);
        let route = sw.route(1, &frame(B, A));
        assert_eq!(route, Route::Flood { except: 1 });
        assert_eq!(ports(route, 4), [0, 2, 3]);
    }

    #[test]
    fn learnt_destination_is_sent_to_its_port_only() {
        let mut sw = Switch::new(8);
        let _ = sw.route(2, &frame(BROADCAST, B));
        assert_eq!(sw.lookup(&B), Some(2));
        let route = sw.route(0, &frame(B, A));
        assert_eq!(route, Route::Port(2));
        assert_eq!(ports(route, 4), [2]);
        // And the reply goes back by unicast too.
        assert_eq!(sw.route(2, &frame(A, B)), Route::Port(0));
    }

    #[test]
    fn broadcast_and_multicast_flood_but_never_back_to_the_sender() {
        let mut sw = Switch::new(8);
        let _ = sw.route(0, &frame(BROADCAST, A));
        let _ = sw.route(1, &frame(BROADCAST, B));
        for dst in [BROADCAST, MULTICAST] {
            let route = sw.route(1, &frame(dst, B));
            assert_eq!(ports(route, 3), [0, 2]);
        }
    }

    #[test]
    fn destination_on_the_incoming_port_is_dropped() {
        let mut sw = Switch::new(8);
        let _ = sw.route(0, &frame(BROADCAST, A));
        let _ = sw.route(0, &frame(BROADCAST, C));
        assert_eq!(sw.route(0, &frame(C, A)), Route::Drop);
    }

    #[test]
    fn station_moving_to_another_port_is_relearnt() {
        let mut sw = Switch::new(8);
        let _ = sw.route(0, &frame(BROADCAST, A));
        let _ = sw.route(3, &frame(BROADCAST, A));
        assert_eq!(sw.lookup(&A), Some(3));
        assert_eq!(sw.len(), 1);
    }

    #[test]
    fn group_and_zero_sources_are_not_learnt() {
        let mut sw = Switch::new(8);
        let _ = sw.route(0, &frame(A, MULTICAST));
        let _ = sw.route(0, &frame(A, [0; 6]));
        assert!(sw.is_empty());
    }

    #[test]
    fn table_is_bounded_and_evicts_the_least_recently_seen() {
        let mut sw = Switch::new(2);
        let _ = sw.route(0, &frame(BROADCAST, A));
        let _ = sw.route(1, &frame(BROADCAST, B));
        let _ = sw.route(0, &frame(BROADCAST, A)); // A seen again
        let _ = sw.route(2, &frame(BROADCAST, C)); // evicts B
        assert_eq!(sw.len(), 2);
        assert_eq!(sw.lookup(&A), Some(0));
        assert_eq!(sw.lookup(&B), None);
        assert_eq!(sw.lookup(&C), Some(2));
        for i in 0..1000u16 {
            let mac = [0x02, 0, 0, 0, (i >> 8) as u8, i as u8];
            let _ = sw.route(usize::from(i % 5), &frame(BROADCAST, mac));
        }
        assert_eq!(sw.len(), 2);
    }

    #[test]
    fn zero_capacity_switch_floods_everything() {
        let mut sw = Switch::new(0);
        let _ = sw.route(0, &frame(BROADCAST, A));
        assert_eq!(sw.route(1, &frame(A, B)), Route::Flood { except: 1 });
    }

    #[test]
    fn forgotten_port_no_longer_receives_unicast() {
        let mut sw = Switch::new(8);
        let _ = sw.route(0, &frame(BROADCAST, A));
        let _ = sw.route(1, &frame(BROADCAST, B));
        sw.forget_port(1);
        assert_eq!(sw.lookup(&B), None);
        assert_eq!(sw.lookup(&A), Some(0));
        assert_eq!(sw.route(0, &frame(B, A)), Route::Flood { except: 0 });
    }

    #[test]
    fn runt_frames_are_dropped_and_teach_nothing() {
        let mut sw = Switch::new(8);
        let f = frame(B, A);
        for len in [0, 5, 11, 13] {
            assert_eq!(sw.route(0, &f[..len]), Route::Drop);
        }
        assert!(sw.is_empty());
        assert_eq!(sw.route(0, &f[..14]), Route::Flood { except: 0 });
    }
}
