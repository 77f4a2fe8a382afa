//! virtio console (device ID 3, virtio 1.x §5.3): a single port without
//! `VIRTIO_CONSOLE_F_MULTIPORT`, so queue 0 is port 0's receiveq (input
//! for the guest) and queue 1 its transmitq (the guest's output).
//!
//! Both directions are bounded. Output: the device takes transmit buffers
//! only while [`Console::output`] holds less than [`OUTPUT_LIMIT`] bytes
//! (and at most [`MAX_TX_CHAIN`] bytes of each buffer), so a guest whose
//! output nobody drains is simply stalled, like a serial line under flow
//! control; after [`Console::take_output`] the caller polls the device.
//! Input: [`Console::push_input`] (or `MmioDevice::deliver_rx`) keeps at
//! most [`INPUT_CAPACITY`] bytes until the guest posts receive buffers; a
//! chunk that does not fit whole is refused and counted, so the caller can
//! keep it and retry.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::device::{copy_config, Device, RxError, Served, DEVICE_ID_CONSOLE};
use crate::memory::GuestMemory;
use crate::queue::{Chain, ChainError, Queue, QueueError};

/// Feature bit: the configuration space has valid `cols` and `rows`.
pub const VIRTIO_CONSOLE_F_SIZE: u64 = 1 << 0;
/// Port 0's receive queue (device → guest).
pub const RECEIVEQ: usize = 0;
/// Port 0's transmit queue (guest → device).
pub const TRANSMITQ: usize = 1;
/// `QueueNumMax` of both queues.
pub const QUEUE_SIZE: u16 = 64;
/// Input bytes held for the guest at most.
pub const INPUT_CAPACITY: usize = 4096;
/// Output bytes past which transmit buffers are left in the ring.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Bytes taken from one transmit buffer at most; the rest is dropped and
/// counted.
pub const MAX_TX_CHAIN: u64 = 64 * 1024;

/// Counters of what the console refused or could not do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Input bytes refused because the input buffer was full.
    pub input_refused: u64,
    /// Output bytes dropped from over-long transmit buffers.
    pub output_truncated: u64,
    /// Buffers the device could not access (outside guest RAM); they were
    /// returned with nothing transferred.
    pub bad_buffers: u64,
}

/// The console device type.
#[derive(Clone, Debug, Default)]
pub struct Console {
    size: Option<(u16, u16)>,
    input: VecDeque<u8>,
    output: Vec<u8>,
    stats: ConsoleStats,
}

impl Console {
    /// A console without a size.
    pub fn new() -> Self {
        Self::default()
    }

    /// A console that reports `cols` × `rows` (offers
    /// `VIRTIO_CONSOLE_F_SIZE`).
    pub fn with_size(cols: u16, rows: u16) -> Self {
        Console { size: Some((cols, rows)), ..Self::default() }
    }

    /// What the guest wrote and nobody has taken yet.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Takes the guest's output; poll the device afterwards if it had
    /// reached [`OUTPUT_LIMIT`].
    pub fn take_output(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.output)
    }

    /// Queues input for the guest, all of it or (when it does not fit in
    /// [`INPUT_CAPACITY`]) none of it. Poll the device to deliver it.
    pub fn push_input(&mut self, bytes: &[u8]) -> Result<(), RxError> {
        let total = self.input.len().saturating_add(bytes.len());
        if total > INPUT_CAPACITY {
            self.stats.input_refused = self.stats.input_refused.saturating_add(bytes.len() as u64);
            return Err(RxError::Full);
        }
        self.input.extend(bytes);
        Ok(())
    }

    /// Input bytes waiting for receive buffers.
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    /// The counters.
    pub fn stats(&self) -> &ConsoleStats {
        &self.stats
    }

    /// Moves pending input into receive buffers.
    fn receive(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory, budget: usize) -> Result<Served, QueueError> {
        let mut served = Served::default();
        while !self.input.is_empty() {
            if served.completed >= budget {
                served.more = queue.available(mem)? > 0;
                break;
            }
            let Some(chain) = queue.pop(mem)? else { break };
            let room = usize::try_from(chain.writable_len()).unwrap_or(usize::MAX);
            let n = room.min(self.input.len());
            let written = match self.copy_input(mem, &chain, n) {
                Ok(()) => {
                    self.input.drain(..n);
                    n
                }
                Err(_) => {
                    self.stats.bad_buffers = self.stats.bad_buffers.saturating_add(1);
                    0
                }
            };
            // n <= INPUT_CAPACITY.
            queue.push_used(mem, chain.head(), u32::try_from(written).unwrap_or(0))?;
            served.completed = served.completed.saturating_add(1);
        }
        Ok(served)
    }

    /// Writes the first `n` pending input bytes into the chain.
    fn copy_input(&self, mem: &mut dyn GuestMemory, chain: &Chain, n: usize) -> Result<(), ChainError> {
        let (front, back) = self.input.as_slices();
        let first = front.get(..n.min(front.len())).ok_or(ChainError::Short)?;
        let second = back.get(..n.saturating_sub(first.len())).ok_or(ChainError::Short)?;
        chain.write_at(mem, 0, first)?;
        chain.write_at(mem, first.len() as u64, second)
    }

    /// Appends transmit buffers to the output.
    fn transmit(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory, budget: usize) -> Result<Served, QueueError> {
        let mut served = Served::default();
        // Stops (leaving buffers in the ring) while the output is full.
        while self.output.len() < OUTPUT_LIMIT {
            if served.completed >= budget {
                served.more = queue.available(mem)? > 0;
                break;
            }
            let Some(chain) = queue.pop(mem)? else { break };
            let len = chain.readable_len();
            let take = len.min(MAX_TX_CHAIN);
            let start = self.output.len();
            // take <= MAX_TX_CHAIN, a small usize.
            self.output.resize(start.saturating_add(take as usize), 0);
            let dst = self.output.get_mut(start..).unwrap_or_default();
            if chain.read_at(mem, 0, dst).is_ok() {
                self.stats.output_truncated = self.stats.output_truncated.saturating_add(len.saturating_sub(take));
            } else {
                self.output.truncate(start);
                self.stats.bad_buffers = self.stats.bad_buffers.saturating_add(1);
            }
            queue.push_used(mem, chain.head(), 0)?;
            served.completed = served.completed.saturating_add(1);
        }
        Ok(served)
    }
}

impl Device for Console {
    fn device_id(&self) -> u32 {
        DEVICE_ID_CONSOLE
    }

    fn features(&self) -> u64 {
        if self.size.is_some() {
            VIRTIO_CONSOLE_F_SIZE
        } else {
            0
        }
    }

    fn queue_count(&self) -> usize {
        2
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    /// `struct virtio_console_config { le16 cols; le16 rows; le32
    /// max_nr_ports; le32 emerg_wr; }` (§5.3.4).
    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let (cols, rows) = self.size.unwrap_or((0, 0));
        let mut cfg = [0u8; 12];
        cfg[0..2].copy_from_slice(&cols.to_le_bytes());
        cfg[2..4].copy_from_slice(&rows.to_le_bytes());
        cfg[4..8].copy_from_slice(&1u32.to_le_bytes());
        copy_config(&cfg, offset, data);
    }

    fn reset(&mut self) {
        self.input.clear();
    }

    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
        budget: usize,
    ) -> Result<Served, QueueError> {
        match index {
            RECEIVEQ => self.receive(queue, mem, budget),
            TRANSMITQ => self.transmit(queue, mem, budget),
            _ => Ok(Served::default()),
        }
    }

    fn push_rx(&mut self, data: &[u8], _live: bool) -> Result<(), RxError> {
        self.push_input(data)
    }
}
