//! `virtio.blk=bench:N`, timed virtio-blk requests for `scripts/bench.sh
//! --io`, and the marker that the bench's instruction-counting QEMU plugin
//! (`tools/insn-count`) watches for.
//!
//! Four kinds of request, each waited for in two ways: a 4 KiB read and
//! write (N of each, one data descriptor) and a 1 MiB read and write
//! (max(N / 8, 2) of each, in descriptors of the device's `size_max`), one
//! request in flight at a time; first polling the used ring, then with
//! used-buffer interrupts on, sleeping in WFI until the interrupt handler
//! (which acknowledges InterruptStatus) has run, 2 s after the polled ones
//! (a pause for a console script to read dom0's counters). One request of
//! the kind warms up before each batch. Each batch prints
//!
//! `RESULT virtio: blk-bench op=OP wait=WAIT n=COUNT ns=NS mark=K`
//!
//! NS: counter nanoseconds per request (instructions under `-icount
//! shift=0`, where a CPU's idling also moves the counter), the empty loop's
//! own time subtracted; K: the batch lies between the guest's markers K and
//! K + 1.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};

use testkit::arch::{cpu, gic};
use testkit::{check, println};

use crate::blk::{self, Blk, REQUEST_TIMEOUT_US, SECTOR, T_IN, T_OUT};
use crate::virtq::{dma_alloc, fill, Virtq};

/// Markers this guest has executed.
static MARKS: AtomicU32 = AtomicU32::new(0);

/// Executes the marker (HINT #0x7e, unallocated, so a NOP) and returns its
/// sequence number among this guest's markers.
pub fn marker() -> u32 {
    // SAFETY: an unallocated hint executes as a NOP (Arm ARM C6.2.112).
    unsafe { asm!("hint #0x7e", options(nomem, nostack, preserves_flags)) };
    MARKS.fetch_add(1, Ordering::SeqCst)
}

/// Nanoseconds in `ticks` of the counter.
fn ns(ticks: u64) -> u64 {
    (u128::from(ticks) * 1_000_000_000 / u128::from(cpu::counter_hz().max(1))) as u64
}

/// How a request's answer is waited for.
#[derive(Clone, Copy)]
enum Wait {
    Poll,
    Irq,
}

/// Waits for a used element in WFI, the used-buffer interrupt waking us:
/// the ring is looked at with IRQs masked, so an interrupt arriving after
/// the look is still pending at the WFI and ends it.
fn wait_irq(q: &mut Virtq) -> Option<(u16, u32)> {
    let start = cpu::counter();
    loop {
        cpu::disable_irqs();
        let got = q.pop_used();
        if got.is_some() || cpu::elapsed_us(start) >= REQUEST_TIMEOUT_US {
            cpu::enable_irqs();
            return got;
        }
        cpu::wfi();
        cpu::enable_irqs();
    }
}

/// One request of `bytes` at `sector`, answered OK with the length a read
/// or write should have.
fn one(b: &mut Blk, wait: Wait, kind: u32, sector: u64, segs: &[(u64, u32)], bytes: u64) -> Result<(), String> {
    let a = match wait {
        Wait::Poll => b.request(kind, sector, segs)?,
        Wait::Irq => b.request_waiting(kind, sector, segs, wait_irq)?,
    };
    let want_len = if kind == T_IN { bytes as u32 + 1 } else { 1 };
    if a.status != blk::S_OK || a.used_len < 1 || (kind == T_IN && a.used_len != want_len) {
        return Err(format!("{bytes} bytes at sector {sector}: status {} used length {}", a.status, a.used_len));
    }
    Ok(())
}

/// `bench:N` on the first writable disk, reopened (and left so) with a
/// queue that holds a 1 MiB request.
pub fn mode_bench(disk: &mut Blk, n: u64) {
    *disk = match Blk::open_sized(disk.dev, 32) {
        Ok(b) => b,
        Err(e) => return check!("blk-bench", false, "reopening slot {}: {e}", disk.dev.slot),
    };
    let b = disk;
    let size_max = if b.features & blk::F_SIZE_MAX != 0 { u64::from(b.dev.config32(8)) } else { 0 };
    let seg_max = if b.features & blk::F_SEG_MAX != 0 { u64::from(b.dev.config32(12)) } else { 0 };
    const BIG: u64 = 1 << 20;
    let seg = if size_max == 0 { BIG } else { size_max.min(BIG) };
    let pieces = BIG.div_ceil(seg);
    let big_sectors = BIG / SECTOR;
    if b.capacity < 2 * big_sectors || (seg_max != 0 && pieces > seg_max) || pieces + 2 > u64::from(b.q.size) {
        return check!(
            "blk-bench",
            false,
            "a 1 MiB request does not fit: capacity {} sectors, size_max {size_max}, seg_max {seg_max}, queue {}",
            b.capacity,
            b.q.size
        );
    }
    let buf = dma_alloc(BIG, 4096);
    fill(buf, 0x5a, BIG as usize);
    let intid = match blk::irq_on(b) {
        Ok(i) => i,
        Err(e) => return check!("blk-bench", false, "{e}"),
    };
    let n_big = (n / 8).max(2);
    let ops: [(&str, u32, u64, u64); 4] =
        [("read-4k", T_IN, 4096, n), ("write-4k", T_OUT, 4096, n), ("read-1m", T_IN, BIG, n_big), ("write-1m", T_OUT, BIG, n_big)];
    // The empty loop's own time, per iteration.
    let t = cpu::counter();
    for i in 0..n {
        core::hint::black_box(i);
    }
    let empty = (cpu::counter() - t) / n.max(1);
    let mut lines = Vec::new();
    let mut failure = None;
    'all: for wait in [Wait::Poll, Wait::Irq] {
        if let Wait::Irq = wait {
            // A pause between the two, in which a console script can take
            // dom0's counters (`iostat`).
            println!("NOTE virtio: blk-bench: polled requests done; interrupt-driven ones in 2 s");
            cpu::delay_us(2_000_000);
        }
        // Notifications: off while polling, on for the interrupt.
        crate::virtq::wr16(b.q.avail, if let Wait::Irq = wait { 0 } else { crate::virtq::AVAIL_F_NO_INTERRUPT });
        let wname = if let Wait::Irq = wait { "irq" } else { "poll" };
        for (name, kind, bytes, count) in ops {
            let segs = blk::split(buf, bytes, bytes.div_ceil(seg));
            let sectors = bytes / SECTOR;
            let span = (b.capacity / sectors - 1).max(1);
            if let Err(e) = one(b, wait, kind, 0, &segs, bytes) {
                failure = Some(format!("{name} ({wname}), warm-up: {e}"));
                break 'all;
            }
            let mark = marker();
            let start = cpu::counter();
            for i in 0..count {
                if let Err(e) = one(b, wait, kind, (i % span) * sectors, &segs, bytes) {
                    failure = Some(format!("{name} ({wname}), request {i}: {e}"));
                    break 'all;
                }
            }
            let ticks = (cpu::counter() - start).saturating_sub(empty * count);
            marker();
            let per = ns(ticks) / count;
            println!("RESULT virtio: blk-bench op={name} wait={wname} n={count} ns={per} mark={mark}");
            lines.push(format!("{name}/{wname} {per}"));
        }
    }
    crate::virtq::wr16(b.q.avail, crate::virtq::AVAIL_F_NO_INTERRUPT);
    let _ = gic::disable_spi(intid);
    match failure {
        None => check!(
            "blk-bench",
            true,
            "ns per request: {} ({n} 4 KiB and {n_big} 1 MiB requests of each kind, 1 MiB in {pieces} descriptor(s))",
            lines.join(", ")
        ),
        Some(e) => check!("blk-bench", false, "{e}"),
    }
}
