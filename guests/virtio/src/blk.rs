//! virtio-blk (§5.2) on top of [`crate::virtq`], and the block modes:
//! `write:SEED`, `check:SEED`, `ro`, `stress:MS`.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use testkit::arch::{cpu, gic};
use testkit::hv_abi::hypercall::guest::VIRTIO_SPI_BASE;
use testkit::{check, println};

use crate::virtq::{self, dma_alloc, fill, get, rd8, status, Mmio, Virtq};

pub const F_RO: u64 = 1 << 5;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const SECTOR: u64 = 512;
/// Sectors the write/check modes cover.
pub const PATTERN_SECTORS: u64 = 64;
/// Descriptors in the request queue.
pub const QSIZE: u16 = 16;
/// How long a request may take.
pub const REQUEST_TIMEOUT_US: u64 = 3_000_000;

/// An initialised block device.
pub struct Blk {
    pub dev: Mmio,
    pub q: Virtq,
    pub features: u64,
    pub capacity: u64,
    /// 16-byte request header and the status byte.
    hdr: u64,
    st: u64,
}

/// What one request got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u8,
    pub used_len: u32,
}

impl Blk {
    /// Brings the device in `dev` up: FLUSH (and RO, SIZE_MAX, SEG_MAX if
    /// offered), one queue of [`QSIZE`], DRIVER_OK.
    pub fn open(dev: Mmio) -> Result<Blk, String> {
        Blk::open_sized(dev, QSIZE)
    }

    /// [`Blk::open`] with a queue of `qsize` descriptors (a power of two).
    pub fn open_sized(dev: Mmio, qsize: u16) -> Result<Blk, String> {
        if dev.device_id() != virtq::DEVICE_BLOCK {
            return Err(format!("slot {} is not a block device", dev.slot));
        }
        let mut b = Blk {
            dev,
            q: Virtq::new(0, qsize),
            features: 0,
            capacity: 0,
            hdr: dma_alloc(16, 16),
            st: dma_alloc(1, 16),
        };
        b.reinit()?;
        Ok(b)
    }

    /// Full (re-)initialisation after a reset, on the same queue memory.
    pub fn reinit(&mut self) -> Result<(), String> {
        self.features = self.dev.negotiate(F_RO | F_FLUSH | F_SIZE_MAX | F_SEG_MAX)?;
        self.q.clear();
        self.q.setup(&self.dev)?;
        self.dev.driver_ok();
        let s = self.dev.status();
        let want = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        if s != want {
            return Err(format!("Status {s:#x} after DRIVER_OK (want {want:#x})"));
        }
        self.capacity = u64::from(self.dev.config32(0)) | u64::from(self.dev.config32(4)) << 32;
        Ok(())
    }

    pub fn read_only(&self) -> bool {
        self.features & F_RO != 0
    }

    /// One request: header, `data` buffers (device-writable for reads),
    /// status byte. Waits for the device to return it, polling.
    pub fn request(&mut self, kind: u32, sector: u64, data: &[(u64, u32)]) -> Result<Answer, String> {
        self.request_waiting(kind, sector, data, |q| q.wait_used(REQUEST_TIMEOUT_US))
    }

    /// [`Blk::request`], waiting for the answer with `wait` (the used
    /// element, or `None` after [`REQUEST_TIMEOUT_US`]).
    pub fn request_waiting(
        &mut self,
        kind: u32,
        sector: u64,
        data: &[(u64, u32)],
        wait: impl FnOnce(&mut Virtq) -> Option<(u16, u32)>,
    ) -> Result<Answer, String> {
        virtq::wr32(self.hdr, kind);
        virtq::wr32(self.hdr + 4, 0);
        virtq::wr64(self.hdr + 8, sector);
        virtq::wr8(self.st, 0xff);
        let mut chain = vec![(self.hdr, 16, false)];
        for &(a, l) in data {
            chain.push((a, l, kind == T_IN));
        }
        chain.push((self.st, 1, true));
        let head = self.q.add(&chain).ok_or("no free descriptors")?;
        self.q.notify(&self.dev);
        match wait(&mut self.q) {
            Some((id, len)) if id == head => Ok(Answer { status: rd8(self.st), used_len: len }),
            Some((id, _)) => Err(format!("used ring returned id {id}, want {head}")),
            None => Err(format!(
                "no answer in {} s (Status {:#x}, used.idx {})",
                REQUEST_TIMEOUT_US / 1_000_000,
                self.dev.status(),
                self.q.used_idx()
            )),
        }
    }

    /// Reads `count` sectors at `sector` into `buf`, in `pieces`
    /// descriptors; the status must be OK with used length data + 1.
    pub fn read(&mut self, sector: u64, count: u64, buf: u64, pieces: u64) -> Result<(), String> {
        let segs = split(buf, count * SECTOR, pieces);
        let a = self.request(T_IN, sector, &segs)?;
        let want_len = (count * SECTOR + 1) as u32;
        if a.status != S_OK || a.used_len != want_len {
            return Err(format!(
                "read of {count} sector(s) at {sector}: status {} used length {} (want 0, {want_len})",
                a.status, a.used_len
            ));
        }
        Ok(())
    }

    /// Writes `count` sectors from `buf` at `sector`.
    pub fn write(&mut self, sector: u64, count: u64, buf: u64, pieces: u64) -> Result<(), String> {
        let segs = split(buf, count * SECTOR, pieces);
        let a = self.request(T_OUT, sector, &segs)?;
        if a.status != S_OK {
            return Err(format!("write of {count} sector(s) at {sector}: status {}", a.status));
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), String> {
        if self.features & F_FLUSH == 0 {
            return Err("FLUSH not offered".into());
        }
        let a = self.request(T_FLUSH, 0, &[])?;
        if a.status != S_OK {
            return Err(format!("flush: status {}", a.status));
        }
        Ok(())
    }
}

/// `len` bytes at `buf` as `pieces` descriptors of (nearly) equal size.
pub fn split(buf: u64, len: u64, pieces: u64) -> Vec<(u64, u32)> {
    let pieces = pieces.clamp(1, len.max(1));
    let step = len.div_ceil(pieces);
    let mut out = Vec::new();
    let mut off = 0;
    while off < len {
        let n = step.min(len - off);
        out.push((buf + off, n as u32));
        off += n;
    }
    out
}

/// SplitMix64: the pattern's generator.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `count` sectors at `buf` with the pattern of `seed` for disk
/// sectors `sector..`.
pub fn fill_pattern(buf: u64, seed: u64, sector: u64, count: u64) {
    for s in 0..count {
        for w in 0..SECTOR / 8 {
            let v = mix(seed ^ ((sector + s) << 20) ^ w);
            virtq::wr64(buf + s * SECTOR + w * 8, v);
        }
    }
}

/// Compares `count` sectors at `buf` with the pattern: `None` if equal,
/// else a description of the first difference and how many sectors differ.
pub fn compare_pattern(buf: u64, seed: u64, sector: u64, count: u64) -> Option<String> {
    let mut bad = 0;
    let mut first = None;
    let mut zero_sectors = 0;
    for s in 0..count {
        let mut differs = false;
        let mut zero = true;
        for w in 0..SECTOR / 8 {
            let got = rd64(buf + s * SECTOR + w * 8);
            let want = mix(seed ^ ((sector + s) << 20) ^ w);
            zero &= got == 0;
            if got != want && !differs {
                differs = true;
                if first.is_none() {
                    first = Some(format!("sector {} word {w}: {got:#018x}, want {want:#018x}", sector + s));
                }
            }
        }
        bad += u64::from(differs);
        zero_sectors += u64::from(zero);
    }
    first.map(|f| format!("{bad} of {count} sectors differ ({zero_sectors} all zero); first: {f}"))
}

fn rd64(a: u64) -> u64 {
    u64::from(virtq::rd32(a)) | u64::from(virtq::rd32(a + 4)) << 32
}

/// The first writable and the first read-only block device.
pub fn pick(devs: &[Mmio]) -> (Option<Blk>, Option<Blk>) {
    let (mut rw, mut ro) = (None, None);
    for d in devs.iter().filter(|d| d.device_id() == virtq::DEVICE_BLOCK) {
        match Blk::open(*d) {
            Ok(b) if b.read_only() => {
                if ro.is_none() {
                    ro = Some(b);
                }
            }
            Ok(b) => {
                if rw.is_none() {
                    rw = Some(b);
                }
            }
            Err(e) => check!("blk-init", false, "slot {}: {e}", d.slot),
        }
    }
    (rw, ro)
}

/// `write:SEED`: pattern to sectors 0..63 (8 requests of 8 sectors, two
/// descriptors each), FLUSH, read back in one request of 4 descriptors.
pub fn mode_write(b: &mut Blk, seed: u64) {
    let n = PATTERN_SECTORS;
    let buf = dma_alloc(n * SECTOR, 4096);
    let back = dma_alloc(n * SECTOR, 4096);
    fill_pattern(buf, seed, 0, n);
    let run = (|| -> Result<(), String> {
        for s in (0..n).step_by(8) {
            b.write(s, 8, buf + s * SECTOR, 2)?;
        }
        b.flush()?;
        fill(back, 0xa5, (n * SECTOR) as usize);
        b.read(0, n, back, 4)?;
        match compare_pattern(back, seed, 0, n) {
            None => Ok(()),
            Some(d) => Err(format!("read back: {d}")),
        }
    })();
    match run {
        Ok(()) => {
            check!(
                "blk-write",
                true,
                "{n} sectors written (8 requests), flushed, read back identical (seed {seed}, slot {})",
                b.dev.slot
            );
            println!("RESULT virtio: blk-written seed={seed}");
        }
        Err(e) => check!("blk-write", false, "{e}"),
    }
}

/// `check:SEED`: sectors 0..63 must hold the pattern (read in two requests).
pub fn mode_check(b: &mut Blk, seed: u64) {
    let n = PATTERN_SECTORS;
    let back = dma_alloc(n * SECTOR, 4096);
    fill(back, 0xa5, (n * SECTOR) as usize);
    let run = b.read(0, n / 2, back, 1).and_then(|()| b.read(n / 2, n / 2, back + n / 2 * SECTOR, 3));
    match run {
        Err(e) => check!("blk-check", false, "{e}"),
        Ok(()) => match compare_pattern(back, seed, 0, n) {
            None => check!("blk-check", true, "{n} sectors hold the pattern of seed {seed} (slot {})", b.dev.slot),
            Some(d) => check!("blk-check", false, "seed {seed}: {d}"),
        },
    }
}

/// Used-buffer notifications: with `VIRTQ_AVAIL_F_NO_INTERRUPT` clear a
/// completed request sets InterruptStatus bit 0, InterruptACK clears it,
/// and with the flag set (as this driver runs otherwise) it stays clear.
pub fn interrupt_status(b: &mut Blk) {
    let buf = dma_alloc(SECTOR, 4096);
    let run = (|| -> Result<String, String> {
        let isr0 = b.dev.read(virtq::reg::INTERRUPT_STATUS);
        virtq::wr16(b.q.avail, 0);
        b.read(0, 1, buf, 1)?;
        let isr1 = b.dev.read(virtq::reg::INTERRUPT_STATUS);
        b.dev.write(virtq::reg::INTERRUPT_ACK, isr1);
        let isr2 = b.dev.read(virtq::reg::INTERRUPT_STATUS);
        virtq::wr16(b.q.avail, virtq::AVAIL_F_NO_INTERRUPT);
        b.read(0, 1, buf, 1)?;
        let isr3 = b.dev.read(virtq::reg::INTERRUPT_STATUS);
        if isr0 != 0 || isr1 != virtq::ISR_USED_BUFFER || isr2 != 0 || isr3 != 0 {
            return Err(format!(
                "InterruptStatus {isr0:#x} before, {isr1:#x} after a request (want 0x1), {isr2:#x} after ACK, {isr3:#x} after a request with NO_INTERRUPT (want 0)"
            ));
        }
        Ok("used-buffer bit set by a request, cleared by InterruptACK, not set with VIRTQ_AVAIL_F_NO_INTERRUPT".into())
    })();
    match run {
        Ok(d) => check!("blk-interrupt-status", true, "{d}"),
        Err(e) => check!("blk-interrupt-status", false, "{e}"),
    }
}

static IRQ_BASE: AtomicU64 = AtomicU64::new(0);
static IRQ_COUNT: AtomicU32 = AtomicU32::new(0);
static IRQ_ISR: AtomicU32 = AtomicU32::new(0);

/// Routes the used-buffer interrupt of `b`'s slot (INTID 48 + slot) to
/// [`on_irq`] and enables it; returns the INTID.
pub fn irq_on(b: &Blk) -> Result<u32, String> {
    let intid = 32 + VIRTIO_SPI_BASE + b.dev.slot as u32;
    IRQ_BASE.store(b.dev.base, Ordering::SeqCst);
    IRQ_COUNT.store(0, Ordering::SeqCst);
    IRQ_ISR.store(0, Ordering::SeqCst);
    gic::set_handler(intid, on_irq);
    // Dom0 signals used buffers as edges (the device tree says
    // edge-rising), so requests made earlier with the SPI disabled left it
    // pending: forget that before counting.
    gic::clear_pending_spi(intid)
        .and_then(|()| gic::enable_spi(intid, false))
        .map_err(|e| format!("INTID {intid}: {e}"))?;
    Ok(intid)
}

/// The device's interrupt: count it, acknowledge what InterruptStatus says.
fn on_irq(_intid: u32) {
    let dev = Mmio { base: IRQ_BASE.load(Ordering::SeqCst), slot: 0 };
    let isr = dev.read(virtq::reg::INTERRUPT_STATUS);
    dev.write(virtq::reg::INTERRUPT_ACK, isr);
    IRQ_ISR.fetch_or(isr, Ordering::SeqCst);
    IRQ_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Used-buffer interrupts delivered: the slot's SPI (INTID 48 + slot,
/// edge-rising as the device tree says) enabled, notifications on, each of
/// 3 requests must raise one interrupt, whose handler acknowledges it.
pub fn interrupts(b: &mut Blk) {
    let buf = dma_alloc(SECTOR, 4096);
    let intid = match irq_on(b) {
        Ok(i) => i,
        Err(e) => return check!("blk-irq", false, "{e}"),
    };
    let run = (|| -> Result<String, String> {
        virtq::wr16(b.q.avail, 0);
        for i in 1..=3u32 {
            b.read(0, 1, buf, 1)?;
            if !testkit::wait_until(1_000_000, || IRQ_COUNT.load(Ordering::SeqCst) >= i) {
                return Err(format!("request {i}: {} interrupt(s) in 1 s", IRQ_COUNT.load(Ordering::SeqCst)));
            }
        }
        cpu::delay_us(10_000);
        let (n, isr) = (IRQ_COUNT.load(Ordering::SeqCst), IRQ_ISR.load(Ordering::SeqCst));
        let left = b.dev.read(virtq::reg::INTERRUPT_STATUS);
        if n != 3 || isr != virtq::ISR_USED_BUFFER || left != 0 {
            return Err(format!("{n} interrupts (want 3), InterruptStatus seen {isr:#x} (want 0x1), {left:#x} left"));
        }
        Ok(format!("3 requests, 3 interrupts on INTID {intid} (edge), each InterruptStatus 0x1 acknowledged"))
    })();
    virtq::wr16(b.q.avail, virtq::AVAIL_F_NO_INTERRUPT);
    let _ = gic::disable_spi(intid);
    match run {
        Ok(d) => check!("blk-irq", true, "{d}"),
        Err(e) => check!("blk-irq", false, "{e}"),
    }
}

/// Requests past the disk's end must get IOERR (and the disk's last
/// sector must still be readable).
pub fn past_end(b: &mut Blk) {
    let cap = b.capacity;
    let buf = dma_alloc(2 * SECTOR, 4096);
    let mut problems: Vec<String> = Vec::new();
    let cases: [(&str, u32, u64, u64); 4] = [
        ("read at capacity", T_IN, cap, 1),
        ("read across the end", T_IN, cap - 1, 2),
        ("write at capacity", T_OUT, cap, 1),
        ("read at 2^63", T_IN, 1 << 63, 1),
    ];
    for (what, kind, sector, count) in cases {
        match b.request(kind, sector, &[(buf, (count * SECTOR) as u32)]) {
            Ok(a) if a.status == S_IOERR && a.used_len == 1 => {}
            Ok(a) => problems.push(format!("{what}: status {} used length {} (want IOERR, 1)", a.status, a.used_len)),
            Err(e) => problems.push(format!("{what}: {e}")),
        }
    }
    if let Err(e) = b.read(cap - 1, 1, buf, 1) {
        problems.push(format!("last sector: {e}"));
    }
    check!(
        "blk-past-end",
        problems.is_empty(),
        "capacity {cap} sectors; {}",
        if problems.is_empty() {
            String::from("reads/writes at and across the end: IOERR; the last sector reads OK")
        } else {
            problems.join("; ")
        }
    );
}

/// `ro`: the read-only disk offers RO; a write gets IOERR and changes nothing.
pub fn mode_ro(b: Option<&mut Blk>) {
    let Some(b) = b else {
        check!("blk-ro", false, "no block device offers VIRTIO_BLK_F_RO");
        return;
    };
    let before = dma_alloc(SECTOR, 4096);
    let after = dma_alloc(SECTOR, 4096);
    let junk = dma_alloc(SECTOR, 4096);
    fill(junk, 0x5a, SECTOR as usize);
    let run = (|| -> Result<String, String> {
        b.read(0, 1, before, 1)?;
        let a = b.request(T_OUT, 0, &[(junk, SECTOR as u32)])?;
        if a.status != S_IOERR {
            return Err(format!("write: status {} (want IOERR)", a.status));
        }
        b.read(0, 1, after, 1)?;
        let (mut x, mut y) = ([0u8; SECTOR as usize], [0u8; SECTOR as usize]);
        get(before, &mut x);
        get(after, &mut y);
        if x != y {
            return Err("sector 0 changed after the refused write".into());
        }
        Ok(format!("slot {}: RO offered and negotiated, write -> IOERR, sector 0 unchanged, reads OK", b.dev.slot))
    })();
    match run {
        Ok(d) => check!("blk-ro", true, "{d}"),
        Err(e) => check!("blk-ro", false, "{e}"),
    }
}

/// One round of `stress` or `survive` from its random number `key`: up to
/// `most` sectors below `max`; the pattern to write goes into `buf`, `back`
/// (for the read) is cleared. Returns the random bits, the count, the
/// sector and the pattern's seed.
fn prepare_round(key: u64, most: u64, max: u64, buf: u64, back: u64) -> (u64, u64, u64, u64) {
    let r = mix(key);
    let count = 1 + r % most;
    let sector = (r >> 8) % (max - count);
    let seed = r >> 1;
    fill_pattern(buf, seed, sector, count);
    fill(back, 0, (count * SECTOR) as usize);
    (r, count, sector, seed)
}

/// `stress:MS`: for MS milliseconds, writes a pattern to a random run of
/// sectors, reads it back and compares; a FLUSH every 8 rounds.
pub fn mode_stress(b: &mut Blk, ms: u64, salt: u64) {
    let max = b.capacity.min(4096);
    let buf = dma_alloc(16 * SECTOR, 4096);
    let back = dma_alloc(16 * SECTOR, 4096);
    let start = cpu::counter();
    let mut note = start;
    let (mut rounds, mut sectors) = (0u64, 0u64);
    let mut failure = None;
    while cpu::elapsed_us(start) < ms * 1000 {
        let (r, count, sector, seed) = prepare_round(salt ^ rounds, 16, max, buf, back);
        let step = b
            .write(sector, count, buf, 1 + (r >> 4) % 3)
            .and_then(|()| if rounds % 8 == 7 { b.flush() } else { Ok(()) })
            .and_then(|()| b.read(sector, count, back, 1 + (r >> 6) % 3))
            .and_then(|()| match compare_pattern(back, seed, sector, count) {
                None => Ok(()),
                Some(d) => Err(d),
            });
        if let Err(e) = step {
            failure = Some(format!("round {rounds}: {e}"));
            break;
        }
        rounds += 1;
        sectors += count;
        if cpu::elapsed_us(note) >= 1_000_000 {
            note = cpu::counter();
            println!("NOTE virtio: blk-stress: {rounds} rounds");
        }
    }
    let us = cpu::elapsed_us(start);
    match failure {
        None => check!(
            "blk-stress",
            rounds > 0,
            "{rounds} rounds, {sectors} sectors written and read back identical in {} ms",
            us / 1000
        ),
        Some(e) => check!("blk-stress", false, "{e}"),
    }
    println!("RESULT virtio: blk-stress rounds={rounds} sectors={sectors} us={us}");
}

/// `survive:MS`: as `stress`, for MS milliseconds, but a request answered
/// IOERR is expected while dom0's disk does not answer: the round is
/// counted and the next one tried. Fails on anything else (no answer at
/// all, wrong data read back after both the write and the read were OK),
/// if no IO error was seen, or if fewer than 10 rounds passed after the
/// last one. Prints, per run of errors, how long its first request waited
/// (dom0's disk timeout, or less when dom0 already knows the disk is
/// stalled) and the run's length.
pub fn mode_survive(b: &mut Blk, ms: u64, salt: u64) {
    let max = b.capacity.min(4096);
    let buf = dma_alloc(16 * SECTOR, 4096);
    let back = dma_alloc(16 * SECTOR, 4096);
    let start = cpu::counter();
    let (mut rounds, mut errors, mut ok_since_error) = (0u64, 0u64, 0u64);
    let mut first_wait_ms = None;
    let mut error_run: Option<(u64, u64)> = None; // (start counter, errors)
    let mut failure = None;
    // Answered with a status: OK, or IOERR (Err(true)); anything else is a failure.
    let step = |b: &mut Blk, write: bool, sector: u64, count: u64| -> Result<bool, String> {
        let a = if write {
            b.request(T_OUT, sector, &[(buf, (count * SECTOR) as u32)])?
        } else {
            b.request(T_IN, sector, &[(back, (count * SECTOR) as u32)])?
        };
        match a.status {
            S_OK => Ok(true),
            S_IOERR => Ok(false),
            s => Err(format!("status {s}")),
        }
    };
    while cpu::elapsed_us(start) < ms * 1000 {
        let (_, count, sector, seed) = prepare_round(salt ^ rounds, 8, max, buf, back);
        let asked = cpu::counter();
        let outcome = step(b, true, sector, count).and_then(|ok| if ok { step(b, false, sector, count) } else { Ok(false) });
        match outcome {
            Err(e) => {
                failure = Some(format!("round {rounds}: {e}"));
                break;
            }
            Ok(true) => {
                if let Some(d) = compare_pattern(back, seed, sector, count) {
                    failure = Some(format!("round {rounds}: {d}"));
                    break;
                }
                if let Some((since, n)) = error_run.take() {
                    println!(
                        "NOTE virtio: blk-survive: {n} request(s) failed with IOERR for {} ms; OK again at round {rounds}",
                        cpu::elapsed_us(since) / 1000
                    );
                }
                ok_since_error += 1;
            }
            Ok(false) => {
                errors += 1;
                ok_since_error = 0;
                match &mut error_run {
                    Some((_, n)) => *n += 1,
                    None => {
                        let waited = cpu::elapsed_us(asked) / 1000;
                        first_wait_ms.get_or_insert(waited);
                        println!("NOTE virtio: blk-survive: IOERR at round {rounds}, after waiting {waited} ms");
                        error_run = Some((asked, 1));
                    }
                }
                // Do not flood dom0 with requests it fails at once.
                let pause = cpu::counter();
                while cpu::elapsed_us(pause) < 2000 {
                    core::hint::spin_loop();
                }
            }
        }
        rounds += 1;
    }
    let detail = format!(
        "{rounds} rounds, {errors} IOERR, first IOERR after {} ms, {ok_since_error} verified rounds after the last",
        first_wait_ms.map_or(-1, |m| m as i64)
    );
    match failure {
        Some(e) => check!("blk-survive", false, "{e} ({detail})"),
        None => check!("blk-survive", errors > 0 && ok_since_error >= 10, "{detail}"),
    }
    println!(
        "RESULT virtio: blk-survive rounds={rounds} errors={errors} first_error_ms={} ok_after={ok_since_error}",
        first_wait_ms.map_or(-1, |m| m as i64)
    );
}
