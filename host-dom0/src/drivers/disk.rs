//! Dom0's data disk, whichever device holds it: a virtio-blk device (QEMU
//! `virt`, [`super::virtio_blk`]) or, failing that, partition 2 of the SD
//! card in the Raspberry Pi 4's EMMC2 slot ([`super::sdhci`]). Guests'
//! disk slices ([`shared`]) and the shell's `disk` command
//! ([`shell_command`]) see the same sectors either way: sector 0 is the
//! first sector of the data disk (on the SD card, of partition 2; the boot
//! partition is out of reach).
//!
//! Both are polled: a request spins with the disk's lock held, bounded by
//! the driver's timeouts (the virtio disk's is set with `disk timeout MS`;
//! the SD card's come from the SD protocol).

use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hv_virtio::block::BackendError;
use spin::{Mutex, Once};

use super::mbr::{self, Partition};
use super::sdhci::{self, Mmio, Options, SdCard, SdError};
use super::virtio_blk;
use crate::arch::aarch64::cpu;
use crate::backend::SharedDisk;
use crate::command::DiskOp;
use crate::fdt_scan::Tree;
use crate::println;

/// The device-tree `compatible` of the Pi 4's SD controller.
const EMMC2_COMPATIBLE: &str = "brcm,bcm2711-emmc2";
/// The MBR partition that is dom0's data disk.
const DATA_PARTITION: u8 = 2;

/// What the shell's `disk` command needs of a disk.
pub trait BlockDevice {
    type Error: fmt::Display;
    fn read_only(&self) -> bool;
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), Self::Error>;
    fn flush(&mut self) -> Result<(), Self::Error>;
}

/// The data partition of the SD card.
pub struct SdDisk {
    sd: SdCard<Mmio>,
    base: u64,
    path: String,
    part: Partition,
}

// SAFETY: `SdDisk` owns the controller's register window outright (nothing
// else in dom0 drives it); it is identity mapped the same way on every CPU,
// and reached through the `Mutex` in `SD`, one CPU at a time.
unsafe impl Send for SdDisk {}

impl SdDisk {
    /// `sectors` sectors from partition sector `sector` are inside the
    /// partition: the card's sector, or the error (nothing sent).
    fn map(&self, sector: u64, len: usize) -> Result<u64, SdError> {
        let sectors = (len / sdhci::SECTOR_SIZE) as u64;
        match sector.checked_add(sectors) {
            Some(end) if end <= self.part.sectors && len.is_multiple_of(sdhci::SECTOR_SIZE) && len > 0 => {
                Ok(self.part.start + sector)
            }
            _ if len == 0 || !len.is_multiple_of(sdhci::SECTOR_SIZE) => Err(SdError::BadLength(len)),
            _ => Err(SdError::OutOfRange { sector, sectors, capacity: self.part.sectors }),
        }
    }

    pub fn capacity_sectors(&self) -> u64 {
        if self.sd.info().is_some() {
            self.part.sectors
        } else {
            0
        }
    }
}

impl BlockDevice for SdDisk {
    type Error = SdError;

    fn read_only(&self) -> bool {
        self.sd.read_only()
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), SdError> {
        let at = self.map(sector, buf.len())?;
        self.sd.read(at, buf).inspect_err(report)
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), SdError> {
        let at = self.map(sector, buf.len())?;
        self.sd.write(at, buf).inspect_err(report)
    }

    fn flush(&mut self) -> Result<(), SdError> {
        self.sd.flush().inspect_err(report)
    }
}

impl BlockDevice for virtio_blk::Disk {
    type Error = virtio_blk::DiskError;

    fn read_only(&self) -> bool {
        virtio_blk::Disk::read_only(self)
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        virtio_blk::Disk::read(self, sector, buf)
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), Self::Error> {
        virtio_blk::Disk::write(self, sector, buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        virtio_blk::Disk::flush(self)
    }
}

/// Card errors are hardware trouble, not dom0 bugs: a warning, the first
/// 16 and then every 1024th (a dead card under a busy guest must not flood
/// the console).
fn report(e: &SdError) {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    if n < 16 || n.is_multiple_of(1024) {
        log::warn!("sd: {e} (IO error #{})", n + 1);
    }
}

impl hv_virtio::BlockBackend for SdDisk {
    fn capacity_sectors(&self) -> u64 {
        SdDisk::capacity_sectors(self)
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        BlockDevice::read(self, sector, buf).map_err(|_| BackendError)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        BlockDevice::write(self, sector, data).map_err(|_| BackendError)
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        BlockDevice::flush(self).map_err(|_| BackendError)
    }
}

static SD: Once<Option<Mutex<SdDisk>>> = Once::new();

/// Finds the data disk: a virtio-blk device, else the SD card's data
/// partition. Called once, on the boot CPU, after the heap and console.
pub fn init(blob: &[u8]) {
    virtio_blk::init(blob);
    if virtio_blk::disk().is_none() {
        SD.call_once(|| probe_sd(blob).map(Mutex::new));
    }
}

/// The disk guests' slices are cut from, if there is one.
pub fn shared() -> Option<&'static Mutex<dyn SharedDisk>> {
    if let Some(d) = virtio_blk::disk() {
        return Some(d as &'static Mutex<dyn SharedDisk>);
    }
    SD.get().and_then(Option::as_ref).map(|d| d as &'static Mutex<dyn SharedDisk>)
}

/// Microseconds of the CPU's counter, for the SD driver's timeouts.
fn micros() -> u64 {
    let f = cpu::counter_frequency().max(1);
    (u128::from(cpu::counter()) * 1_000_000 / u128::from(f)) as u64
}

fn probe_sd(blob: &[u8]) -> Option<SdDisk> {
    let tree = Tree::new(blob);
    let dev = tree.devices().into_iter().find(|d| tree.is_compatible(&d.path, EMMC2_COMPATIBLE))?;
    let Some(base) = dev.base.filter(|_| dev.size >= sdhci::WINDOW) else {
        log::warn!("sd: {}: unusable reg", dev.path);
        return None;
    };
    let opts = Options {
        broken_card_detect: tree.property(&dev.path, "broken-cd").is_some(),
        ignore_write_protect: tree.property(&dev.path, "disable-wp").is_some(),
        ..Options::default()
    };
    // SAFETY: an SDHCI register block the device tree describes (0x100
    // bytes checked above), passed through to dom0 and mapped Device-nGnRE
    // by the identity map (it is outside /memory); `SD` is initialised
    // once, so this is the only `Mmio` for it.
    let host = unsafe { Mmio::new(base as usize, micros) };
    let mut sd = match SdCard::init(host, opts) {
        Ok(sd) => sd,
        // An empty slot is no fault: card-detect says so, or (where it is
        // not wired, `broken-cd`) nothing answers the first commands.
        Err((_, e @ (SdError::NoCard | SdError::CommandTimeout { .. }))) => {
            log::info!("sd: {}: no card in the slot ({e})", dev.path);
            return None;
        }
        Err((_, e)) => {
            log::warn!("sd: {}: {e}", dev.path);
            return None;
        }
    };
    let info = *sd.info()?;
    let name = info.product_name();
    log::info!(
        "sd: {} at {base:#x}: card {:?}, {} sectors ({} MiB), {}, {} kHz, {}{}; polled PIO",
        dev.path,
        core::str::from_utf8(&name).unwrap_or("?"),
        info.sectors,
        info.sectors / 2048,
        if info.high_capacity { "SDHC/SDXC" } else { "SDSC" },
        info.clock_hz / 1000,
        if info.write_protected { "write-protected" } else { "read-write" },
        if opts.broken_card_detect { ", card-detect not wired" } else { "" },
    );
    let mut sector0 = [0u8; 512];
    if let Err(e) = sd.read(0, &mut sector0) {
        log::warn!("sd: reading the partition table: {e}");
        return None;
    }
    match mbr::partition(&sector0, DATA_PARTITION, info.sectors) {
        Ok(part) => {
            log::info!(
                "sd: data disk = partition {} (type {:#04x}), sectors {}..{} ({} MiB)",
                part.number,
                part.kind,
                part.start,
                part.start + part.sectors,
                part.sectors / 2048
            );
            Some(SdDisk { sd, base, path: dev.path, part })
        }
        Err(e) => {
            log::warn!("sd: no data disk: {e} (scripts/sdcard.sh makes partition {DATA_PARTITION})");
            None
        }
    }
}

// ---- the shell's `disk` command ---------------------------------------------

/// `disk`, `disk read SECTOR`, `disk selftest SECTOR` on whichever disk
/// dom0 has.
pub fn shell_command(op: DiskOp) {
    if let Some(disk) = virtio_blk::disk() {
        let mut disk = disk.lock();
        match op {
            DiskOp::Status => virtio_blk::print_status(&disk),
            DiskOp::Read(sector) => read_command(&mut *disk, sector),
            DiskOp::Selftest(sector) => selftest_command(&mut *disk, sector),
            DiskOp::Timeout(None) => println!("disk: requests time out after {} ms", disk.timeout_ms()),
            DiskOp::Timeout(Some(ms)) => {
                disk.set_timeout_ms(ms);
                println!("disk: requests time out after {ms} ms");
            }
        }
        return;
    }
    let Some(disk) = SD.get().and_then(Option::as_ref) else {
        println!("disk: no data disk (QEMU virt: scripts/run.sh --disk FILE; Raspberry Pi 4: an SD card with a partition 2)");
        return;
    };
    let mut disk = disk.lock();
    match op {
        DiskOp::Status => {
            println!("disk: SD card on {} at {:#x} (SDHCI, polled PIO)", disk.path, disk.base);
            match disk.sd.info().copied() {
                Some(info) => {
                    let name = info.product_name();
                    println!(
                        "disk: card {:?}, {} sectors ({} MiB), {}, RCA {:#06x}, bus 4-bit at {} kHz",
                        core::str::from_utf8(&name).unwrap_or("?"),
                        info.sectors,
                        info.sectors / 2048,
                        if info.high_capacity { "SDHC/SDXC" } else { "SDSC" },
                        info.rca,
                        info.clock_hz / 1000
                    );
                }
                None => println!("disk: the card is gone: {}", disk.sd.lost().unwrap_or(SdError::NoCard)),
            }
            let c = disk.capacity_sectors();
            println!(
                "disk: capacity {c} sectors of {} bytes ({} MiB): partition {} from card sector {}",
                sdhci::SECTOR_SIZE,
                c / 2048,
                disk.part.number,
                disk.part.start
            );
            println!("disk: {}", if disk.read_only() { "read-only (write-protect switch)" } else { "read-write" });
            println!("disk: flush waits for the card to be idle (its cache is never enabled); {} IO error(s)", disk.sd.errors());
        }
        DiskOp::Read(sector) => read_command(&mut *disk, sector),
        DiskOp::Selftest(sector) => selftest_command(&mut *disk, sector),
        // The card's timeouts are the SD protocol's own (`sdhci::Options`).
        DiskOp::Timeout(_) => println!("disk: the SD card's timeouts are fixed by the SD protocol (see `disk`)"),
    }
}

/// `disk read SECTOR`: the first 64 bytes.
pub fn read_command<D: BlockDevice>(disk: &mut D, sector: u64) {
    let mut buf = [0u8; 512];
    match disk.read(sector, &mut buf) {
        Ok(()) => {
            println!("disk: sector {sector}, first 64 bytes:");
            hexdump(&buf[..64]);
        }
        Err(e) => println!("disk read {sector}: {e}"),
    }
}

/// `disk selftest SECTOR`.
pub fn selftest_command<D: BlockDevice>(disk: &mut D, sector: u64) {
    match selftest(disk, sector) {
        Ok(()) => println!("disk selftest {sector}: OK (pattern written, flushed, read back; old contents restored)"),
        Err(why) => println!("disk selftest {sector}: FAIL: {why}"),
    }
}

fn hexdump(bytes: &[u8]) {
    for (i, line) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        let mut text = String::new();
        for &b in line {
            hex.push_str(&alloc::format!("{b:02x} "));
            text.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' });
        }
        println!("  {:04x}: {hex}|{text}|", i * 16);
    }
}

/// Writes a pattern to `sector`, flushes, reads it back and compares, then
/// puts the old contents back (flushed and checked too).
fn selftest<D: BlockDevice>(disk: &mut D, sector: u64) -> Result<(), String> {
    use alloc::format;
    if disk.read_only() {
        return Err("the disk is read-only".into());
    }
    let mut old = [0u8; 512];
    disk.read(sector, &mut old).map_err(|e| format!("read: {e}"))?;
    let mut pattern = [0u8; 512];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ (sector as u8) ^ old[i] ^ 0xa5;
    }
    let tag = format!("dom0 disk selftest, sector {sector}\n");
    pattern[..tag.len()].copy_from_slice(tag.as_bytes());
    let mut write_check = |data: &[u8; 512], what: &str| -> Result<(), String> {
        disk.write(sector, data).map_err(|e| format!("{what}write: {e}"))?;
        disk.flush().map_err(|e| format!("{what}flush: {e}"))?;
        let mut back = [0u8; 512];
        disk.read(sector, &mut back).map_err(|e| format!("{what}read back: {e}"))?;
        match back.iter().zip(data).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(format!("{what}read back differs at byte {i}: {:#04x}, wrote {:#04x}", back[i], data[i])),
        }
    };
    let result = write_check(&pattern, "");
    // Restore whatever happened above (a failed write may still have landed).
    let restored = write_check(&old, "restore: ");
    match (result, restored) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(e), Err(r)) => Err(format!("{e}; {r}")),
    }
}
