//! Test guest `virtio`: a minimal virtio-mmio (version 2) driver — split
//! virtqueues in guest RAM, feature negotiation with VERSION_1, the status
//! sequence, QueueNotify, completions found by polling the used rings — for
//! the devices dom0 serves (`host-dom0/src/backend.rs`, crate `virtio/`).
//! It finds them in its device tree (`virtio,mmio` nodes).
//!
//! Bootargs (several may be combined):
//! - `virtio.blk=OP[,OP...]` with OP one of
//!   - `write:SEED`: a pattern derived from SEED to sectors 0..63 of the
//!     first writable disk, FLUSH, read back and compared (`blk-write`);
//!     prints `RESULT virtio: blk-written seed=SEED`;
//!   - `check:SEED`: sectors 0..63 must hold that pattern (`blk-check`);
//!   - `ro`: the first disk offering VIRTIO_BLK_F_RO refuses a write with
//!     IOERR and keeps its data (`blk-ro`);
//!   - `stress:MS`: writes, reads back and compares random runs of sectors
//!     for MS milliseconds (`blk-stress`);
//!   - `survive:MS`: the same for MS milliseconds, but an IOERR status is
//!     expected (dom0's disk stops answering meanwhile): each run of IO
//!     errors is reported with how long the first failing request took,
//!     and the work must go on, verified, once the disk answers again
//!     (`blk-survive`);
//!   - `bench:N`: timed 4 KiB and 1 MiB reads and writes, polled and
//!     interrupt-driven, for `scripts/bench.sh --io` (`blk-bench`; see
//!     `bench.rs`); best last, as it reopens the disk with a larger queue.
//!
//!   `write` and `check` also check that requests at and across the disk's
//!   end get IOERR (`blk-past-end`), that InterruptStatus and InterruptACK
//!   work (`blk-interrupt-status`), and that completions raise the slot's
//!   SPI, INTID 48 + slot, edge-rising (`blk-irq`; everything else polls).
//! - `virtio.net=send:N` / `virtio.net=recv:N`: N Ethernet frames to or
//!   from a peer VM on dom0's switch, windowed and acknowledged (see
//!   `net.rs`); `send-for:MS` / `recv-for:MS`: as many as the sender
//!   sends in MS milliseconds (it then tells the receiver how many);
//!   `virtio.net.peer=MAC`: exchange with that peer only (when several
//!   pairs share the switch);
//!   `net-send`, `net-recv` (`PASS N frames intact`),
//!   `net-flow-control` (no frame dropped). `virtio.net.window=W` changes
//!   the sender's window (default 32; a window beyond the receiver's 128
//!   buffers plus dom0's backlog of 64 makes the switch drop frames, which
//!   go-back-N retransmission recovers and `net-flow-control` reports);
//!   `virtio.net.rx-delay-us=US` makes the receiver pause before each look
//!   at its queue (a slow receiver).
//! - `virtio.hostile=1`: malformed queues, requests and register accesses
//!   against its own first writable disk (and network device, if any),
//!   each checked against hv-virtio's defined answer (see `hostile.rs`).
//!
//! Always: `probe` (every device has the magic, version 2 and a known
//! device ID).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod bench;
#[cfg(target_os = "none")]
mod blk;
#[cfg(target_os = "none")]
mod hostile;
#[cfg(target_os = "none")]
mod net;
#[cfg(target_os = "none")]
mod virtq;

#[cfg(target_os = "none")]
mod guest {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    use testkit::cmdline::parse_size;
    use testkit::hv_abi::hypercall::guest::{VIRTIO_BASE, VIRTIO_STRIDE};
    use testkit::{check, println, Env};

    use crate::virtq::{self, Mmio};
    use crate::{bench, blk, hostile, net};

    testkit::guest!("virtio", main);

    enum BlkOp {
        Write(u64),
        Check(u64),
        Ro,
        Stress(u64),
        Survive(u64),
        Bench(u64),
    }

    fn parse_blk(v: &str) -> Result<Vec<BlkOp>, String> {
        v.split(',')
            .map(|op| {
                let (name, arg) = op.split_once(':').unwrap_or((op, ""));
                let num = || parse_size(arg).ok_or_else(|| format!("virtio.blk: bad number in `{op}`"));
                Ok(match name {
                    "write" => BlkOp::Write(num()?),
                    "check" => BlkOp::Check(num()?),
                    "ro" => BlkOp::Ro,
                    "stress" => BlkOp::Stress(num()?),
                    "survive" => BlkOp::Survive(num()?),
                    "bench" => BlkOp::Bench(num()?.max(1)),
                    _ => return Err(format!("virtio.blk: unknown operation `{op}`")),
                })
            })
            .collect()
    }

    fn device_name(id: u32) -> &'static str {
        match id {
            virtq::DEVICE_NET => "network",
            virtq::DEVICE_BLOCK => "block",
            virtq::DEVICE_CONSOLE => "console",
            _ => "unknown",
        }
    }

    /// Free RAM above the image and below the device tree (the toolstack
    /// puts it at the top of RAM) becomes the DMA arena.
    fn arena(env: &Env) -> hostile::Ram {
        let ram = env.platform.memory.first().copied();
        let (base, end) =
            ram.map_or((0x4000_0000, 0x4000_0000 + (16 << 20)), |r| (r.base.as_u64(), r.base.as_u64() + r.size));
        let (_, image_end) = testkit::image_range();
        let start = (image_end + 0xffff) & !0xffff;
        let dtb = env.dtb;
        let top = if dtb >= start && dtb < end { dtb & !0xfff } else { end };
        virtq::arena_init(start, top);
        println!(
            "NOTE virtio: RAM {base:#x}..{end:#x}, DMA arena {start:#x}..{top:#x} ({} KiB)",
            virtq::arena_left() >> 10
        );
        hostile::Ram { base, end }
    }

    fn main(env: &'static Env) {
        let ram = arena(env);
        let cmd = env.cmdline();

        // Devices from the device tree.
        let mut devs = Vec::new();
        let mut problems = Vec::new();
        for (base, size) in virtq::find_devices(env.blob) {
            let slot = (base.wrapping_sub(VIRTIO_BASE) / VIRTIO_STRIDE) as usize;
            let d = Mmio { base, slot };
            let (magic, version, id, vendor) = (
                d.read(virtq::reg::MAGIC_VALUE),
                d.read(virtq::reg::VERSION),
                d.device_id(),
                d.read(virtq::reg::VENDOR_ID),
            );
            // Device ID 0: a transport with no device behind it (bare QEMU
            // virt has 32 of them), which a driver ignores (§4.2.3.1.1).
            if magic == virtq::MAGIC && id == 0 {
                continue;
            }
            println!(
                "NOTE virtio: slot {slot} at {base:#x} (size {size:#x}): {} (device ID {id}), version {version}, vendor {vendor:#x}, features {:#x}",
                device_name(id),
                d.device_features()
            );
            if magic != virtq::MAGIC || version != 2 || !(1..=3).contains(&id) {
                problems.push(format!("slot {slot}: magic {magic:#x} version {version} device ID {id}"));
            }
            devs.push(d);
        }
        let kinds: Vec<&str> = devs.iter().map(|d| device_name(d.device_id())).collect();
        check!(
            "probe",
            !devs.is_empty() && problems.is_empty(),
            "{} virtio-mmio device(s) [{}]{}{}",
            devs.len(),
            kinds.join(", "),
            if problems.is_empty() { ", magic \"virt\", version 2" } else { ": " },
            problems.join("; ")
        );

        let blk_ops = match cmd.get("virtio.blk").map(parse_blk) {
            None => Vec::new(),
            Some(Ok(ops)) => ops,
            Some(Err(e)) => {
                check!("bootargs", false, "{e}");
                return;
            }
        };
        let net_mode = cmd.get("virtio.net");
        let hostile_on = cmd.flag("virtio.hostile");

        let (mut rw, mut ro) = if blk_ops.is_empty() && !hostile_on { (None, None) } else { blk::pick(&devs) };
        let mut netdev = None;
        if net_mode.is_some() || hostile_on {
            if let Some(d) = devs.iter().find(|d| d.device_id() == virtq::DEVICE_NET) {
                match net::Net::open(*d) {
                    Ok(n) => {
                        println!("NOTE virtio: network device in slot {} has MAC {}", d.slot, net::mac_str(&n.mac));
                        netdev = Some(n);
                    }
                    Err(e) => check!("net-init", false, "slot {}: {e}", d.slot),
                }
            }
        }

        let mut past_end_done = false;
        for op in &blk_ops {
            if let BlkOp::Ro = op {
                blk::mode_ro(ro.as_mut());
                continue;
            }
            let Some(b) = rw.as_mut() else {
                check!("blk", false, "no writable block device");
                break;
            };
            match *op {
                BlkOp::Write(seed) => blk::mode_write(b, seed),
                BlkOp::Check(seed) => blk::mode_check(b, seed),
                BlkOp::Stress(ms) => blk::mode_stress(b, ms, b.dev.base ^ ms),
                BlkOp::Survive(ms) => blk::mode_survive(b, ms, b.dev.base ^ ms),
                BlkOp::Bench(n) => bench::mode_bench(b, n),
                BlkOp::Ro => {}
            }
            if matches!(op, BlkOp::Write(_) | BlkOp::Check(_)) && !past_end_done {
                past_end_done = true;
                blk::past_end(b);
                blk::interrupt_status(b);
                blk::interrupts(b);
            }
        }

        if let Some(mode) = net_mode {
            let (what, n) = mode.split_once(':').unwrap_or((mode, ""));
            match (netdev.as_mut(), what, parse_size(n).and_then(|n| u32::try_from(n).ok())) {
                (None, _, _) => check!("net", false, "no network device"),
                (Some(d), "send" | "send-for" | "recv" | "recv-for", Some(n)) if what.ends_with("-for") || n < net::OPEN => {
                    let amount = if what.ends_with("-for") { net::Amount::ForMs(n.into()) } else { net::Amount::Frames(n) };
                    let only = cmd.get("virtio.net.peer").and_then(net::parse_mac);
                    if what.starts_with("send") {
                        let window = match cmd.get_u64("virtio.net.window") {
                            Some(Ok(w)) if w > 0 => w.min(u64::from(u32::MAX)) as u32,
                            _ => net::WINDOW,
                        };
                        net::mode_send(d, amount, window, only)
                    } else {
                        let delay = cmd.get_u64("virtio.net.rx-delay-us").and_then(Result::ok).unwrap_or(0);
                        net::mode_recv(d, amount, delay, only)
                    }
                }
                _ => check!("bootargs", false, "virtio.net: expected send:N, recv:N, send-for:MS or recv-for:MS, got `{mode}`"),
            }
        }

        if hostile_on {
            match rw.as_mut() {
                Some(b) => hostile::run(b, netdev.as_mut(), ram),
                None => check!("hostile", false, "no writable block device to abuse"),
            }
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
