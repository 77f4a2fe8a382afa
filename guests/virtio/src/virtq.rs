//! A minimal virtio-mmio (version 2, "modern") driver core: the register
//! file (§4.2.2), device initialisation (§3.1.1), split virtqueues (§2.7)
//! in guest RAM, and a bump allocator for the memory the devices reach.
//!
//! Everything the device reads or writes lives in the DMA arena (free RAM
//! above the image, below the device tree) and is only touched with
//! volatile accesses, so the compiler never caches what the device
//! changes. Section numbers (§) are those of virtio 1.2.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

use hv_mmio::{read32, read8, write32};
use testkit::arch::cpu;

/// Register offsets (§4.2.2) and status bits (§2.1): the device side's
/// (`hv_virtio`), so driver and device cannot disagree.
pub mod reg {
    pub use hv_virtio::mmio::reg::*;
    /// Start of the device configuration space.
    pub const CONFIG: u64 = hv_virtio::mmio::CONFIG_OFFSET;
}

pub use hv_virtio::mmio::status;

/// `InterruptStatus` bits (§4.2.2).
pub const ISR_USED_BUFFER: u32 = 1;
pub const ISR_CONFIG_CHANGE: u32 = 2;

pub const MAGIC: u32 = 0x7472_6976;
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_INDIRECT_DESC: u64 = 1 << 28;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

pub const DEVICE_NET: u32 = 1;
pub const DEVICE_BLOCK: u32 = 2;
pub const DEVICE_CONSOLE: u32 = 3;

// ---- DMA arena -------------------------------------------------------------

static ARENA_NEXT: AtomicU64 = AtomicU64::new(0);
static ARENA_END: AtomicU64 = AtomicU64::new(0);

/// Hands `[start, end)` (free guest RAM) to [`dma_alloc`].
pub fn arena_init(start: u64, end: u64) {
    ARENA_NEXT.store(start, Ordering::SeqCst);
    ARENA_END.store(end, Ordering::SeqCst);
}

/// Bytes left in the arena.
pub fn arena_left() -> u64 {
    ARENA_END.load(Ordering::SeqCst).saturating_sub(ARENA_NEXT.load(Ordering::SeqCst))
}

/// `size` zeroed bytes aligned to `align` (a power of two) in the arena;
/// never freed. Panics when the arena is exhausted (a bug in this guest).
pub fn dma_alloc(size: u64, align: u64) -> u64 {
    let at = (ARENA_NEXT.load(Ordering::SeqCst) + align - 1) & !(align - 1);
    let end = at + size;
    assert!(end <= ARENA_END.load(Ordering::SeqCst), "DMA arena exhausted ({size} bytes wanted)");
    ARENA_NEXT.store(end, Ordering::SeqCst);
    fill(at, 0, size as usize);
    at
}

// Volatile accessors for memory a device reads or writes. The addresses are
// identity-mapped guest RAM inside the arena.

pub fn rd8(a: u64) -> u8 {
    // SAFETY: `a` is arena memory (mapped RAM), see the module comment.
    unsafe { read_volatile(a as *const u8) }
}
pub fn rd16(a: u64) -> u16 {
    // SAFETY: as rd8; callers pass 2-byte aligned addresses.
    unsafe { read_volatile(a as *const u16) }
}
pub fn rd32(a: u64) -> u32 {
    // SAFETY: as rd8; 4-byte aligned.
    unsafe { read_volatile(a as *const u32) }
}
pub fn wr8(a: u64, v: u8) {
    // SAFETY: as rd8.
    unsafe { write_volatile(a as *mut u8, v) }
}
pub fn wr16(a: u64, v: u16) {
    // SAFETY: as rd8; 2-byte aligned.
    unsafe { write_volatile(a as *mut u16, v) }
}
pub fn wr32(a: u64, v: u32) {
    // SAFETY: as rd8; 4-byte aligned.
    unsafe { write_volatile(a as *mut u32, v) }
}
pub fn wr64(a: u64, v: u64) {
    // SAFETY: as rd8; 8-byte aligned.
    unsafe { write_volatile(a as *mut u64, v) }
}

/// Copies `data` to arena memory at `a`.
pub fn put(a: u64, data: &[u8]) {
    for (i, &b) in data.iter().enumerate() {
        wr8(a + i as u64, b);
    }
}

/// Copies arena memory at `a` into `buf`.
pub fn get(a: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = rd8(a + i as u64);
    }
}

/// Sets `len` bytes at `a` to `v`.
pub fn fill(a: u64, v: u8, len: usize) {
    for i in 0..len as u64 {
        wr8(a + i, v);
    }
}

/// Full barrier between the driver's memory accesses, as the device (dom0
/// on another CPU) observes them.
pub fn mb() {
    // SAFETY: a barrier has no operands.
    unsafe { asm!("dmb ish", options(nostack, preserves_flags)) };
}

/// Everything written so far is visible before the next (device) access:
/// the ring updates before a queue notification.
pub fn wmb_device() {
    // SAFETY: a barrier has no operands.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

// ---- the transport ---------------------------------------------------------

/// One virtio-mmio window.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    pub base: u64,
    pub slot: usize,
}

impl Mmio {
    pub fn read(&self, off: u64) -> u32 {
        // SAFETY: a register of a virtio-mmio window the device tree
        // describes; 32-bit aligned access, as the transport requires.
        unsafe { read32((self.base + off) as usize) }
    }

    pub fn write(&self, off: u64, v: u32) {
        // SAFETY: as `read`.
        unsafe { write32((self.base + off) as usize, v) }
    }

    /// Byte `off` of the device-specific configuration space.
    pub fn config8(&self, off: u64) -> u8 {
        // SAFETY: configuration space takes 8-bit accesses.
        unsafe { read8((self.base + reg::CONFIG + off) as usize) }
    }

    /// The little-endian 32-bit word at `off` of the configuration space.
    pub fn config32(&self, off: u64) -> u32 {
        self.read(reg::CONFIG + off)
    }

    pub fn status(&self) -> u32 {
        self.read(reg::STATUS)
    }

    pub fn device_id(&self) -> u32 {
        self.read(reg::DEVICE_ID)
    }

    /// Every feature bit the device offers.
    pub fn device_features(&self) -> u64 {
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.read(reg::DEVICE_FEATURES);
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.read(reg::DEVICE_FEATURES);
        u64::from(lo) | u64::from(hi) << 32
    }

    /// Writes the driver's feature bits (both words).
    pub fn set_driver_features(&self, f: u64) {
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (f >> 32) as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, f as u32);
    }

    /// Device reset: Status = 0, which must read back 0 (§4.2.3.1).
    pub fn reset(&self) -> Result<(), String> {
        self.write(reg::STATUS, 0);
        match self.status() {
            0 => Ok(()),
            s => Err(format!("Status reads {s:#x} after a reset")),
        }
    }

    /// §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, the offered subset of
    /// `wanted` plus VERSION_1, FEATURES_OK (which the device must keep).
    /// Returns the negotiated features.
    pub fn negotiate(&self, wanted: u64) -> Result<u64, String> {
        self.reset()?;
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.device_features();
        if offered & F_VERSION_1 == 0 {
            return Err(format!("VERSION_1 not offered (features {offered:#x})"));
        }
        let f = (wanted & offered) | F_VERSION_1;
        self.set_driver_features(f);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        let s = self.status();
        if s & status::FEATURES_OK == 0 {
            return Err(format!("FEATURES_OK not kept (features {f:#x}, Status {s:#x})"));
        }
        Ok(f)
    }

    /// §3.1.1 step 8: DRIVER_OK.
    pub fn driver_ok(&self) {
        let s = self.status();
        self.write(reg::STATUS, s | status::DRIVER_OK);
    }
}

/// `virtio,mmio` nodes of the device tree: (base, size) in address order.
pub fn find_devices(blob: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let Ok(fdt) = fdt::Fdt::new(blob) else { return out };
    for node in fdt.all_nodes() {
        let compatible = node.compatible().is_some_and(|c| c.all().any(|s| s == "virtio,mmio"));
        if !compatible {
            continue;
        }
        if let Some(r) = node.reg().and_then(|mut r| r.next()) {
            out.push((r.starting_address as u64, r.size.unwrap_or(0) as u64));
        }
    }
    out.sort_unstable();
    out
}

// ---- split virtqueues --------------------------------------------------------

/// A split virtqueue in the arena, driver side.
pub struct Virtq {
    pub index: u32,
    pub size: u16,
    /// Descriptor table, available ring, used ring.
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    free: Vec<u16>,
    /// Our shadow of avail.idx.
    pub avail_idx: u16,
    /// used.idx up to which we have taken entries.
    pub last_used: u16,
}

impl Virtq {
    /// Queue `index` with `size` descriptors (a power of two), rings zeroed.
    pub fn new(index: u32, size: u16) -> Virtq {
        let n = u64::from(size);
        let desc = dma_alloc(16 * n, 4096);
        let avail = dma_alloc(6 + 2 * n, 64);
        let used = dma_alloc(6 + 8 * n, 64);
        let mut q = Virtq { index, size, desc, avail, used, free: Vec::new(), avail_idx: 0, last_used: 0 };
        q.clear();
        q
    }

    /// Back to the state after a device reset: rings zeroed, every
    /// descriptor free, both indices 0, interrupts off (we poll).
    pub fn clear(&mut self) {
        let n = usize::from(self.size);
        fill(self.desc, 0, 16 * n);
        fill(self.avail, 0, 6 + 2 * n);
        fill(self.used, 0, 6 + 8 * n);
        self.free = (0..self.size).rev().collect();
        self.avail_idx = 0;
        self.last_used = 0;
        wr16(self.avail, AVAIL_F_NO_INTERRUPT);
    }

    /// Tells the device where the queue is and enables it (§4.2.3.2).
    pub fn setup(&self, dev: &Mmio) -> Result<(), String> {
        dev.write(reg::QUEUE_SEL, self.index);
        if dev.read(reg::QUEUE_READY) != 0 {
            return Err(format!("queue {} already ready", self.index));
        }
        let max = dev.read(reg::QUEUE_NUM_MAX);
        if max < u32::from(self.size) {
            return Err(format!("queue {}: QueueNumMax {max} < {}", self.index, self.size));
        }
        dev.write(reg::QUEUE_NUM, u32::from(self.size));
        self.write_addresses(dev, self.desc, self.avail, self.used);
        dev.write(reg::QUEUE_READY, 1);
        if dev.read(reg::QUEUE_READY) != 1 {
            return Err(format!("queue {}: QueueReady did not stick", self.index));
        }
        Ok(())
    }

    /// Writes the three queue addresses of the selected queue.
    pub fn write_addresses(&self, dev: &Mmio, desc: u64, avail: u64, used: u64) {
        for (off, a) in [(reg::QUEUE_DESC_LOW, desc), (reg::QUEUE_DRIVER_LOW, avail), (reg::QUEUE_DEVICE_LOW, used)] {
            dev.write(off, a as u32);
            dev.write(off + 4, (a >> 32) as u32);
        }
    }

    /// The descriptor the next single-buffer `add` will use.
    pub fn next_free(&self) -> Option<u16> {
        self.free.last().copied()
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Writes descriptor `i` as given (hostile tests write any values).
    pub fn set_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = self.desc + 16 * u64::from(i);
        wr64(d, addr);
        wr32(d + 8, len);
        wr16(d + 12, flags);
        wr16(d + 14, next);
    }

    /// Offers chain `head`: the ring slot, then (after a barrier) avail.idx.
    pub fn push_avail(&mut self, head: u16) {
        let slot = self.avail_idx % self.size;
        wr16(self.avail + 4 + 2 * u64::from(slot), head);
        mb();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        wr16(self.avail + 2, self.avail_idx);
    }

    /// Sets avail.idx to any value (hostile tests).
    pub fn set_avail_idx(&mut self, idx: u16) {
        mb();
        self.avail_idx = idx;
        wr16(self.avail + 2, idx);
    }

    /// Puts a chain of `(address, length, device-writable)` buffers on the
    /// queue; `None` if not enough descriptors are free.
    pub fn add(&mut self, bufs: &[(u64, u32, bool)]) -> Option<u16> {
        if bufs.is_empty() || bufs.len() > self.free.len() {
            return None;
        }
        let ids: Vec<u16> = (0..bufs.len()).map(|_| self.free.pop().unwrap_or(0)).collect();
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let mut flags = if writable { DESC_F_WRITE } else { 0 };
            if !last {
                flags |= DESC_F_NEXT;
            }
            let next = if last { 0 } else { ids[k + 1] };
            self.set_desc(ids[k], addr, len, flags, next);
        }
        self.push_avail(ids[0]);
        Some(ids[0])
    }

    /// Queue notification (after making the rings visible).
    pub fn notify(&self, dev: &Mmio) {
        wmb_device();
        dev.write(reg::QUEUE_NOTIFY, self.index);
    }

    pub fn used_idx(&self) -> u16 {
        rd16(self.used + 2)
    }

    /// The next used element `(id, len)`, if the device has returned one;
    /// its chain's descriptors become free again.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        if self.used_idx() == self.last_used {
            return None;
        }
        // The element was written before used.idx.
        mb();
        let slot = self.last_used % self.size;
        let e = self.used + 4 + 8 * u64::from(slot);
        let (id, len) = (rd32(e) as u16, rd32(e + 4));
        self.last_used = self.last_used.wrapping_add(1);
        self.release(id);
        Some((id, len))
    }

    /// Frees the chain starting at `head` (our own table: follows NEXT at
    /// most `size` times).
    fn release(&mut self, head: u16) {
        let mut i = head;
        for _ in 0..self.size {
            if i >= self.size || self.free.contains(&i) {
                return;
            }
            self.free.push(i);
            let d = self.desc + 16 * u64::from(i);
            if rd16(d + 12) & DESC_F_NEXT == 0 {
                return;
            }
            i = rd16(d + 14);
        }
    }

    /// Waits up to `timeout_us` for a used element.
    pub fn wait_used(&mut self, timeout_us: u64) -> Option<(u16, u32)> {
        let start = cpu::counter();
        loop {
            if let Some(e) = self.pop_used() {
                return Some(e);
            }
            if cpu::elapsed_us(start) >= timeout_us {
                return self.pop_used();
            }
            core::hint::spin_loop();
        }
    }
}
