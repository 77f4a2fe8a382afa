//! The machine's page allocator: one [`FrameAllocator`] over the RAM no
//! one else uses, filled by `boot` and shared by every CPU behind a lock
//! (VM creation and destruction only, never a trap path). Pages are
//! reached through the EL2 identity map (in host tests, through the test's
//! own heap block), so a physical address is also where the hypervisor
//! reads and writes the page.

use crate::addr::PhysAddr;
use crate::mm::frames::{FrameAllocator, FrameError};
use crate::sync::Mutex;

static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Makes `frames` the machine's page allocator (boot, or a test).
pub fn install(frames: FrameAllocator) {
    *FRAMES.lock() = Some(frames);
}

/// `pages` contiguous pages (rounded up to a power of two, aligned to it).
pub fn alloc(pages: usize) -> Option<PhysAddr> {
    FRAMES.lock().as_mut()?.alloc(pages)
}

/// As [`alloc`], aligned to `align` bytes at least.
pub fn alloc_aligned(pages: usize, align: u64) -> Option<PhysAddr> {
    FRAMES.lock().as_mut()?.alloc_aligned(pages, align)
}

/// Returns pages from [`alloc`] (the same `pages`).
pub fn free(pa: PhysAddr, pages: usize) -> Result<(), FrameError> {
    FRAMES.lock().as_mut().ok_or(FrameError::OutOfRange)?.free(pa, pages)
}

/// `(total, free)` pages, once boot has set the allocator up.
pub fn stats() -> Option<(usize, usize)> {
    FRAMES.lock().as_ref().map(|f| (f.total_pages(), f.free_pages()))
}
