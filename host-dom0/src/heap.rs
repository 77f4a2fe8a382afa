//! Dom0's heap (`buddy_system_allocator`) on a static region inside the image.
//!
//! Allocations run with IRQs masked: interrupt handlers (the IO event's)
//! allocate and take locks whose holders allocate, so an interrupt must
//! never arrive while its CPU holds the heap's lock. (It did: the shell
//! held the IO request lock and waited for the heap, whose lock another CPU
//! held when the IO event interrupted it there and waited for the port.)

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

use buddy_system_allocator::LockedHeap;

use crate::arch::aarch64::cpu;

/// The buddy allocator, entered with IRQs masked.
struct IrqSafeHeap(LockedHeap<32>);

// SAFETY: forwards to `LockedHeap`'s implementation, which upholds the
// `GlobalAlloc` contract; masking IRQs around it changes no result.
unsafe impl GlobalAlloc for IrqSafeHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let daif = cpu::save_and_mask_irqs();
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { self.0.alloc(layout) };
        cpu::restore_irqs(daif);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let daif = cpu::save_and_mask_irqs();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) };
        cpu::restore_irqs(daif);
    }
}

#[global_allocator]
static HEAP: IrqSafeHeap = IrqSafeHeap(LockedHeap::empty());

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
    unsafe { HEAP.0.lock().init(start, HEAP_SIZE) };
}
