//! virtio devices that dom0 serves to guests, device side, arch-neutral:
//! the virtio-mmio transport version 2 of virtio 1.x ("modern" only, no
//! legacy interface) with split virtqueues, and three device types.
//!
//! The layers, bottom up:
//!
//! * [`memory`] — [`GuestMemory`], the guest's RAM as the device reaches
//!   it (dom0 implements it over its mapping of the guest; [`VecMemory`]
//!   for tests).
//! * [`queue`] — split virtqueues (§2.7): taking descriptor chains from the
//!   available ring and returning them on the used ring, with every
//!   guest-written value checked.
//! * [`device`] — the [`Device`] trait a device type implements.
//! * [`mmio`] — [`MmioDevice`], the register file in the guest's MMIO
//!   window (§4.2): feature negotiation, status, queue setup,
//!   notifications, interrupt status.
//! * [`console`], [`block`], [`net`] — the device types; [`switch`] — an
//!   L2 switch to connect network devices.
//!
//! Guest input is hostile: no value a guest controls can make this crate
//! panic, loop without bound or allocate without bound. A guest that
//! breaks a queue's protocol gets `DEVICE_NEEDS_RESET` (§2.1.2) and a
//! configuration-change interrupt; its device serves nothing more until
//! the driver resets it. A malformed request in a sound queue only fails
//! that request. Work per call is bounded by a budget, so dom0 can serve
//! many devices fairly (see [`MmioDevice::set_budget`]).
//!
//! # Serving a device from dom0
//!
//! ```
//! use hv_virtio::{Console, MmioDevice, VecMemory};
//!
//! let mut ram = VecMemory::new(0x4000_0000, 0x1_0000); // dom0: the guest's RAM
//! let mut dev = MmioDevice::new(Console::new());
//!
//! // A forwarded guest access at `offset` in the device's window:
//! let (offset, size, data) = (0x070, 4, 0); // the driver resets the device
//! match dev.write(&mut ram, offset, size, data) {
//!     Ok(outcome) => {
//!         // outcome.more_work: poll this device again after the others.
//!         let _ = outcome;
//!     }
//!     Err(_) => { /* complete the IO request with a fault */ }
//! }
//! // After every access, poll or delivery: the level of the device's SPI.
//! let line_high = dev.interrupt_pending();
//! assert!(!line_high);
//!
//! // Output the guest wrote, input for it:
//! let _bytes = dev.device_mut().take_output();
//! let _ = dev.deliver_rx(&mut ram, b"ls\n");
//! ```
//!
//! Section numbers (§) refer to the virtio 1.2 specification ("Virtual I/O
//! Device (VIRTIO) Version 1.2"); they match 1.1 and 1.3 for everything
//! used here.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod block;
pub mod console;
pub mod device;
pub mod memory;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod switch;

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests;

pub use block::{Block, BlockBackend, BlockOp, MemDisk, OpKind};
pub use console::Console;
pub use device::{Device, RxError};
pub use memory::{GuestMemory, MemError, VecMemory};
pub use mmio::{AccessError, MmioDevice, Outcome};
pub use net::Net;
pub use queue::QueueError;
pub use switch::{Route, Switch};
