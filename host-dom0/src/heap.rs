//! Dom0's heap (`buddy_system_allocator`) on a static region inside the image.

use core::cell::UnsafeCell;

use buddy_system_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

const HEAP_SIZE: usize = 2 << 20;

#[repr(C, align(4096))]
struct Region(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: the region is handed to the allocator once, in `init`, and only
// reached through it afterwards.
unsafe impl Sync for Region {}

static REGION: Region = Region(UnsafeCell::new([0; HEAP_SIZE]));

/// Gives the region to the heap. Called once, on the boot CPU, with the MMU
/// on (the allocator's lock needs cacheable memory).
pub fn init() {
    let start = REGION.0.get() as usize;
    // SAFETY: REGION is used for nothing else, and this is the only call.
    unsafe { HEAP.lock().init(start, HEAP_SIZE) };
}
