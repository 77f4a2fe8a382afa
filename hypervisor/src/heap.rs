//! The hypervisor's heap (`buddy_system_allocator`). It starts on a small
//! region inside the image so the device tree can be parsed; once the page
//! allocator exists, `grow` adds RAM from it.

use core::cell::UnsafeCell;

use buddy_system_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

const BOOTSTRAP_SIZE: usize = 256 * 1024;

#[repr(C, align(4096))]
struct Bootstrap(UnsafeCell<[u8; BOOTSTRAP_SIZE]>);

// SAFETY: the region is handed to the allocator once, in `init`, and only
// reached through it afterwards.
unsafe impl Sync for Bootstrap {}

static BOOTSTRAP: Bootstrap = Bootstrap(UnsafeCell::new([0; BOOTSTRAP_SIZE]));

/// Gives the bootstrap region to the heap. Called once, on the boot CPU,
/// after the MMU is on (the allocator's lock needs cacheable memory).
pub fn init() {
    let start = BOOTSTRAP.0.get() as usize;
    // SAFETY: BOOTSTRAP is a static region used for nothing else, and this
    // is the only call.
    unsafe { HEAP.lock().init(start, BOOTSTRAP_SIZE) };
}

/// Adds `[start, start+size)` to the heap.
///
/// # Safety
/// The range must be mapped read-write, unused, and never used for anything
/// else afterwards.
pub unsafe fn grow(start: usize, size: usize) {
    // SAFETY: the caller gives up the range to the allocator.
    unsafe { HEAP.lock().add_to_heap(start, start + size) };
}
