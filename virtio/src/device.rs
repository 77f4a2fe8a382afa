//! What a virtio device type provides to the transport ([`crate::mmio`]):
//! identity, features, configuration space, and request processing on its
//! queues.

use alloc::boxed::Box;

use crate::memory::GuestMemory;
use crate::queue::{Queue, QueueError};

/// Device type: network card (§5.1).
pub const DEVICE_ID_NET: u32 = 1;
/// Device type: block device (§5.2).
pub const DEVICE_ID_BLOCK: u32 = 2;
/// Device type: console (§5.3).
pub const DEVICE_ID_CONSOLE: u32 = 3;

/// Feature bit: the driver and device speak virtio 1.x, not the legacy
/// interface (§6.1). Always offered, and required of the driver.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// What one call of [`Device::process`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Chains put on the used ring.
    pub completed: usize,
    /// The budget ran out while work remained on this queue.
    pub more: bool,
}

/// Why [`Device::push_rx`] refused data coming from outside for the guest.
/// Refused data was not queued (the device counts it in its statistics);
/// the caller may drop it or try again later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// This device type has no receive path.
    Unsupported,
    /// The driver has not brought the device up (or it needs a reset), and
    /// this device type does not hold data for later.
    NotReady,
    /// The device's bounded backlog is full.
    Full,
    /// The data is not something the device can deliver (e.g. a frame
    /// shorter than an Ethernet header or longer than the maximum).
    Invalid,
}

/// A virtio device type, as the MMIO transport drives it.
///
/// The transport owns the queues and the common registers (features,
/// status, interrupts); the device owns its configuration space and what
/// its queues mean. It only sees queues that are ready while the device is
/// live (`DRIVER_OK`, not `DEVICE_NEEDS_RESET`).
pub trait Device {
    /// The virtio device ID (`DEVICE_ID_*`).
    fn device_id(&self) -> u32;

    /// The device-type feature bits it offers; the transport adds
    /// `VIRTIO_F_VERSION_1`.
    fn features(&self) -> u64;

    /// Number of virtqueues.
    fn queue_count(&self) -> usize;

    /// `QueueNumMax` of every queue: a power of two, at most 32768.
    fn queue_max_size(&self) -> u16;

    /// Fills `data` with the configuration-space bytes at `offset`; bytes
    /// past the device's configuration structure read as 0. See
    /// [`copy_config`].
    fn read_config(&self, offset: usize, data: &mut [u8]);

    /// The driver reset the device: forget everything that belongs to the
    /// driver's session (pending input, in-flight state).
    fn reset(&mut self);

    /// Serves queue `index` (below `queue_count()`, ready): takes at most
    /// `budget` chains, completing each on the used ring. A `QueueError`
    /// means the queue is broken; the transport then sets
    /// `DEVICE_NEEDS_RESET`.
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        budget: usize,
    ) -> Result<Served, QueueError>;

    /// Queues data arriving from outside for the guest (console input, a
    /// network frame); the transport's next poll of the receive queue
    /// delivers it. `live` says whether the driver has the device up.
    fn push_rx(&mut self, data: &[u8], live: bool) -> Result<(), RxError> {
        let _ = (data, live);
        Err(RxError::Unsupported)
    }
}

impl<D: Device + ?Sized> Device for Box<D> {
    fn device_id(&self) -> u32 {
        (**self).device_id()
    }
    fn features(&self) -> u64 {
        (**self).features()
    }
    fn queue_count(&self) -> usize {
        (**self).queue_count()
    }
    fn queue_max_size(&self) -> u16 {
        (**self).queue_max_size()
    }
    fn read_config(&self, offset: usize, data: &mut [u8]) {
        (**self).read_config(offset, data)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        budget: usize,
    ) -> Result<Served, QueueError> {
        (**self).process(index, queue, mem, budget)
    }
    fn push_rx(&mut self, data: &[u8], live: bool) -> Result<(), RxError> {
        (**self).push_rx(data, live)
    }
}

/// Copies the part of `config` at `offset` into `data`, zero-filling what
/// lies past its end.
pub fn copy_config(config: &[u8], offset: usize, data: &mut [u8]) {
    data.fill(0);
    let src = config.get(offset..).unwrap_or(&[]);
    let n = src.len().min(data.len());
    if let (Some(dst), Some(src)) = (data.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_copy_zero_fills_past_the_end() {
        let cfg = [1, 2, 3, 4];
        let mut b = [9u8; 4];
        copy_config(&cfg, 2, &mut b);
        assert_eq!(b, [3, 4, 0, 0]);
        copy_config(&cfg, 100, &mut b);
        assert_eq!(b, [0; 4]);
        copy_config(&cfg, usize::MAX, &mut b);
        assert_eq!(b, [0; 4]);
    }
}
