//! The virtio-mmio transport, version 2 ("modern", virtio 1.x §4.2), device
//! side: the register file a guest sees in its MMIO window, feature
//! negotiation, the device status state machine, queue configuration,
//! notifications and the interrupt status.
//!
//! Dom0 forwards each guest access in the window to [`MmioDevice::read`] or
//! [`MmioDevice::write`] and answers an [`AccessError`] with a fault (the
//! guest takes an abort). After each call it sets the device's interrupt
//! line (level-triggered, like QEMU's `virt` SPIs) to
//! [`MmioDevice::interrupt_pending`]: raised while `InterruptStatus` is
//! nonzero, lowered once the driver's `InterruptACK` has cleared it.
//!
//! Register accesses (offsets below 0x100) must be 32 bits wide and
//! aligned (§4.2.2.2); configuration space (0x100 up to the end of the
//! window) takes naturally aligned 8-, 16- and 32-bit accesses. Reads of
//! write-only or unassigned registers return 0 and writes to read-only or
//! unassigned registers are ignored, as is every configuration-space write
//! (no device here has a writable configuration field).

use alloc::vec::Vec;

use crate::device::{Device, RxError, VIRTIO_F_VERSION_1};
use crate::memory::GuestMemory;
use crate::queue::{Queue, QueueError};

/// `MagicValue`: "virt" in little-endian ASCII.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// `Version` of the transport: 2 is the virtio 1.x (non-legacy) layout.
pub const VERSION: u32 = 2;
/// `VendorID` of these devices: "HVIO" in little-endian ASCII (drivers do
/// not interpret it; QEMU's is "QEMU", 0x554D_4551).
pub const VENDOR_ID: u32 = 0x4F49_5648;
/// Size of a device's MMIO window (the same as QEMU's `virt` slots).
pub const WINDOW_SIZE: u64 = 0x200;
/// Offset of the device-specific configuration space.
pub const CONFIG_OFFSET: u64 = 0x100;

/// Register offsets in the window (§4.2.2, table "MMIO Device Register
/// Layout").
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// Device status bits (§2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete (the device refuses it by not
    /// keeping the bit, §3.1.1).
    pub const FEATURES_OK: u32 = 8;
    /// Set by the device: it hit an error it cannot recover from and the
    /// driver must reset it (§2.1.2).
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// `InterruptStatus` bit: a queue has new used buffers (§4.2.2).
pub const INTERRUPT_USED_BUFFER: u32 = 1;
/// `InterruptStatus` bit: the configuration changed (or the device needs a
/// reset).
pub const INTERRUPT_CONFIG_CHANGE: u32 = 2;

/// Why an access to the window was refused; dom0 answers with a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// A register access that is not 32 bits wide, or a configuration
    /// access that is not 1, 2 or 4 bytes.
    Size { offset: u64, size: u8 },
    /// Not naturally aligned.
    Unaligned { offset: u64, size: u8 },
    /// Not inside the window.
    OutOfRange { offset: u64 },
}

/// What a call that may process queues did, for the caller's interrupt
/// and scheduling decisions.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// This call set a bit in `InterruptStatus`: the interrupt line must be
    /// raised (it is already, if [`MmioDevice::interrupt_pending`] was
    /// true before).
    pub interrupt: bool,
    /// A queue still has work that the per-call budget did not cover: call
    /// [`MmioDevice::poll`] again, after giving other devices their turn.
    pub more_work: bool,
}

impl core::ops::BitOrAssign for Outcome {
    fn bitor_assign(&mut self, rhs: Self) {
        self.interrupt |= rhs.interrupt;
        self.more_work |= rhs.more_work;
    }
}

/// Default per-call budget: the queue's size, i.e. at most one ring's
/// worth of requests per queue per call.
pub const DEFAULT_BUDGET: usize = usize::MAX;

/// One virtio-mmio device: the transport state plus a [`Device`].
///
/// Every method is safe to call with any guest-controlled value; nothing
/// panics, and work per call is bounded by the queue sizes (chosen by the
/// device) and the budget.
#[derive(Debug)]
pub struct MmioDevice<D> {
    device: D,
    queues: Vec<Queue>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver wrote a nonzero value at a feature selector above 1.
    driver_features_unknown: bool,
    queue_sel: u32,
    interrupt_status: u32,
    config_generation: u32,
    budget: usize,
    error: Option<QueueError>,
}

impl<D: Device> MmioDevice<D> {
    /// The device in its reset state.
    pub fn new(device: D) -> Self {
        let queues = Self::fresh_queues(&device);
        MmioDevice {
            device,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_unknown: false,
            queue_sel: 0,
            interrupt_status: 0,
            config_generation: 0,
            budget: DEFAULT_BUDGET,
            error: None,
        }
    }

    fn fresh_queues(device: &D) -> Vec<Queue> {
        let max = device.queue_max_size();
        (0..device.queue_count()).map(|_| Queue::new(max)).collect()
    }

    /// The device type's state (to drain output, read statistics).
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device type's state, mutable (to drain output).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Sets how many requests one call serves per queue at most (at least
    /// 1; [`DEFAULT_BUDGET`] means the queue size). With several devices,
    /// the caller serves each in turn and comes back to those whose
    /// [`Outcome::more_work`] was set, so no guest can monopolise dom0.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget.max(1);
    }

    /// The `Status` register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// Whether the interrupt line should be asserted (`InterruptStatus` is
    /// nonzero).
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_status != 0
    }

    /// Whether the driver has the device up: `FEATURES_OK` and `DRIVER_OK`
    /// set, neither `DEVICE_NEEDS_RESET` nor `FAILED`. Queues are served
    /// only then (§3.1.1: not before `DRIVER_OK`).
    pub fn live(&self) -> bool {
        let up = status::FEATURES_OK | status::DRIVER_OK;
        let down = status::DEVICE_NEEDS_RESET | status::FAILED;
        self.status & up == up && self.status & down == 0
    }

    /// Whether the device has set `DEVICE_NEEDS_RESET`.
    pub fn needs_reset(&self) -> bool {
        self.status & status::DEVICE_NEEDS_RESET != 0
    }

    /// The queue error that made the device need a reset (for dom0's log:
    /// it is the guest's fault, not dom0's).
    pub fn error(&self) -> Option<QueueError> {
        self.error
    }

    /// The features the driver accepted (meaningful once `FEATURES_OK` is
    /// set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Every feature the device offers.
    pub fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// Queue `index`'s state.
    pub fn queue(&self, index: usize) -> Option<&Queue> {
        self.queues.get(index)
    }

    /// A guest load of `size` bytes at `offset` into the window.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, AccessError> {
        if offset >= CONFIG_OFFSET {
            let at = check_config_access(offset, size)?;
            let mut bytes = [0u8; 4];
            if let Some(buf) = bytes.get_mut(..usize::from(size)) {
                self.device.read_config(at, buf);
            }
            return Ok(u64::from(u32::from_le_bytes(bytes)));
        }
        check_register_access(offset, size)?;
        let queue = self.selected_queue();
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            // §4.2.2: QueueNumMax reads 0 for a queue that does not exist.
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            // No shared memory regions: "a length of -1" (§4.2.2).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        Ok(u64::from(value))
    }

    /// A guest store of the low `size` bytes of `value` at `offset` into
    /// the window. A `QueueNotify` write serves that queue at once, within
    /// the budget.
    pub fn write(
        &mut self,
        mem: &mut dyn GuestMemory,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<Outcome, AccessError> {
        if offset >= CONFIG_OFFSET {
            check_config_access(offset, size)?;
            return Ok(Outcome::default());
        }
        check_register_access(offset, size)?;
        let v = value as u32;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES => self.write_driver_features(v),
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected_queue_if_idle() {
                    q.set_size(v);
                }
            }
            reg::QUEUE_READY => self.write_queue_ready(v),
            reg::QUEUE_NOTIFY => {
                return Ok(match usize::try_from(v) {
                    Ok(index) => self.serve(mem, index),
                    Err(_) => Outcome::default(),
                });
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => self.write_status(v),
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH => self.write_queue_address(offset, v),
            _ => {}
        }
        Ok(Outcome::default())
    }

    /// Serves every ready queue once (within the budget): delivers data
    /// queued with [`MmioDevice::deliver_rx`] or the device's own methods,
    /// and picks up requests whose notification was deferred by the
    /// budget. Does nothing unless the device is live.
    pub fn poll(&mut self, mem: &mut dyn GuestMemory) -> Outcome {
        let mut out = Outcome::default();
        for index in 0..self.queues.len() {
            out |= self.serve(mem, index);
        }
        out
    }

    /// Hands the device data from outside for the guest (console input, a
    /// network frame) and delivers what the guest has buffers for.
    pub fn deliver_rx(&mut self, mem: &mut dyn GuestMemory, data: &[u8]) -> Result<Outcome, RxError> {
        self.device.push_rx(data, self.live())?;
        Ok(self.poll(mem))
    }

    /// The device changed its configuration space: bump `ConfigGeneration`
    /// and, once the driver is up, send a configuration-change
    /// notification (§2.5.1, §4.2.3.3).
    pub fn config_changed(&mut self) -> Outcome {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK == 0 {
            return Outcome::default();
        }
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE;
        Outcome { interrupt: true, more_work: false }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        usize::try_from(self.queue_sel).ok().and_then(|i| self.queues.get(i))
    }

    /// The selected queue, if it exists and is not ready: its registers
    /// are only writable then (§4.2.3.2 sets them up before `QueueReady`).
    fn selected_queue_if_idle(&mut self) -> Option<&mut Queue> {
        let i = usize::try_from(self.queue_sel).ok()?;
        self.queues.get_mut(i).filter(|q| !q.ready())
    }

    /// `QueueReady`: 1 enables the selected queue (refused, so it reads
    /// back 0, while its size is invalid), 0 disables it; other values are
    /// ignored.
    fn write_queue_ready(&mut self, v: u32) {
        let Some(q) = usize::try_from(self.queue_sel).ok().and_then(|i| self.queues.get_mut(i)) else {
            return;
        };
        if v <= 1 {
            q.set_ready(v == 1);
        }
    }

    /// Writes one half of a queue address: `offset` is a `*_LOW` register
    /// or the `*_HIGH` one 4 bytes above it.
    fn write_queue_address(&mut self, offset: u64, v: u32) {
        let high = offset & 4 != 0;
        let merge = |current: u64| {
            if high {
                (current & 0xFFFF_FFFF) | (u64::from(v) << 32)
            } else {
                (current & !0xFFFF_FFFF) | u64::from(v)
            }
        };
        let Some(q) = self.selected_queue_if_idle() else { return };
        let (desc, driver, device) = q.addresses();
        match offset & !4 {
            reg::QUEUE_DESC_LOW => q.set_desc_table(merge(desc)),
            reg::QUEUE_DRIVER_LOW => q.set_avail_ring(merge(driver)),
            reg::QUEUE_DEVICE_LOW => q.set_used_ring(merge(device)),
            _ => {}
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        // Frozen once negotiation completed (§3.1.1).
        if self.status & status::FEATURES_OK != 0 {
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xFFFF_FFFF) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | (u64::from(v) << 32),
            _ => self.driver_features_unknown |= v != 0,
        }
    }

    /// The driver's feature set is acceptable: a subset of the offered
    /// one, with `VIRTIO_F_VERSION_1` (this device has no legacy interface).
    fn features_acceptable(&self) -> bool {
        !self.driver_features_unknown
            && self.driver_features & !self.device_features() == 0
            && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    /// §2.1, §3.1.1, §4.2.2: 0 resets; setting `FEATURES_OK` is refused
    /// (the bit is not kept, the driver reads it back) if the features are
    /// unacceptable; `DEVICE_NEEDS_RESET` belongs to the device and stays
    /// until a reset.
    fn write_status(&mut self, v: u32) {
        let v = v & 0xFF;
        if v == 0 {
            self.reset();
            return;
        }
        let mut new = v & !status::DEVICE_NEEDS_RESET;
        let setting_features_ok = new & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0;
        if setting_features_ok && !self.features_acceptable() {
            new &= !status::FEATURES_OK;
        }
        self.status = new | (self.status & status::DEVICE_NEEDS_RESET);
    }

    /// Device reset (§2.4, §4.2.3.1): everything back to its initial state,
    /// the device type's session state too.
    fn reset(&mut self) {
        self.queues = Self::fresh_queues(&self.device);
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_unknown = false;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        self.error = None;
        self.device.reset();
    }

    /// Serves queue `index` if it exists, is ready and the device is live.
    fn serve(&mut self, mem: &mut dyn GuestMemory, index: usize) -> Outcome {
        if !self.live() {
            return Outcome::default();
        }
        let Some(queue) = self.queues.get_mut(index).filter(|q| q.ready()) else {
            return Outcome::default();
        };
        let budget = self.budget.min(usize::from(queue.size()));
        let served = match self.device.process(index, queue, mem, budget) {
            Ok(served) => served,
            Err(e) => return self.fail(e),
        };
        let mut out = Outcome { interrupt: false, more_work: served.more };
        if served.completed > 0 {
            match queue.wants_interrupt(mem) {
                Ok(true) => {
                    self.interrupt_status |= INTERRUPT_USED_BUFFER;
                    out.interrupt = true;
                }
                Ok(false) => {}
                Err(e) => return self.fail(e),
            }
        }
        out
    }

    /// A queue is broken: set `DEVICE_NEEDS_RESET` and notify the driver
    /// with a configuration-change interrupt (§2.1.2, §4.2.3.3). Nothing
    /// is served until the driver resets the device.
    fn fail(&mut self, e: QueueError) -> Outcome {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt_status |= INTERRUPT_CONFIG_CHANGE;
        Outcome { interrupt: true, more_work: false }
    }
}

/// Checks a register access: inside the window, 32 bits, aligned.
fn check_register_access(offset: u64, size: u8) -> Result<(), AccessError> {
    check_window(offset, size)?;
    if size != 4 {
        return Err(AccessError::Size { offset, size });
    }
    if !offset.is_multiple_of(4) {
        return Err(AccessError::Unaligned { offset, size });
    }
    Ok(())
}

/// Checks a configuration-space access and returns its offset in the
/// configuration structure.
fn check_config_access(offset: u64, size: u8) -> Result<usize, AccessError> {
    check_window(offset, size)?;
    if !matches!(size, 1 | 2 | 4) {
        return Err(AccessError::Size { offset, size });
    }
    if !offset.is_multiple_of(u64::from(size)) {
        return Err(AccessError::Unaligned { offset, size });
    }
    usize::try_from(offset.saturating_sub(CONFIG_OFFSET)).map_err(|_| AccessError::OutOfRange { offset })
}

fn check_window(offset: u64, size: u8) -> Result<(), AccessError> {
    match offset.checked_add(u64::from(size)) {
        Some(end) if end <= WINDOW_SIZE => Ok(()),
        _ => Err(AccessError::OutOfRange { offset }),
    }
}
