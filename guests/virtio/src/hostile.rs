//! `virtio.hostile=1`: a driver breaking the rules against its own
//! devices, each case with the answer hv-virtio defines (virtio/src/lib.rs,
//! queue.rs, mmio.rs, block.rs, net.rs):
//!
//! * a broken queue — `next` out of range, a descriptor loop, an INDIRECT
//!   descriptor (feature not offered), avail.idx running ahead by more than
//!   the queue size, a head out of range, the descriptor table or the used
//!   ring outside RAM — sets DEVICE_NEEDS_RESET (Status bit 0x40) with the
//!   configuration-change bit (2) in InterruptStatus, serves nothing more
//!   (and keeps 0x40 whatever the driver writes) until the driver resets the
//!   device; after the reset and a new initialisation a request works;
//! * a malformed request in a sound queue — a buffer outside RAM (below it,
//!   past its end, across its end, wrapping the address space), an
//!   oversized or non-sector length, readable after writable descriptors —
//!   fails with VIRTIO_BLK_S_IOERR and used length 1, writes nothing to
//!   the disk; an unknown type gets UNSUPP; a request without a writable
//!   status byte (or with it outside RAM) comes back with used length 0;
//! * register misuse — FEATURES_OK with an unoffered feature, without
//!   VERSION_1, or with a bit in a feature word above 1 is not kept;
//!   QueueNum not a power of two, above QueueNumMax or 0 makes QueueReady
//!   refuse; queue registers written while the queue is ready are ignored;
//!   a queue that does not exist reads QueueNumMax 0 and cannot be made
//!   ready; a 64-bit access to a register or the configuration space aborts;
//! * with a network device too: transmit buffers outside RAM, runts and
//!   oversized frames are consumed and dropped (used length 0) with the
//!   queue sound, and an avail.idx jump on the transmit queue needs a reset.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use testkit::arch::exception::probe_read;
use testkit::{check, wait_until};

use crate::blk::{self, Answer, Blk, SECTOR, S_IOERR, S_UNSUPP, T_IN, T_OUT};
use crate::net::{self, Net};
use crate::virtq::{
    self, dma_alloc, reg, status, Mmio, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, F_INDIRECT_DESC, F_VERSION_1,
    ISR_CONFIG_CHANGE,
};

/// Scratch memory for the cases.
struct Scratch {
    /// A read request header for sector 0.
    hdr: u64,
    st: u64,
    data: u64,
    /// Sector-sized buffers for before/after comparisons.
    a: u64,
    b: u64,
}

/// Where guest RAM is: `[base, end)`.
#[derive(Clone, Copy)]
pub struct Ram {
    pub base: u64,
    pub end: u64,
}

/// Waits up to 1 s for DEVICE_NEEDS_RESET: `Ok((Status, InterruptStatus))`,
/// or `Err(Status)`.
fn wait_needs_reset(dev: &Mmio) -> Result<(u32, u32), u32> {
    let mut st = 0;
    if wait_until(1_000_000, || {
        st = dev.status();
        st & status::DEVICE_NEEDS_RESET != 0
    }) {
        Ok((st, dev.read(reg::INTERRUPT_STATUS)))
    } else {
        Err(st)
    }
}

/// Reset (Status and InterruptStatus must read 0), initialise again, and
/// one read must work.
fn recover(b: &mut Blk, s: &Scratch) -> Result<(), String> {
    b.dev.reset()?;
    let isr = b.dev.read(reg::INTERRUPT_STATUS);
    if isr != 0 {
        return Err(format!("InterruptStatus {isr:#x} after the reset"));
    }
    b.reinit()?;
    b.read(0, 1, s.a, 1).map_err(|e| format!("after the reset: {e}"))
}

/// A check of the broken state, before the recovery.
type Probe = fn(&mut Blk, &Scratch) -> Result<String, String>;

/// A case that must break the queue: `f` does the damage (and notifies);
/// `sticky` (if given) checks the broken state before the recovery.
fn breaking(b: &mut Blk, s: &Scratch, name: &str, what: &str, f: impl FnOnce(&mut Blk), sticky: Option<Probe>) {
    f(b);
    let result = match wait_needs_reset(&b.dev) {
        Err(st) => Err(format!("Status {st:#x}: no DEVICE_NEEDS_RESET within 1 s")),
        Ok((st, isr)) => {
            let mut detail = format!("Status {st:#x} (DEVICE_NEEDS_RESET), InterruptStatus {isr:#x}");
            if isr & ISR_CONFIG_CHANGE == 0 {
                Err(format!("{detail}: configuration-change bit not set"))
            } else if b.q.used_idx() != b.q.last_used {
                Err(format!(
                    "{detail}: the device returned a chain (used.idx {}, {} taken)",
                    b.q.used_idx(),
                    b.q.last_used
                ))
            } else {
                let extra = match sticky {
                    Some(g) => g(b, s).map(|d| {
                        detail.push_str("; ");
                        detail.push_str(&d);
                    }),
                    None => Ok(()),
                };
                match extra.and_then(|()| recover(b, s)) {
                    Ok(()) => Ok(detail),
                    Err(e) => Err(format!("{detail}: {e}")),
                }
            }
        }
    };
    match result {
        Ok(d) => check!(name, true, "{what}: {d}; reset and re-initialised, a read works again"),
        Err(e) => {
            check!(name, false, "{what}: {e}");
            // Leave the device usable for the next case if we can.
            let _ = recover(b, s);
        }
    }
}

/// While the device needs a reset: a good request is not served, and a
/// Status write without the bit does not clear it.
fn needs_reset_is_sticky(b: &mut Blk, s: &Scratch) -> Result<String, String> {
    let used = b.q.used_idx();
    put_read_chain(b, s, 0);
    b.q.push_avail(0);
    b.q.notify(&b.dev);
    let all = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
    b.dev.write(reg::STATUS, all);
    // The reads below are answered after dom0 handled the writes above.
    let st = b.dev.status();
    testkit::arch::cpu::delay_us(20_000);
    if b.q.used_idx() != used {
        return Err("a request was served while the device needed a reset".into());
    }
    if st & status::DEVICE_NEEDS_RESET == 0 {
        return Err(format!("Status {st:#x} after writing {all:#x}: DEVICE_NEEDS_RESET cleared"));
    }
    Ok(format!("a good request then was not served and Status {all:#x} written read {st:#x}"))
}

/// A good read request of sector 0 in descriptors head, head+1, head+2.
fn put_read_chain(b: &Blk, s: &Scratch, head: u16) {
    b.q.set_desc(head, s.hdr, 16, DESC_F_NEXT, head + 1);
    b.q.set_desc(head + 1, s.data, SECTOR as u32, DESC_F_WRITE | DESC_F_NEXT, head + 2);
    b.q.set_desc(head + 2, s.st, 1, DESC_F_WRITE, 0);
}

/// A request that must fail on its own: `Answer` as wanted, the device
/// still live.
fn failing(b: &mut Blk, what: &str, kind: u32, sector: u64, segs: &[(u64, u32)], want: Answer) -> Result<(), String> {
    let a = b.request(kind, sector, segs).map_err(|e| format!("{what}: {e}"))?;
    if a != want {
        return Err(format!(
            "{what}: status {} used length {} (want {}, {})",
            a.status, a.used_len, want.status, want.used_len
        ));
    }
    let st = b.dev.status();
    if st & status::DEVICE_NEEDS_RESET != 0 {
        return Err(format!("{what}: Status {st:#x}: the queue broke"));
    }
    Ok(())
}

const IOERR: Answer = Answer { status: S_IOERR, used_len: 1 };

fn sector_bytes(a: u64) -> [u8; SECTOR as usize] {
    let mut x = [0u8; SECTOR as usize];
    virtq::get(a, &mut x);
    x
}

fn report(name: &str, r: Result<String, String>) {
    match r {
        Ok(d) => check!(name, true, "{d}"),
        Err(e) => check!(name, false, "{e}"),
    }
}

pub fn run(b: &mut Blk, net: Option<&mut Net>, ram: Ram) {
    let start = testkit::arch::cpu::counter();
    let s = Scratch {
        hdr: dma_alloc(16, 16),
        st: dma_alloc(16, 16),
        data: dma_alloc(4 * SECTOR, 4096),
        a: dma_alloc(SECTOR, 4096),
        b: dma_alloc(SECTOR, 4096),
    };
    virtq::wr32(s.hdr, T_IN);
    virtq::wr64(s.hdr + 8, 0);
    let qsize = b.q.size;

    // ---- malformed requests in a sound queue ------------------------------
    let outside = [("below RAM", 0x1000u64), ("past RAM", ram.end), ("wrapping", u64::MAX - 255)];
    report(
        "hostile-buffer-outside-ram",
        (|| {
            // A marker in sector 5, so "nothing written" is visible.
            blk::fill_pattern(s.a, 0x600d, 5, 1);
            b.write(5, 1, s.a, 1)?;
            for (what, addr) in outside {
                failing(b, &format!("read into {what} {addr:#x}"), T_IN, 5, &[(addr, SECTOR as u32)], IOERR)?;
                failing(b, &format!("write from {what} {addr:#x}"), T_OUT, 5, &[(addr, SECTOR as u32)], IOERR)?;
            }
            // Readable data straddling the end of RAM (the device only reads it).
            failing(b, "write from across the end of RAM", T_OUT, 5, &[(ram.end - 256, SECTOR as u32)], IOERR)?;
            b.read(5, 1, s.b, 1)?;
            if sector_bytes(s.a) != sector_bytes(s.b) {
                return Err("sector 5 changed by a failed write".into());
            }
            Ok(format!(
            "data buffers at {:#x}, {:#x}, {:#x} and across the end of RAM: IOERR, used length 1, sector unchanged, queue sound",
            outside[0].1, outside[1].1, outside[2].1
        ))
        })(),
    );
    report(
        "hostile-oversized",
        (|| {
            failing(b, "write of 2 GiB", T_OUT, 0, &[(ram.base, 0x8000_0000)], IOERR)?;
            failing(b, "read of 4 GiB - 1 outside RAM", T_IN, 0, &[(ram.end, u32::MAX)], IOERR)?;
            failing(b, "read of 100 bytes", T_IN, 0, &[(s.data, 100)], IOERR)?;
            failing(b, "write of 513 bytes", T_OUT, 0, &[(s.data, 513)], IOERR)?;
            Ok("2 GiB and 4 GiB data lengths, 100 and 513 bytes: IOERR, used length 1, queue sound".into())
        })(),
    );
    report(
        "hostile-request-shape",
        (|| {
            // Readable after writable.
            virtq::wr8(s.st, 0xff);
            let head = b.q.add(&[(s.hdr, 16, false), (s.data, 512, true), (s.data + 512, 16, false), (s.st, 1, true)]);
            b.q.notify(&b.dev);
            match (head, b.q.wait_used(blk::REQUEST_TIMEOUT_US)) {
                (Some(h), Some((id, len))) if id == h && len == 1 && virtq::rd8(s.st) == S_IOERR => {}
                (_, got) => return Err(format!("misordered chain: got {got:?}, status {}", virtq::rd8(s.st))),
            }
            // Unknown request type.
            failing(b, "type 0x77", 0x77, 0, &[], Answer { status: S_UNSUPP, used_len: 1 })?;
            // No writable byte: nothing to answer in.
            let head = b.q.add(&[(s.hdr, 16, false)]);
            b.q.notify(&b.dev);
            match (head, b.q.wait_used(blk::REQUEST_TIMEOUT_US)) {
                (Some(h), Some((id, 0))) if id == h => {}
                (_, got) => return Err(format!("header-only chain: got {got:?} (want used length 0)")),
            }
            // The status byte outside RAM.
            let head = b.q.add(&[(s.hdr, 16, false), (s.data, 512, true), (ram.end, 1, true)]);
            b.q.notify(&b.dev);
            match (head, b.q.wait_used(blk::REQUEST_TIMEOUT_US)) {
                (Some(h), Some((id, 0))) if id == h => {}
                (_, got) => return Err(format!("status byte outside RAM: got {got:?} (want used length 0)")),
            }
            let st = b.dev.status();
            if st & status::DEVICE_NEEDS_RESET != 0 {
                return Err(format!("Status {st:#x}: the queue broke"));
            }
            b.read(0, 1, s.a, 1)?;
            Ok("readable after writable: IOERR; type 0x77: UNSUPP; no status byte, or outside RAM: used length 0; queue sound".into())
        })(),
    );

    // ---- broken queues -------------------------------------------------------
    breaking(
        b,
        &s,
        "hostile-next-out-of-range",
        &format!("next = 200 in a queue of {qsize}"),
        |b| {
            b.q.set_desc(0, s.hdr, 16, DESC_F_NEXT, 200);
            b.q.push_avail(0);
            b.q.notify(&b.dev);
        },
        None,
    );
    breaking(
        b,
        &s,
        "hostile-loop",
        "descriptors 0 -> 1 -> 0",
        |b| {
            b.q.set_desc(0, s.hdr, 16, DESC_F_NEXT, 1);
            b.q.set_desc(1, s.data, 512, DESC_F_WRITE | DESC_F_NEXT, 0);
            b.q.push_avail(0);
            b.q.notify(&b.dev);
        },
        None,
    );
    breaking(
        b,
        &s,
        "hostile-indirect",
        "VIRTQ_DESC_F_INDIRECT (feature not offered)",
        |b| {
            b.q.set_desc(0, s.hdr, 16, DESC_F_NEXT, 1);
            b.q.set_desc(1, s.data, 48, DESC_F_INDIRECT, 0);
            b.q.push_avail(0);
            b.q.notify(&b.dev);
        },
        None,
    );
    breaking(
        b,
        &s,
        "hostile-avail-jump",
        &format!("avail.idx jumps by {} in a queue of {qsize}", qsize + 1),
        |b| {
            let idx = b.q.avail_idx.wrapping_add(qsize + 1);
            b.q.set_avail_idx(idx);
            b.q.notify(&b.dev);
        },
        Some(needs_reset_is_sticky),
    );
    breaking(
        b,
        &s,
        "hostile-head-out-of-range",
        "head 999 in the available ring",
        |b| {
            b.q.push_avail(999);
            b.q.notify(&b.dev);
        },
        None,
    );
    let far = ram.end + 0x10_0000;
    breaking(
        b,
        &s,
        "hostile-desc-table-outside-ram",
        &format!("descriptor table at {far:#x}"),
        |b| {
            let _ = b.dev.negotiate(blk::F_FLUSH);
            b.q.clear();
            b.dev.write(reg::QUEUE_SEL, 0);
            b.dev.write(reg::QUEUE_NUM, u32::from(qsize));
            b.q.write_addresses(&b.dev, far, b.q.avail, b.q.used);
            b.dev.write(reg::QUEUE_READY, 1);
            b.dev.driver_ok();
            put_read_chain(b, &s, 0);
            b.q.push_avail(0);
            b.q.notify(&b.dev);
        },
        None,
    );
    breaking(
        b,
        &s,
        "hostile-used-ring-outside-ram",
        &format!("used ring at {:#x}", ram.end - 2),
        |b| {
            let _ = b.dev.negotiate(blk::F_FLUSH);
            b.q.clear();
            b.dev.write(reg::QUEUE_SEL, 0);
            b.dev.write(reg::QUEUE_NUM, u32::from(qsize));
            b.q.write_addresses(&b.dev, b.q.desc, b.q.avail, ram.end - 2);
            b.dev.write(reg::QUEUE_READY, 1);
            b.dev.driver_ok();
            put_read_chain(b, &s, 0);
            b.q.push_avail(0);
            b.q.notify(&b.dev);
        },
        None,
    );

    // ---- register misuse -------------------------------------------------------
    report("hostile-features", features(&b.dev).and_then(|d| recover(b, &s).map(|()| d)));
    report("hostile-queue-config", queue_config(b, &s, ram));
    report("hostile-access-width", {
        let mut bad = Vec::new();
        for off in [reg::STATUS, reg::MAGIC_VALUE, reg::CONFIG] {
            if let Ok(v) = probe_read(b.dev.base + off) {
                bad.push(format!("64-bit read at {off:#x} gave {v:#x}"));
            }
        }
        if bad.is_empty() {
            Ok("64-bit reads of Status, MagicValue and the configuration space abort".into())
        } else {
            Err(bad.join("; "))
        }
    });

    if let Some(n) = net {
        report("hostile-net-bad-tx", net_bad_tx(n, ram));
        let jumped = net_tx_jump(n);
        report("hostile-net-avail-jump", jumped);
    }

    // ---- and it still works ------------------------------------------------------
    report(
        "hostile-recovered",
        (|| {
            let buf = dma_alloc(8 * SECTOR, 4096);
            let back = dma_alloc(8 * SECTOR, 4096);
            blk::fill_pattern(buf, 0xfeed, 8, 8);
            b.write(8, 8, buf, 2)?;
            b.flush()?;
            b.read(8, 8, back, 3)?;
            match blk::compare_pattern(back, 0xfeed, 8, 8) {
                None => Ok(format!(
                    "after every case: 8 sectors written, flushed, read back identical (Status {:#x})",
                    b.dev.status()
                )),
                Some(d) => Err(d),
            }
        })(),
    );
    testkit::println!("RESULT virtio: hostile us={}", testkit::arch::cpu::elapsed_us(start));
}

/// FEATURES_OK is refused for unacceptable feature sets.
fn features(dev: &Mmio) -> Result<String, String> {
    let offered = dev.device_features();
    let mut refused = Vec::new();
    let cases: [(&str, u64, bool); 3] = [
        ("INDIRECT_DESC (not offered)", F_VERSION_1 | F_INDIRECT_DESC, false),
        ("no VERSION_1", offered & 0xffff_ffff, false),
        ("a bit in feature word 2", F_VERSION_1, true),
    ];
    for (what, f, word2) in cases {
        dev.reset()?;
        dev.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        dev.set_driver_features(f);
        if word2 {
            dev.write(reg::DRIVER_FEATURES_SEL, 2);
            dev.write(reg::DRIVER_FEATURES, 1);
        }
        dev.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        let st = dev.status();
        if st & status::FEATURES_OK != 0 {
            return Err(format!("{what}: FEATURES_OK kept (Status {st:#x})"));
        }
        refused.push(what);
    }
    // The offered set is accepted.
    dev.negotiate(offered)?;
    Ok(format!("FEATURES_OK not kept with {}; kept with the offered set {offered:#x}", refused.join(", ")))
}

/// QueueNum validation, a queue that does not exist, and queue registers
/// written while the queue is ready.
fn queue_config(b: &mut Blk, s: &Scratch, ram: Ram) -> Result<String, String> {
    let dev = b.dev;
    let qsize = b.q.size;
    dev.negotiate(blk::F_FLUSH)?;
    b.q.clear();
    dev.write(reg::QUEUE_SEL, 0);
    let max = dev.read(reg::QUEUE_NUM_MAX);
    b.q.write_addresses(&dev, b.q.desc, b.q.avail, b.q.used);
    for num in [48, max * 2, 0, 3] {
        dev.write(reg::QUEUE_NUM, num);
        dev.write(reg::QUEUE_READY, 1);
        let r = dev.read(reg::QUEUE_READY);
        if r != 0 {
            return Err(format!("QueueNum {num} (max {max}): QueueReady reads {r}"));
        }
    }
    dev.write(reg::QUEUE_SEL, 7);
    let (nmax, ready0) = (dev.read(reg::QUEUE_NUM_MAX), dev.read(reg::QUEUE_READY));
    dev.write(reg::QUEUE_READY, 1);
    let ready1 = dev.read(reg::QUEUE_READY);
    if nmax != 0 || ready0 != 0 || ready1 != 0 {
        return Err(format!("queue 7: QueueNumMax {nmax}, QueueReady {ready0} then {ready1} (want 0)"));
    }
    dev.write(reg::QUEUE_SEL, 0);
    dev.write(reg::QUEUE_NUM, u32::from(qsize));
    dev.write(reg::QUEUE_READY, 1);
    if dev.read(reg::QUEUE_READY) != 1 {
        return Err(format!("QueueNum {qsize}: QueueReady did not stick"));
    }
    // While ready: size and addresses must not change.
    dev.write(reg::QUEUE_NUM, 2);
    let junk = ram.end + 0x1000;
    b.q.write_addresses(&dev, junk, junk, junk);
    dev.driver_ok();
    b.read(0, 1, s.a, 1).map_err(|e| format!("after writing QueueNum/addresses while ready: {e}"))?;
    // A few more requests, enough to wrap a queue of 2 if the size had changed.
    for _ in 0..4 {
        b.read(0, 1, s.a, 2)?;
    }
    let st = dev.status();
    if st & status::DEVICE_NEEDS_RESET != 0 {
        return Err(format!("Status {st:#x}"));
    }
    Ok(format!(
        "QueueNum 48, {}, 0, 3: QueueReady refused; queue 7: QueueNumMax 0, not readied; QueueNum 2 and addresses {:#x} written while ready: ignored, 5 requests served",
        max * 2,
        junk
    ))
}

fn net_bad_tx(n: &mut Net, ram: Ram) -> Result<String, String> {
    n.reclaim_tx();
    let good = net::build(net::BROADCAST, n.mac, 0, 0, 0, 46);
    let buf = dma_alloc(2048, 64);
    virtq::put(buf + net::HDR_LEN as u64, &good);
    let cases: [(&str, u64, u32); 4] = [
        ("buffer past RAM", ram.end, (net::HDR_LEN + good.len()) as u32),
        ("buffer below RAM", 0x1000, (net::HDR_LEN + good.len()) as u32),
        ("runt of 5 bytes", buf, (net::HDR_LEN + 5) as u32),
        ("2000-byte frame", buf, (net::HDR_LEN + 2000) as u32),
    ];
    for (what, addr, len) in cases {
        let head = n.tx.add(&[(addr, len, false)]).ok_or("no free transmit descriptor")?;
        n.tx.notify(&n.dev);
        match n.tx.wait_used(1_000_000) {
            Some((id, 0)) if id == head => {}
            got => return Err(format!("{what}: used {got:?} (want ({head}, 0))")),
        }
        let st = n.dev.status();
        if st & status::DEVICE_NEEDS_RESET != 0 {
            return Err(format!("{what}: Status {st:#x}: the queue broke"));
        }
    }
    Ok("transmit buffers past/below RAM, a runt, a 2000-byte frame: consumed (used length 0), queue sound".into())
}

fn net_tx_jump(n: &mut Net) -> Result<String, String> {
    let size = n.tx.size;
    let idx = n.tx.avail_idx.wrapping_add(size + 1);
    n.tx.set_avail_idx(idx);
    n.tx.notify(&n.dev);
    let (st, isr) = wait_needs_reset(&n.dev).map_err(|st| format!("Status {st:#x}: no DEVICE_NEEDS_RESET"))?;
    if isr & ISR_CONFIG_CHANGE == 0 {
        return Err(format!("InterruptStatus {isr:#x}"));
    }
    n.reinit()?;
    let f = net::build(net::BROADCAST, n.mac, 0, 0, 0, 46);
    if !n.send(&f) {
        return Err("no transmit descriptor after the reset".into());
    }
    match n.tx.wait_used(1_000_000) {
        Some(_) => {}
        None => return Err("a frame after the reset was not consumed".into()),
    }
    Ok(format!(
        "transmit avail.idx +{}: Status {st:#x}, InterruptStatus {isr:#x}; reset, re-initialised, a frame goes out again",
        size + 1
    ))
}
