//! virtio network device (device ID 1, virtio 1.x §5.1): one queue pair,
//! queue 0 receiveq (frames for the guest), queue 1 transmitq (frames from
//! it), a fixed MAC address (`VIRTIO_NET_F_MAC`), and no offloads.
//!
//! With `VIRTIO_F_VERSION_1` every buffer starts with the 12-byte
//! `struct virtio_net_hdr` (§5.1.6) whose last field is `num_buffers`.
//! No checksum or segmentation feature is offered, so the device ignores
//! the transmit header's contents and writes a zero header with
//! `num_buffers = 1` before each received frame. `VIRTIO_NET_F_MRG_RXBUF`
//! is not offered either: a received frame must fit one receive chain
//! (§5.1.6.3.1 asks drivers for at least 1526 bytes per buffer); a frame
//! that does not is dropped and counted, and the buffer returned empty.
//!
//! Both directions are bounded: transmitted frames wait in an outbox of
//! [`TX_OUTBOX`] frames that the caller drains with [`Net::take_tx`] (when
//! it is full the device leaves transmit buffers in the ring, so nothing is
//! lost; poll after draining), and frames for the guest wait in a backlog
//! of [`RX_BACKLOG`] frames until it posts receive buffers (beyond that
//! they are refused and counted).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use crate::device::{copy_config, Device, RxError, Served, DEVICE_ID_NET};
use crate::memory::GuestMemory;
use crate::queue::{Chain, Queue, QueueError};

/// Feature: the configuration space has the device's MAC address.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// Receive queue of the single pair.
pub const RECEIVEQ: usize = 0;
/// Transmit queue of the single pair.
pub const TRANSMITQ: usize = 1;
/// `QueueNumMax` of both queues.
pub const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr` with `num_buffers` (virtio 1.x).
pub const NET_HDR_LEN: usize = 12;
/// Ethernet header: destination, source, EtherType.
pub const ETH_HLEN: usize = 14;
/// Largest frame carried (without FCS): 1500-byte payload, Ethernet
/// header, and room for one 802.1Q tag.
pub const MAX_FRAME: usize = 1518;
/// Transmitted frames held for the caller at most.
pub const TX_OUTBOX: usize = 256;
/// Frames held for the guest at most.
pub const RX_BACKLOG: usize = 64;
/// `VIRTIO_NET_S_LINK_UP` in the configuration's `status`.
const LINK_UP: u16 = 1;

/// Counters of the network device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames the guest sent that went to the outbox.
    pub tx_frames: u64,
    /// Transmit buffers dropped: shorter than header + Ethernet header, or
    /// a frame longer than [`MAX_FRAME`].
    pub tx_dropped_size: u64,
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames refused: backlog full.
    pub rx_dropped_full: u64,
    /// Frames refused: driver not up.
    pub rx_dropped_not_ready: u64,
    /// Frames refused: too short or too long.
    pub rx_invalid: u64,
    /// Frames dropped because the receive chain could not hold them.
    pub rx_buffer_too_small: u64,
    /// Buffers the device could not access (outside guest RAM), either
    /// direction.
    pub bad_buffers: u64,
}

/// The network device type.
#[derive(Clone, Debug)]
pub struct Net {
    mac: [u8; 6],
    tx: VecDeque<Vec<u8>>,
    rx: VecDeque<Vec<u8>>,
    stats: NetStats,
}

impl Net {
    /// A network device with MAC address `mac`.
    pub fn new(mac: [u8; 6]) -> Self {
        Net { mac, tx: VecDeque::new(), rx: VecDeque::new(), stats: NetStats::default() }
    }

    /// Its MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Takes the oldest frame the guest sent (Ethernet header first, no
    /// virtio header); poll the device afterwards if the outbox was full.
    pub fn take_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// Frames in the outbox.
    pub fn tx_pending(&self) -> usize {
        self.tx.len()
    }

    /// Frames waiting for receive buffers.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    /// The counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// Moves transmit buffers' frames to the outbox.
    fn transmit(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory, budget: usize) -> Result<Served, QueueError> {
        let mut served = Served::default();
        while self.tx.len() < TX_OUTBOX {
            if served.completed >= budget {
                served.more = queue.available(mem)? > 0;
                break;
            }
            let Some(chain) = queue.pop(mem)? else { break };
            if let Some(frame) = self.read_frame(mem, &chain) {
                self.tx.push_back(frame);
                self.stats.tx_frames = self.stats.tx_frames.saturating_add(1);
            }
            queue.push_used(mem, chain.head(), 0)?;
            served.completed = served.completed.saturating_add(1);
        }
        Ok(served)
    }

    /// The frame in a transmit chain, or `None` (counted) if it has none.
    fn read_frame(&mut self, mem: &dyn GuestMemory, chain: &Chain) -> Option<Vec<u8>> {
        let len = chain.readable_len();
        let ok = (NET_HDR_LEN + ETH_HLEN) as u64..=(NET_HDR_LEN + MAX_FRAME) as u64;
        if !ok.contains(&len) {
            self.stats.tx_dropped_size = self.stats.tx_dropped_size.saturating_add(1);
            return None;
        }
        // len <= NET_HDR_LEN + MAX_FRAME.
        let mut frame = vec![0; (len as usize).saturating_sub(NET_HDR_LEN)];
        if chain.read_at(mem, NET_HDR_LEN as u64, &mut frame).is_err() {
            self.stats.bad_buffers = self.stats.bad_buffers.saturating_add(1);
            return None;
        }
        Some(frame)
    }

    /// Delivers backlog frames into receive chains.
    fn receive(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory, budget: usize) -> Result<Served, QueueError> {
        let mut served = Served::default();
        while !self.rx.is_empty() {
            if served.completed >= budget {
                served.more = queue.available(mem)? > 0;
                break;
            }
            let Some(chain) = queue.pop(mem)? else { break };
            let frame = self.rx.pop_front().unwrap_or_default();
            let used = self.write_frame(mem, &chain, &frame);
            queue.push_used(mem, chain.head(), used)?;
            served.completed = served.completed.saturating_add(1);
        }
        Ok(served)
    }

    /// Writes header and frame into a receive chain; returns the used
    /// length (0 if the frame was dropped).
    fn write_frame(&mut self, mem: &mut dyn GuestMemory, chain: &Chain, frame: &[u8]) -> u32 {
        let need = NET_HDR_LEN.saturating_add(frame.len());
        if chain.writable_len() < need as u64 {
            self.stats.rx_buffer_too_small = self.stats.rx_buffer_too_small.saturating_add(1);
            return 0;
        }
        let mut header = [0u8; NET_HDR_LEN];
        header[10..12].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
        let written = chain.write_at(mem, 0, &header).and_then(|()| chain.write_at(mem, NET_HDR_LEN as u64, frame));
        if written.is_err() {
            self.stats.bad_buffers = self.stats.bad_buffers.saturating_add(1);
            return 0;
        }
        self.stats.rx_frames = self.stats.rx_frames.saturating_add(1);
        // need <= NET_HDR_LEN + MAX_FRAME.
        u32::try_from(need).unwrap_or(0)
    }
}

impl Device for Net {
    fn device_id(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC
    }

    fn queue_count(&self) -> usize {
        2
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    /// `struct virtio_net_config { u8 mac[6]; le16 status; le16
    /// max_virtqueue_pairs; le16 mtu; ... }` (§5.1.4); only `mac` is
    /// covered by an offered feature, the rest holds plausible values.
    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let mut cfg = [0u8; 12];
        cfg[0..6].copy_from_slice(&self.mac);
        cfg[6..8].copy_from_slice(&LINK_UP.to_le_bytes());
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        cfg[10..12].copy_from_slice(&1500u16.to_le_bytes());
        copy_config(&cfg, offset, data);
    }

    fn reset(&mut self) {
        self.tx.clear();
        self.rx.clear();
    }

    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        budget: usize,
    ) -> Result<Served, QueueError> {
        match index {
            RECEIVEQ => self.receive(queue, mem, budget),
            TRANSMITQ => self.transmit(queue, mem, budget),
            _ => Ok(Served::default()),
        }
    }

    /// Queues one Ethernet frame (no virtio header, no FCS) for the guest.
    fn push_rx(&mut self, frame: &[u8], live: bool) -> Result<(), RxError> {
        let (counter, err) = if !live {
            (&mut self.stats.rx_dropped_not_ready, RxError::NotReady)
        } else if !(ETH_HLEN..=MAX_FRAME).contains(&frame.len()) {
            (&mut self.stats.rx_invalid, RxError::Invalid)
        } else if self.rx.len() >= RX_BACKLOG {
            (&mut self.stats.rx_dropped_full, RxError::Full)
        } else {
            self.rx.push_back(frame.to_vec());
            return Ok(());
        };
        *counter = counter.saturating_add(1);
        Err(err)
    }
}
