//! virtio-net (§5.1) on top of [`crate::virtq`], and the `send:N` /
//! `recv:N` modes: a windowed, acknowledged frame exchange with a peer VM
//! through dom0's switch.
//!
//! Protocol (EtherType 0x88B5, "local experimental"): every frame's
//! payload starts with a 20-byte header `{ magic "HVNT", kind, 0, len:
//! u16, seq: u32, total: u32, checksum: u32 }` followed by `len - 20`
//! pattern bytes derived from `seq`; the checksum (FNV-1a) covers the
//! header (checksum field excluded) and the pattern. Kinds:
//!
//! * HELLO (sender → broadcast, every 20 ms until answered);
//! * DATA `seq` (sender → receiver, unicast), payload 46..1500 bytes
//!   depending on `seq`;
//! * ACK `seq` = the next sequence number the receiver expects
//!   (cumulative), sent for a HELLO, every [`ACK_EVERY`] in-order frames,
//!   for the last frame, and for any frame out of order or repeated;
//! * END `seq` = the number of frames (sender → receiver, every 20 ms until
//!   all are acknowledged), only in the timed modes `send-for:MS` /
//!   `recv-for:MS`: there the sender sends frames for MS milliseconds with
//!   `total` = [`OPEN`], and then says how many there were (the frames it
//!   sends after that carry the number too).
//!
//! Flow control: the sender keeps at most [`WINDOW`] frames unacknowledged,
//! well below the receiver's [`RX_BUFFERS`] posted buffers (which it
//! reposts before it acknowledges), so dom0's switch never finds the
//! receiver without buffers. Lost frames would still be recovered: after
//! [`RETRANSMIT_US`] without progress the sender goes back to the first
//! unacknowledged frame (go-back-N), and the receiver counts the gaps it
//! saw; the test wants none.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use testkit::arch::cpu;
use testkit::{check, println};

use crate::virtq::{self, dma_alloc, get, put, status, Mmio, Virtq};

pub const F_MAC: u64 = 1 << 5;
pub const HDR_LEN: usize = 12;
pub const ETH_HLEN: usize = 14;
/// Bytes per buffer: virtio-net header + the largest frame (1518), rounded.
pub const BUF: u64 = 1536;
pub const RX_BUFFERS: u16 = 128;
pub const TX_QSIZE: u16 = 64;
pub const ETHERTYPE: u16 = 0x88b5;
pub const MAGIC: [u8; 4] = *b"HVNT";
pub const KIND_HELLO: u8 = 1;
pub const KIND_DATA: u8 = 2;
pub const KIND_ACK: u8 = 3;
pub const KIND_END: u8 = 4;
/// `total` while a timed sender has not yet decided how many frames it sends.
pub const OPEN: u32 = u32::MAX;
pub const MSG_HDR: usize = 20;
pub const MIN_PAYLOAD: usize = 46;
pub const MAX_PAYLOAD: usize = 1500;
pub const BROADCAST: [u8; 6] = [0xff; 6];

pub const WINDOW: u32 = 32;
pub const ACK_EVERY: u32 = 8;
pub const RETRANSMIT_US: u64 = 300_000;
/// How long either side waits for the peer at all.
pub const PEER_TIMEOUT_US: u64 = 30_000_000;
/// How long the exchange may take once started.
pub const EXCHANGE_TIMEOUT_US: u64 = 40_000_000;
/// The receiver keeps answering this long after the last frame.
pub const LINGER_US: u64 = 500_000;

/// An initialised network device: receive queue stocked, transmit queue idle.
pub struct Net {
    pub dev: Mmio,
    pub rx: Virtq,
    pub tx: Virtq,
    pub mac: [u8; 6],
    rx_bufs: u64,
    tx_bufs: u64,
    /// Frames refused by `recv` for their length.
    pub bad_len: u64,
}

impl Net {
    pub fn open(dev: Mmio) -> Result<Net, String> {
        if dev.device_id() != virtq::DEVICE_NET {
            return Err(format!("slot {} is not a network device", dev.slot));
        }
        let mut n = Net {
            dev,
            rx: Virtq::new(0, RX_BUFFERS),
            tx: Virtq::new(1, TX_QSIZE),
            mac: [0; 6],
            rx_bufs: dma_alloc(u64::from(RX_BUFFERS) * BUF, 4096),
            tx_bufs: dma_alloc(u64::from(TX_QSIZE) * BUF, 4096),
            bad_len: 0,
        };
        n.reinit()?;
        Ok(n)
    }

    /// (Re-)initialisation: MAC, both queues, DRIVER_OK, every receive
    /// buffer posted.
    pub fn reinit(&mut self) -> Result<(), String> {
        let f = self.dev.negotiate(F_MAC)?;
        if f & F_MAC == 0 {
            return Err("VIRTIO_NET_F_MAC not offered".into());
        }
        self.rx.clear();
        self.tx.clear();
        self.rx.setup(&self.dev)?;
        self.tx.setup(&self.dev)?;
        self.dev.driver_ok();
        let s = self.dev.status();
        if s & (status::DRIVER_OK | status::DEVICE_NEEDS_RESET) != status::DRIVER_OK {
            return Err(format!("Status {s:#x} after DRIVER_OK"));
        }
        for (i, b) in self.mac.iter_mut().enumerate() {
            *b = self.dev.config8(i as u64);
        }
        for i in 0..RX_BUFFERS {
            self.post_rx(i);
        }
        self.rx.notify(&self.dev);
        Ok(())
    }

    /// Offers receive buffer `i` (descriptor `i` is always buffer `i`).
    fn post_rx(&mut self, i: u16) {
        self.rx.set_desc(i, self.rx_bufs + u64::from(i) * BUF, BUF as u32, virtq::DESC_F_WRITE, 0);
        self.rx.push_avail(i);
    }

    /// Takes every received frame (Ethernet header first) and reposts the
    /// buffers, notifying once.
    pub fn recv(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut reposted = false;
        while self.rx.used_idx() != self.rx.last_used {
            virtq::mb();
            let slot = self.rx.last_used % self.rx.size;
            let e = self.rx.used + 4 + 8 * u64::from(slot);
            let (id, len) = (virtq::rd32(e) as u16, virtq::rd32(e + 4) as usize);
            self.rx.last_used = self.rx.last_used.wrapping_add(1);
            if id < RX_BUFFERS {
                if (HDR_LEN + ETH_HLEN..=BUF as usize).contains(&len) {
                    let mut f = vec![0u8; len - HDR_LEN];
                    get(self.rx_bufs + u64::from(id) * BUF + HDR_LEN as u64, &mut f);
                    frames.push(f);
                } else {
                    self.bad_len += 1;
                }
                self.post_rx(id);
                reposted = true;
            }
        }
        if reposted {
            self.rx.notify(&self.dev);
        }
        frames
    }

    /// Transmit buffers the device has finished with become free.
    pub fn reclaim_tx(&mut self) {
        while self.tx.pop_used().is_some() {}
    }

    /// Queues one frame for transmission (no notification); false if no
    /// transmit descriptor is free.
    pub fn queue_tx(&mut self, frame: &[u8]) -> bool {
        self.reclaim_tx();
        if self.tx.free_count() == 0 {
            return false;
        }
        // Each descriptor has its own buffer: fill the one `add` will take
        // before the chain becomes visible to the device.
        let Some(id) = self.tx.next_free() else { return false };
        let buf = self.tx_bufs + u64::from(id) * BUF;
        virtq::fill(buf, 0, HDR_LEN);
        put(buf + HDR_LEN as u64, frame);
        if self.tx.add(&[(buf, (HDR_LEN + frame.len()) as u32, false)]) != Some(id) {
            return false;
        }
        true
    }

    /// Queues and notifies.
    pub fn send(&mut self, frame: &[u8]) -> bool {
        let ok = self.queue_tx(frame);
        self.tx.notify(&self.dev);
        ok
    }
}

fn fnv(bytes: impl Iterator<Item = u8>) -> u32 {
    bytes.fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn pattern_byte(seq: u32, j: usize) -> u8 {
    (seq.wrapping_mul(31) as u8) ^ (j as u8).wrapping_mul(7) ^ ((j >> 8) as u8) ^ 0x5a
}

/// Payload length of DATA frame `seq`: 46..=1500.
pub fn data_len(seq: u32) -> usize {
    MIN_PAYLOAD + (seq as usize * 97) % (MAX_PAYLOAD - MIN_PAYLOAD + 1)
}

/// A frame of the protocol.
pub fn build(dst: [u8; 6], src: [u8; 6], kind: u8, seq: u32, total: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&MAGIC);
    f.push(kind);
    f.push(0);
    f.extend_from_slice(&(len as u16).to_le_bytes());
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&total.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    for j in MSG_HDR..len {
        f.push(pattern_byte(seq, j));
    }
    let p = ETH_HLEN;
    let sum = fnv(f[p..p + 16].iter().chain(&f[p + MSG_HDR..]).copied());
    f[p + 16..p + 20].copy_from_slice(&sum.to_le_bytes());
    f
}

/// A received protocol message.
pub struct Msg {
    pub src: [u8; 6],
    pub kind: u8,
    pub seq: u32,
    pub total: u32,
}

/// Checks a frame completely: Ethernet type, length, magic, checksum and
/// every pattern byte. `Ok(None)` for a frame that is not ours.
pub fn parse(f: &[u8]) -> Result<Option<Msg>, String> {
    if f.len() < ETH_HLEN + MSG_HDR || f[12..14] != ETHERTYPE.to_be_bytes() || f[14..18] != MAGIC {
        return Ok(None);
    }
    let p = &f[ETH_HLEN..];
    let len = usize::from(u16::from_le_bytes([p[6], p[7]]));
    if len != p.len() {
        return Err(format!("length field {len}, frame payload {}", p.len()));
    }
    let seq = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
    let sum = u32::from_le_bytes([p[16], p[17], p[18], p[19]]);
    let want = fnv(p[..16].iter().chain(&p[MSG_HDR..]).copied());
    if sum != want {
        return Err(format!("seq {seq}: checksum {sum:#x}, computed {want:#x}"));
    }
    if let Some(j) = (MSG_HDR..len).find(|&j| p[j] != pattern_byte(seq, j)) {
        return Err(format!("seq {seq}: pattern byte {j} is {:#x}", p[j]));
    }
    let mut src = [0u8; 6];
    src.copy_from_slice(&f[6..12]);
    Ok(Some(Msg { src, kind: p[4], seq, total: u32::from_le_bytes([p[12], p[13], p[14], p[15]]) }))
}

pub fn mac_str(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

/// How much a mode exchanges: N frames, or as many as fit in MS ms.
#[derive(Clone, Copy)]
pub enum Amount {
    Frames(u32),
    ForMs(u64),
}

impl Amount {
    /// The `total` frames carry at first.
    fn total(self) -> u32 {
        match self {
            Amount::Frames(n) => n,
            Amount::ForMs(_) => OPEN,
        }
    }

    /// How long the exchange may take once started.
    fn timeout_us(self) -> u64 {
        match self {
            Amount::Frames(_) => EXCHANGE_TIMEOUT_US,
            Amount::ForMs(ms) => EXCHANGE_TIMEOUT_US + ms.saturating_mul(1000),
        }
    }
}

/// Parses a MAC address `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `send:N` (or `send-for:MS`) with at most `window` frames unacknowledged,
/// to the first receiver that answers (`only`: to that one; several pairs
/// may share the switch).
pub fn mode_send(n: &mut Net, amount: Amount, window: u32, only: Option<[u8; 6]>) {
    let me = n.mac;
    let mut total = amount.total();
    // Handshake: HELLO broadcasts until the receiver answers.
    let start = cpu::counter();
    let mut peer = None;
    let mut acked = 0u32;
    let mut last_hello = 0u64;
    let mut hellos = 0u32;
    let mut corrupt = 0u64;
    while peer.is_none() && cpu::elapsed_us(start) < PEER_TIMEOUT_US {
        let now = cpu::elapsed_us(start);
        if hellos == 0 || now - last_hello >= 20_000 {
            n.send(&build(BROADCAST, me, KIND_HELLO, 0, total, MIN_PAYLOAD));
            hellos += 1;
            last_hello = now;
        }
        for f in n.recv() {
            match parse(&f) {
                Ok(Some(m)) if m.kind == KIND_ACK && only.is_none_or(|p| p == m.src) => {
                    peer = Some(m.src);
                    acked = m.seq;
                }
                Ok(_) => {}
                Err(_) => corrupt += 1,
            }
        }
    }
    let Some(peer) = peer else {
        check!("net-send", false, "no receiver answered {hellos} HELLOs in {} s", PEER_TIMEOUT_US / 1_000_000);
        return;
    };
    println!("NOTE virtio: net-send: receiver {} answered after {hellos} HELLO(s)", mac_str(&peer));
    // The exchange lies between two markers (`scripts/bench.sh --io`).
    let mark = crate::bench::marker();
    let t0 = cpu::counter();
    let mut next = acked;
    // One past the highest sequence number sent (a timed run's total).
    let mut high = next;
    let mut last_end = None;
    let mut last_progress = cpu::counter();
    let (mut sent, mut retransmitted, mut stalls) = (0u64, 0u64, 0u32);
    let mut timed_out = false;
    while acked < total {
        if let Amount::ForMs(ms) = amount {
            if total == OPEN && cpu::elapsed_us(t0) >= ms.saturating_mul(1000) {
                total = high;
            }
            if total != OPEN && last_end.is_none_or(|t| cpu::elapsed_us(t) >= 20_000) {
                n.send(&build(peer, me, KIND_END, total, total, MIN_PAYLOAD));
                last_end = Some(cpu::counter());
            }
        }
        // Fill the window.
        let mut queued = false;
        while next < total && next < acked.saturating_add(window) {
            let f = build(peer, me, KIND_DATA, next, total, data_len(next));
            if !n.queue_tx(&f) {
                break;
            }
            queued = true;
            next += 1;
            high = high.max(next);
            sent += 1;
        }
        if queued {
            n.tx.notify(&n.dev);
        }
        for f in n.recv() {
            match parse(&f) {
                Ok(Some(m)) if m.kind == KIND_ACK && m.src == peer => {
                    if m.seq > acked && m.seq <= total {
                        acked = m.seq;
                        last_progress = cpu::counter();
                    }
                }
                Ok(_) => {}
                Err(_) => corrupt += 1,
            }
        }
        if cpu::elapsed_us(last_progress) > RETRANSMIT_US {
            // Go back N.
            retransmitted += u64::from(next - acked);
            stalls += 1;
            next = acked;
            last_progress = cpu::counter();
        }
        if cpu::elapsed_us(t0) > amount.timeout_us() {
            timed_out = true;
            break;
        }
    }
    let us = cpu::elapsed_us(t0);
    let total = if total == OPEN { high } else { total };
    crate::bench::marker();
    println!("RESULT virtio: net-bench frames={total} transmissions={sent} mark={mark}");
    println!("RESULT virtio: net-sent frames={total} transmissions={sent} retransmitted={retransmitted} stalls={stalls} us={us}");
    check!(
        "net-send",
        !timed_out && corrupt == 0,
        "{acked} of {total} frames acknowledged by {} in {} ms (window {window}, {retransmitted} retransmitted, {corrupt} corrupt acks)",
        mac_str(&peer),
        us / 1000
    );
}

/// `recv:N` (or `recv-for:MS`), pausing `delay_us` before each look at
/// the receive queue (a slow receiver, to try the flow control); from
/// `only`, if given (frames of others count as foreign).
pub fn mode_recv(n: &mut Net, amount: Amount, delay_us: u64, only: Option<[u8; 6]>) {
    let me = n.mac;
    let mut total = amount.total();
    let timed = matches!(amount, Amount::ForMs(_));
    let start = cpu::counter();
    let mut first: Option<u64> = None;
    let mut expected = 0u32;
    let (mut dup, mut gaps, mut corrupt, mut foreign, mut since_ack) = (0u64, 0u64, 0u64, 0u64, 0u32);
    let mut peer = None;
    let mut errors: Vec<String> = Vec::new();
    let mut done_at: Option<u64> = None;
    loop {
        if delay_us > 0 {
            cpu::delay_us(delay_us);
        }
        let frames = n.recv();
        let mut ack_to = None;
        for f in frames {
            let m = match parse(&f) {
                Ok(Some(m)) if only.is_none_or(|p| p == m.src) => m,
                Ok(_) => {
                    foreign += 1;
                    continue;
                }
                Err(e) => {
                    corrupt += 1;
                    if errors.len() < 3 {
                        errors.push(e);
                    }
                    continue;
                }
            };
            // A timed sender's frames say OPEN until it knows how many
            // it sends; the first number it gives holds.
            if timed && total == OPEN && m.total != OPEN {
                total = m.total;
            }
            if m.total != total && !(timed && m.total == OPEN) {
                corrupt += 1;
                if errors.len() < 3 {
                    errors.push(format!("frame says total {}, want {total}", m.total));
                }
                continue;
            }
            match m.kind {
                KIND_HELLO => {
                    if first.is_none() {
                        first = Some(cpu::counter());
                        peer = Some(m.src);
                    }
                    ack_to = Some(m.src);
                }
                KIND_END if timed => {
                    if m.seq != total {
                        corrupt += 1;
                        if errors.len() < 3 {
                            errors.push(format!("END says {} frames, want {total}", m.seq));
                        }
                    }
                    ack_to = Some(m.src);
                }
                KIND_DATA => {
                    if m.seq == expected && expected < total {
                        expected += 1;
                        since_ack += 1;
                        if since_ack >= ACK_EVERY || expected == total {
                            ack_to = Some(m.src);
                        }
                    } else if m.seq < expected {
                        dup += 1;
                        ack_to = Some(m.src);
                    } else {
                        gaps += 1;
                        ack_to = Some(m.src);
                    }
                }
                _ => {}
            }
        }
        if let Some(dst) = ack_to {
            n.send(&build(dst, me, KIND_ACK, expected, total, MIN_PAYLOAD));
            since_ack = 0;
        }
        if expected == total && done_at.is_none() {
            done_at = Some(cpu::counter());
        }
        if let Some(t) = done_at {
            if cpu::elapsed_us(t) > LINGER_US {
                break;
            }
        }
        match first {
            None if cpu::elapsed_us(start) > PEER_TIMEOUT_US => break,
            Some(t) if cpu::elapsed_us(t) > amount.timeout_us() => break,
            _ => {}
        }
    }
    let us = first.zip(done_at).map_or(0, |(a, b)| (b - a) * 1_000_000 / cpu::counter_hz().max(1));
    println!(
        "RESULT virtio: net-received frames={expected} duplicates={dup} gaps={gaps} corrupt={corrupt} foreign={foreign} bad-length={} us={us}",
        n.bad_len
    );
    let peer = peer.map_or(String::from("nobody"), |p| mac_str(&p));
    if expected == total && corrupt == 0 && n.bad_len == 0 {
        check!(
            "net-recv",
            true,
            "{total} frames intact, in order, from {peer} in {} ms ({dup} duplicates, {gaps} out of order, 46..1500-byte payloads)",
            us / 1000
        );
    } else {
        check!(
            "net-recv",
            false,
            "{expected} of {total} frames in order from {peer}; {corrupt} corrupt, {} bad length{}{}",
            n.bad_len,
            if errors.is_empty() { "" } else { ": " },
            errors.join("; ")
        );
    }
    // Flow control: with the window below the posted buffers, the switch
    // never drops a frame, so nothing arrives out of order.
    check!(
        "net-flow-control",
        gaps == 0 && expected == total,
        "{gaps} frames arrived after a gap (dropped predecessors); {RX_BUFFERS} buffers posted, the sender's window {WINDOW} by default"
    );
}
