//! The real disk: a virtio-blk device on one of the platform's virtio-mmio
//! transports (QEMU `virt` has 32 at 0x0a00_0000 + n * 0x200; most are empty,
//! DeviceID 0), driven by the `virtio-drivers` crate.
//!
//! - **Discovery**: [`init`] walks dom0's device tree for enabled
//!   `virtio,mmio` nodes, reads each one's magic, version and DeviceID, and
//!   takes the first block device (DeviceID 2). Legacy (version 1) and
//!   modern (version 2) transports both work; `virtio-drivers` handles the
//!   difference (queue PFN vs. split descriptor/driver/device addresses).
//! - **Mapping**: the window is outside `/memory`, so dom0's identity map
//!   (`crate::pagetable`) already maps it Device-nGnRE, execute-never; the
//!   hypervisor maps it at stage 2 IPA = PA with the other passed-through
//!   devices. Nothing to map here.
//! - **DMA**: dom0's memory is identity mapped (VA = IPA) and the hypervisor
//!   gives dom0 IPA = PA, so a buffer's virtual address is the address the
//!   device uses. Queues come from the heap as zeroed, page-aligned
//!   allocations; data buffers are the callers' own (`share` is the
//!   identity, checked to lie in dom0's RAM, `unshare` does nothing: virtio
//!   devices are cache coherent).
//! - **Completion**: polled. The device's SPI is routed to dom0 but never
//!   enabled, so it is never delivered; each request spins until the device
//!   puts it in the used ring, and the interrupt status is acknowledged after
//!   it. A device that never completes a request hangs its caller (with the
//!   disk's lock held).
//! - **Flush**: the driver accepts `VIRTIO_BLK_F_FLUSH` when the device
//!   offers it (QEMU does, for its default write-back cache), and
//!   [`Disk::flush`] then sends `VIRTIO_BLK_T_FLUSH` and waits for it. A device
//!   that does not offer it has no volatile write cache to flush (QEMU offers
//!   FLUSH exactly when its backend caches writes, e.g. not with
//!   `cache=writethrough`; Linux treats such a device as write-through too):
//!   `flush` then sends nothing, and [`Disk::flush_supported`] says so.
//!
//! [`disk`] is the API the rest of dom0 uses (through `super::disk`, which
//! falls back to the SD card); [`shell_command`] is the shell's `disk`
//! command for this device.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use spin::{Mutex, Once};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::transport::mmio::{MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::Transport;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::command::DiskOp;
use crate::fdt_scan::{self, Tree};
use crate::println;

/// Bytes per sector: virtio-blk addresses the disk in 512-byte units whatever
/// its block size.
pub const SECTOR_SIZE: usize = 512;
/// Sectors in one request at most; longer reads and writes are split.
const MAX_REQUEST_SECTORS: u64 = 128;
/// virtio-mmio registers (virtio 1.2, 4.2.2).
const MAGIC: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const DEVICE_ID_BLOCK: u32 = 2;
/// `VIRTIO_BLK_F_FLUSH` (feature bit 9).
const F_FLUSH: u64 = 1 << 9;
/// The header and config space the transport may touch.
const MIN_WINDOW: u64 = 0x200;
/// RAM regions remembered for the `share` check.
const MAX_RAM_REGIONS: usize = 16;

/// Why a disk request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskError {
    /// `sectors` sectors from `sector` reach past the last one (`capacity`
    /// sectors in all), or the sum overflows. Nothing was sent.
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    /// The buffer is empty or not a whole number of sectors. Nothing was sent.
    BadLength(usize),
    /// A write to a read-only disk (`VIRTIO_BLK_F_RO`). Nothing was sent.
    ReadOnly,
    /// The device answered `VIRTIO_BLK_S_IOERR`.
    Io,
    /// The device answered `VIRTIO_BLK_S_UNSUPP`.
    Unsupported,
    /// No memory for the request.
    NoMemory,
    /// Any other failure the driver reported.
    Driver(virtio_drivers::Error),
}

impl From<virtio_drivers::Error> for DiskError {
    fn from(e: virtio_drivers::Error) -> Self {
        match e {
            virtio_drivers::Error::IoError => Self::Io,
            virtio_drivers::Error::Unsupported => Self::Unsupported,
            virtio_drivers::Error::DmaError => Self::NoMemory,
            other => Self::Driver(other),
        }
    }
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange {
                sector,
                sectors,
                capacity,
            } => write!(
                f,
                "{sectors} sector(s) from sector {sector} are beyond the end of the disk ({capacity} sectors)"
            ),
            Self::BadLength(n) => write!(
                f,
                "{n} bytes is not a whole, non-zero number of {SECTOR_SIZE}-byte sectors"
            ),
            Self::ReadOnly => f.write_str("the disk is read-only"),
            Self::Io => f.write_str("I/O error (reported by the device)"),
            Self::Unsupported => f.write_str("request not supported by the device"),
            Self::NoMemory => f.write_str("out of DMA memory"),
            Self::Driver(e) => write!(f, "virtio: {e}"),
        }
    }
}

/// The disk: one virtio-blk device.
pub struct Disk {
    blk: VirtIOBlk<DmaHal, MmioTransport<'static>>,
    base: u64,
    capacity: u64,
    read_only: bool,
    flush: bool,
    version: MmioVersion,
}

// SAFETY: `Disk` owns its transport's MMIO window outright (nothing else in
// dom0 touches it) and its queue memory; both are identity mapped the same
// way on every CPU, so the disk may move between CPUs. Access is through
// `&mut Disk`, i.e. one CPU at a time (the `Mutex` in `DISK`).
unsafe impl Send for Disk {}

impl Disk {
    /// Size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity
    }

    /// The device refuses writes (`VIRTIO_BLK_F_RO`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// `VIRTIO_BLK_F_FLUSH` was negotiated: [`Disk::flush`] reaches the device.
    pub fn flush_supported(&self) -> bool {
        self.flush
    }

    /// Physical address of the virtio-mmio window.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The transport is virtio-mmio version 1 (legacy) rather than 2.
    pub fn legacy(&self) -> bool {
        self.version == MmioVersion::Legacy
    }

    /// Reads `buf.len() / 512` sectors from `sector` into `buf`. Range and
    /// length are checked before anything is sent.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.check(sector, buf.len())?;
        let step = MAX_REQUEST_SECTORS as usize * SECTOR_SIZE;
        for (i, chunk) in buf.chunks_mut(step).enumerate() {
            let at = sector + (i as u64) * MAX_REQUEST_SECTORS;
            let r = self.blk.read_blocks(at as usize, chunk);
            self.blk.ack_interrupt();
            r?;
        }
        Ok(())
    }

    /// Writes `buf` (a whole number of sectors) from `sector` on. The data
    /// may sit in the device's write cache until [`Disk::flush`]. Requests
    /// go out 128 sectors at a time: after an error, earlier ones may have
    /// been written.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.check(sector, buf.len())?;
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        let step = MAX_REQUEST_SECTORS as usize * SECTOR_SIZE;
        for (i, chunk) in buf.chunks(step).enumerate() {
            let at = sector + (i as u64) * MAX_REQUEST_SECTORS;
            let r = self.blk.write_blocks(at as usize, chunk);
            self.blk.ack_interrupt();
            r?;
        }
        Ok(())
    }

    /// Makes every completed write durable: `VIRTIO_BLK_T_FLUSH`, waited
    /// for. Without `VIRTIO_BLK_F_FLUSH` the device has no write cache and
    /// this does nothing.
    pub fn flush(&mut self) -> Result<(), DiskError> {
        if !self.flush {
            return Ok(());
        }
        let r = self.blk.flush();
        self.blk.ack_interrupt();
        Ok(r?)
    }

    /// A request of `len` bytes from `sector` is whole sectors, non-empty and
    /// inside the disk.
    fn check(&self, sector: u64, len: usize) -> Result<(), DiskError> {
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(DiskError::BadLength(len));
        }
        let sectors = (len / SECTOR_SIZE) as u64;
        match sector.checked_add(sectors) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(DiskError::OutOfRange {
                sector,
                sectors,
                capacity: self.capacity,
            }),
        }
    }
}

static DISK: Once<Option<Mutex<Disk>>> = Once::new();
static RAM: Once<([(u64, u64); MAX_RAM_REGIONS], usize)> = Once::new();

/// The disk, if [`init`] found one. Requests block (spinning) until the
/// device answers, so do not take the lock in an interrupt handler.
pub fn disk() -> Option<&'static Mutex<Disk>> {
    DISK.get().and_then(Option::as_ref)
}

/// Finds the first virtio-blk device among the tree's `virtio,mmio` nodes
/// and initialises it. Called once, on the boot CPU, after the heap and the
/// console; later calls do nothing.
pub fn init(blob: &[u8]) {
    RAM.call_once(|| {
        let mut ram = [(0, 0); MAX_RAM_REGIONS];
        let mut n = 0;
        fdt_scan::for_each_memory(blob, |base, size| {
            if n < MAX_RAM_REGIONS {
                ram[n] = (base, size);
                n += 1;
            }
        });
        (ram, n)
    });
    DISK.call_once(|| probe(blob).map(Mutex::new));
}

fn probe(blob: &[u8]) -> Option<Disk> {
    let tree = Tree::new(blob);
    let mut slots = 0;
    for dev in tree.devices() {
        if !tree.is_compatible(&dev.path, "virtio,mmio") {
            continue;
        }
        slots += 1;
        let Some(base) = dev.base.filter(|_| dev.size >= MIN_WINDOW) else {
            log::warn!("virtio-blk: {}: unusable reg", dev.path);
            continue;
        };
        let addr = base as usize;
        // SAFETY: a virtio-mmio header the device tree describes (at least
        // 0x200 bytes), passed through to dom0 and mapped Device-nGnRE by
        // the identity map; these reads have no side effects.
        let (magic, version, id) = unsafe {
            (
                hv_mmio::read32(addr + MAGIC),
                hv_mmio::read32(addr + VERSION),
                hv_mmio::read32(addr + DEVICE_ID),
            )
        };
        if magic != MAGIC_VALUE || id != DEVICE_ID_BLOCK {
            continue;
        }
        let Some(header) = NonNull::new(addr as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: as above; the window is dom0's alone and stays mapped for
        // ever. No other `MmioTransport` is made for it: `init` runs once
        // and stops at the first block device.
        let transport = match unsafe { MmioTransport::new(header, dev.size as usize) } {
            Ok(t) => t,
            Err(e) => {
                log::warn!("virtio-blk: {} (version {version}): {e}", dev.path);
                continue;
            }
        };
        return match start(transport, base) {
            Ok(disk) => {
                log::info!(
                    "virtio-blk: {} ({}), {} sectors ({} MiB), {}, flush {}; polled",
                    dev.path,
                    transport_name(&disk),
                    disk.capacity,
                    disk.capacity / 2048,
                    if disk.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    if disk.flush {
                        "supported"
                    } else {
                        "not offered"
                    },
                );
                Some(disk)
            }
            Err(e) => {
                log::warn!("virtio-blk: {}: initialisation failed: {e}", dev.path);
                None
            }
        };
    }
    if slots > 0 {
        log::debug!("virtio-blk: no block device on {slots} virtio-mmio transport(s)");
    }
    None
}

fn start(mut transport: MmioTransport<'static>, base: u64) -> Result<Disk, DiskError> {
    let version = transport.version();
    // The driver accepts FLUSH whenever it is offered (its SUPPORTED_FEATURES
    // has it), so offered = negotiated.
    let flush = transport.read_device_features() & F_FLUSH != 0;
    let mut blk = VirtIOBlk::<DmaHal, _>::new(transport)?;
    blk.disable_interrupts();
    Ok(Disk {
        capacity: blk.capacity(),
        read_only: blk.readonly(),
        flush,
        base,
        version,
        blk,
    })
}

fn transport_name(disk: &Disk) -> &'static str {
    if disk.legacy() {
        "legacy virtio-mmio v1"
    } else {
        "virtio-mmio v2"
    }
}

/// `virtio-drivers`' view of dom0's memory: identity mapped, coherent.
pub struct DmaHal;

fn dma_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

fn in_ram(start: u64, len: u64) -> bool {
    let Some(&(ram, n)) = RAM.get() else {
        return false;
    };
    let end = start.saturating_add(len);
    ram[..n]
        .iter()
        .any(|&(base, size)| base <= start && end <= base.saturating_add(size))
}

// SAFETY: `dma_alloc` returns fresh, zeroed, page-aligned heap memory (so
// valid and unaliased until `dma_dealloc`) whose physical address is its
// virtual one (dom0's identity map over IPA = PA RAM); `mmio_phys_to_virt`
// is the identity, which the identity map makes valid for any device window.
unsafe impl Hal for DmaHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages).filter(|l| l.size() > 0) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        match NonNull::new(p) {
            Some(p) => (p.as_ptr() as PhysAddr, p),
            // `Dma::new` takes physical address 0 as failure.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Some(layout) = dma_layout(pages) else {
            return -1;
        };
        // SAFETY: the caller passes what `dma_alloc` returned for `pages`,
        // allocated with this same layout.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("virtio: MMIO at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let va = buffer.cast::<u8>().as_ptr() as u64;
        // Identity only holds for dom0's own RAM; anything else would send
        // the device to the wrong memory.
        assert!(
            in_ram(va, buffer.len() as u64),
            "virtio: DMA buffer at {va:#x} ({} bytes) is not in dom0's identity-mapped RAM",
            buffer.len()
        );
        va
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

// ---- the shell's `disk` command ---------------------------------------------

/// `disk`, `disk read SECTOR`, `disk selftest SECTOR`.
pub fn shell_command(op: DiskOp) {
    let Some(disk) = disk() else {
        println!("disk: no virtio-blk device (QEMU virt: scripts/run.sh --disk FILE)");
        return;
    };
    let mut disk = disk.lock();
    match op {
        DiskOp::Status => {
            let c = disk.capacity_sectors();
            println!(
                "disk: virtio-blk at {:#x} ({}), polled",
                disk.base(),
                transport_name(&disk)
            );
            println!(
                "disk: capacity {c} sectors of {SECTOR_SIZE} bytes ({} MiB)",
                c / 2048
            );
            println!(
                "disk: {}",
                if disk.read_only() { "read-only" } else { "read-write" }
            );
            println!(
                "disk: flush {}",
                if disk.flush_supported() {
                    "supported (VIRTIO_BLK_F_FLUSH)"
                } else {
                    "not offered (write-through device)"
                }
            );
        }
        DiskOp::Read(sector) => super::disk::read_command(&mut *disk, sector),
        DiskOp::Selftest(sector) => super::disk::selftest_command(&mut *disk, sector),
    }
}
