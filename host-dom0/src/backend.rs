//! Dom0's device backends for guests, without the shared page: the devices
//! each VM was given (the MMIO test device, its PL011 console, virtio-mmio
//! console, disks and network ports), routing of forwarded requests to
//! them, the virtual switch joining the network ports, and what the
//! devices ask of the hypervisor (interrupt lines, guest memory) through
//! [`Hyp`], so all of it runs under `cargo test`.
//!
//! Fairness: a virtio device serves at most one ring's worth of requests
//! per notification ([`MmioDevice`]'s budget); what is left waits for
//! [`Backends::poll_pending`], which gives every such device one more turn,
//! in VM order, so a guest hammering its devices cannot starve the others.
//!
//! Disks: a guest's notification of its virtio disk does no disk IO here.
//! It queues a *disk turn* ([`Backends::lend_disk`]): dom0's IO worker
//! takes the device out of the backends, serves up to [`DISK_TURN`] of its
//! requests with the backends' lock released (so other guests' IO goes on
//! meanwhile), and gives it back ([`Backends::return_disk`]); a disk with
//! more work queues another turn behind the other disks, so VMs take turns.
//! Requests for a device that is out with the worker wait, in order, and
//! are answered when it comes back. A turn that comes back for a VM that
//! was destroyed meanwhile (or replaced by a new VM with its id: devices
//! carry the generation of their attach) is dropped and counted.
//!
//! `ioreq` owns one [`Backends`] under its lock and calls
//! [`Backends::handle_or_defer`] for every request in the ring; the shell
//! takes the consoles' output with [`Backends::take_output`] and feeds
//! typed input with [`Backends::console_input`].

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;


use hv_abi::hypercall::guest::{UART_BASE, UART_SIZE, UART_SPI, VIRTIO_BASE, VIRTIO_SLOTS, VIRTIO_SPI_BASE, VIRTIO_STRIDE};
use hv_abi::ioreq::{Direction, IoCompletion, IoRequest, IoStatus};
use hv_virtio::block::BackendError;
use hv_virtio::{Block, BlockBackend, BlockOp, Console, GuestMemory, MemError, MmioDevice, Net, OpKind, Outcome, Route, Switch};

use crate::iodev::{self, TestDevice};
use crate::pl011::Pl011;

/// The guest's INTID of its PL011 (`UART_SPI` is an SPI number).
pub const UART_INTID: u32 = 32 + UART_SPI;
/// Console output a VM's PL011 may have waiting for the shell. At the
/// limit the PL011 reports its transmit FIFO full (`TXFF`) until the shell
/// takes the output: the guest waits, as behind a slow serial line, and
/// loses nothing unless it ignores `TXFF` (those bytes are counted).
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Typed input waiting for room in a guest's receive FIFO.
pub const INPUT_LIMIT: usize = 4096;

/// Most MAC addresses the switch remembers.
pub const SWITCH_TABLE: usize = 256;
/// Requests a virtio disk serves per turn with the IO worker.
pub const DISK_TURN: usize = 8;
/// Accesses to one device that may wait for it to come back from the IO
/// worker; a driver that waits for its answers never has more than a few.
pub const WAITING_LIMIT: usize = 256;

/// What backends need the hypervisor to do (hypercalls on the target, a
/// recorder in tests).
pub trait Hyp {
    /// Drive SPI `intid` of VM `vm` to `level`.
    fn set_irq(&mut self, vm: u16, intid: u32, level: bool);
    /// An edge on SPI `intid` of VM `vm` (raised and lowered at once).
    fn pulse_irq(&mut self, vm: u16, intid: u32) {
        self.set_irq(vm, intid, true);
        self.set_irq(vm, intid, false);
    }
    /// Copy from VM `vm`'s RAM at `gpa`; `Err` (nothing copied) unless the
    /// whole range is that VM's RAM.
    fn read_guest(&self, vm: u16, gpa: u64, buf: &mut [u8]) -> Result<(), ()>;
    /// Copy into VM `vm`'s RAM at `gpa`, as `read_guest`.
    fn write_guest(&mut self, vm: u16, gpa: u64, data: &[u8]) -> Result<(), ()>;
    /// Order earlier guest-memory accesses before later ones, as other CPUs
    /// see them.
    fn fence(&self) {}
    /// Publish the value of VM `vm`'s register at `addr` for the
    /// hypervisor to answer the guest's reads with (`IoShadow`; `None`
    /// withdraws it), as of having handled the window's requests up to
    /// `seq`; writes at window offsets in `keep` leave it valid. Returns
    /// whether the hypervisor took it (it refuses a value a write dom0 has
    /// not handled yet may have changed). Without the call, reads keep
    /// coming as requests.
    fn publish(&mut self, _vm: u16, _addr: u64, _value: Option<u32>, _seq: u64, _keep: u64) -> bool {
        false
    }
}

/// One VM's RAM as a virtio device reaches it: through [`Hyp`].
struct VmMemory<'a> {
    hyp: &'a mut dyn Hyp,
    vm: u16,
}

impl GuestMemory for VmMemory<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.hyp.read_guest(self.vm, gpa, buf).map_err(|()| MemError { gpa, len: buf.len() })
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.hyp.write_guest(self.vm, gpa, data).map_err(|()| MemError { gpa, len: data.len() })
    }

    fn fence(&self) {
        self.hyp.fence();
    }
}

/// The disk dom0 shares out to guests (its real disk on the target): a
/// block backend that can move between CPUs.
pub trait SharedDisk: BlockBackend + Send {}

impl<T: BlockBackend + Send> SharedDisk for T {}

/// A guest's disk: `sectors` sectors of the shared disk from `start`.
pub struct DiskSlice {
    disk: &'static spin::Mutex<dyn SharedDisk>,
    start: u64,
    sectors: u64,
}

impl core::fmt::Debug for DiskSlice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DiskSlice {{ start: {}, sectors: {} }}", self.start, self.sectors)
    }
}

/// Why a disk slice cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceError {
    /// Offset or size is not whole sectors, or the size is 0.
    Unaligned,
    /// The slice reaches past the end of the disk (`capacity` bytes).
    PastEnd { capacity: u64 },
}

impl DiskSlice {
    /// `size` bytes from byte `offset` (`None`: to the end of the disk).
    pub fn new(disk: &'static spin::Mutex<dyn SharedDisk>, offset: u64, size: Option<u64>) -> Result<Self, SliceError> {
        let capacity = disk.lock().capacity_sectors();
        let bytes = capacity.saturating_mul(512);
        let size = match size {
            Some(s) => s,
            None => bytes.checked_sub(offset).ok_or(SliceError::PastEnd { capacity: bytes })?,
        };
        if !offset.is_multiple_of(512) || !size.is_multiple_of(512) || size == 0 {
            return Err(SliceError::Unaligned);
        }
        match offset.checked_add(size) {
            Some(end) if end <= bytes => Ok(DiskSlice { disk, start: offset / 512, sectors: size / 512 }),
            _ => Err(SliceError::PastEnd { capacity: bytes }),
        }
    }

    /// The disk sector of slice sector `sector` for `len` bytes, if the
    /// whole range is inside the slice.
    fn map(&self, sector: u64, len: usize) -> Result<u64, BackendError> {
        let count = (len as u64).div_ceil(512);
        match sector.checked_add(count) {
            Some(end) if end <= self.sectors => Ok(self.start + sector),
            _ => Err(BackendError),
        }
    }
}

impl BlockBackend for DiskSlice {
    fn capacity_sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let at = self.map(sector, buf.len())?;
        self.disk.lock().read(at, buf)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        let at = self.map(sector, data.len())?;
        self.disk.lock().write(at, data)
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        self.disk.lock().flush()
    }

    /// The batch goes to the shared disk whole (so its driver may have it
    /// all in flight), its sectors moved to the slice's place first.
    fn execute(&mut self, ops: &mut [BlockOp]) {
        let mut inside = true;
        for op in ops.iter_mut() {
            let mapped = match &mut op.kind {
                OpKind::Read { sector, buf } => self.map(*sector, buf.len()).map(|at| *sector = at),
                OpKind::Write { sector, data } => self.map(*sector, data.len()).map(|at| *sector = at),
                OpKind::Flush => Ok(()),
            };
            inside &= mapped.is_ok();
        }
        if inside {
            self.disk.lock().execute(ops);
        } else {
            // The device checks ranges before it asks; never reached.
            ops.iter_mut().for_each(|op| op.result = Err(BackendError));
        }
    }
}

/// A virtio device of a VM, by type.
#[derive(Debug)]
pub enum VirtioDevice {
    Console(MmioDevice<Console>),
    /// Boxed: a disk moves out to the IO worker and back every turn.
    Block(Box<MmioDevice<Block<DiskSlice>>>),
    /// With its port on the switch.
    Net(MmioDevice<Net>, usize),
    /// A disk out with the IO worker for a turn ([`DiskTurn`]).
    Lent,
}

/// A virtio disk lent to the IO worker for one turn: its device, which
/// [`DiskTurn::serve`] serves outside the backends' lock, and where it goes
/// back.
#[derive(Debug)]
pub struct DiskTurn {
    pub vm: u16,
    slot: usize,
    /// The generation of the VM's devices it belongs to.
    generation: u64,
    dev: Box<MmioDevice<Block<DiskSlice>>>,
    /// Requests it took from its queue this turn.
    requests: u64,
    outcome: Outcome,
}

impl DiskTurn {
    /// Serves the disk's queue, up to [`DISK_TURN`] requests: the disk IO
    /// happens here. `hyp` reaches the VM's RAM.
    pub fn serve(&mut self, hyp: &mut dyn Hyp) {
        let before = self.dev.device().stats().requests;
        let mut mem = VmMemory { hyp, vm: self.vm };
        self.outcome = self.dev.poll(&mut mem);
        self.requests += self.dev.device().stats().requests.saturating_sub(before);
    }
}

/// What a VM's virtio devices are made from (toolstack → backends).
pub enum VirtioSpec {
    Console,
    Block { slice: DiskSlice, read_only: bool },
    Net { mac: [u8; 6] },
}

#[derive(Debug)]
struct VirtioSlot {
    dev: VirtioDevice,
    /// The level the hypervisor was last told.
    line: bool,
    /// The budget ran out: serve again in `poll_pending`.
    more: bool,
    /// A disk with a turn queued for the IO worker.
    queued: bool,
    /// Requests that came while the device was lent, in order.
    waiting: VecDeque<IoRequest>,
}

/// `$body` with `$d` bound to the slot's transport, whatever the device
/// type; `$lent` for a disk that is out with the IO worker.
macro_rules! with_transport {
    ($dev:expr, $d:ident => $body:expr, lent => $lent:expr) => {
        match $dev {
            VirtioDevice::Console($d) => $body,
            VirtioDevice::Block($d) => $body,
            VirtioDevice::Net($d, _) => $body,
            VirtioDevice::Lent => $lent,
        }
    };
}

impl VirtioSlot {
    fn new(dev: VirtioDevice) -> Self {
        VirtioSlot { dev, line: false, more: false, queued: false, waiting: VecDeque::new() }
    }

    // Requests for a lent disk wait (`handle_or_defer`) and never get
    // here; a lent disk's line stays as it was until it is back.
    fn read(&self, offset: u64, size: u8) -> Result<u64, ()> {
        with_transport!(&self.dev, d => d.read(offset, size).map_err(drop), lent => Err(()))
    }

    fn write(&mut self, mem: &mut dyn GuestMemory, offset: u64, size: u8, value: u64) -> Result<Outcome, ()> {
        with_transport!(&mut self.dev, d => d.write(mem, offset, size, value).map_err(drop), lent => Err(()))
    }

    fn poll(&mut self, mem: &mut dyn GuestMemory) -> Outcome {
        with_transport!(&mut self.dev, d => d.poll(mem), lent => Outcome::default())
    }

    fn interrupt_pending(&self) -> bool {
        with_transport!(&self.dev, d => d.interrupt_pending(), lent => self.line)
    }

    fn is_lent(&self) -> bool {
        matches!(self.dev, VirtioDevice::Lent)
    }
}

/// The guest INTID of virtio slot `slot`.
pub const fn virtio_intid(slot: usize) -> u32 {
    32 + VIRTIO_SPI_BASE + slot as u32
}

/// Counters for `iostat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Requests answered (completions produced), faults included.
    pub handled: u64,
    /// Of those, answered with `Fault`: a device error, an unknown VM, an
    /// address no device of the VM decodes, or a malformed request.
    pub errors: u64,
    /// Of the errors, requests that failed `IoRequest::validate`.
    pub malformed: u64,
    /// Console bytes a guest wrote to its PL011 while it said `TXFF` (the
    /// shell had not taken the last [`OUTPUT_LIMIT`] bytes yet): lost, by
    /// the guest's doing.
    pub output_dropped: u64,
    /// Typed bytes dropped because the guest did not read its UART.
    pub input_dropped: u64,
    /// Frames the switch passed on, and frames it or a full receiver dropped.
    pub frames_switched: u64,
    pub frames_dropped: u64,
    /// virtio-blk requests the guests' disks took from their queues.
    pub blk_requests: u64,
    /// Disk turns the IO worker took, and those that came back for a VM
    /// that was gone (dropped).
    pub disk_turns: u64,
    pub disk_turns_dropped: u64,
    /// Requests that waited for their device to come back from the worker,
    /// and those refused because [`WAITING_LIMIT`] already waited.
    pub deferred: u64,
    pub deferred_refused: u64,
}

/// A guest's emulated PL011 and the bytes going through it.
#[derive(Debug, Default)]
struct GuestUart {
    model: Pl011,
    /// The level the hypervisor was last told.
    line: bool,
    /// Transmitted bytes the shell has not taken yet.
    out: Vec<u8>,
    /// Typed bytes waiting for room in the receive FIFO.
    input: VecDeque<u8>,
    /// `UARTFR` and the keep mask as the hypervisor holds them
    /// (`Hyp::publish`), as far as dom0 can tell: `None` before the first
    /// publication and from a write the mask does not name.
    published: Option<(u32, u64)>,
    /// The `seq` of the newest request to the UART's window handled.
    handled: u64,
}

/// The devices of one VM.
#[derive(Debug, Default)]
struct VmDevices {
    test: Option<TestDevice>,
    uart: Option<GuestUart>,
    /// Virtio slot i is at `VIRTIO_BASE + i * VIRTIO_STRIDE`.
    virtio: Vec<VirtioSlot>,
    /// Which attach of virtio devices these are (unique in dom0's life).
    generation: u64,
}

/// Every VM's devices.
pub struct Backends {
    vms: BTreeMap<u16, VmDevices>,
    stats: IoStats,
    /// Some VM has console output waiting.
    output_pending: bool,
    switch: Switch,
    /// Switch port → (VM, virtio slot); `None` for a free port.
    ports: Vec<Option<(u16, usize)>>,
    /// Disks waiting for a turn with the IO worker, in order.
    disk_work: VecDeque<(u16, usize)>,
    /// The last generation given to a VM's devices.
    generation: u64,
}

impl Default for Backends {
    fn default() -> Self {
        Self::new()
    }
}

impl Backends {
    pub fn new() -> Self {
        Backends {
            vms: BTreeMap::new(),
            stats: IoStats::default(),
            output_pending: false,
            switch: Switch::new(SWITCH_TABLE),
            ports: Vec::new(),
            disk_work: VecDeque::new(),
            generation: 0,
        }
    }

    /// VM `vm` got the virtio window: its devices, in slot order. Returns
    /// how many slots it uses (at most `VIRTIO_SLOTS`).
    pub fn attach_virtio(&mut self, vm: u16, specs: Vec<VirtioSpec>) -> usize {
        let mut slots = Vec::new();
        for (i, spec) in specs.into_iter().take(VIRTIO_SLOTS as usize).enumerate() {
            let dev = match spec {
                VirtioSpec::Console => VirtioDevice::Console(MmioDevice::new(Console::new())),
                VirtioSpec::Block { slice, read_only } => {
                    let mut d = MmioDevice::new(Block::new(slice, read_only));
                    d.set_budget(DISK_TURN);
                    VirtioDevice::Block(Box::new(d))
                }
                VirtioSpec::Net { mac } => {
                    let port = match self.ports.iter().position(Option::is_none) {
                        Some(p) => p,
                        None => {
                            self.ports.push(None);
                            self.ports.len() - 1
                        }
                    };
                    self.ports[port] = Some((vm, i));
                    self.switch.forget_port(port);
                    VirtioDevice::Net(MmioDevice::new(Net::new(mac)), port)
                }
            };
            slots.push(VirtioSlot::new(dev));
        }
        let n = slots.len();
        self.generation += 1;
        self.disk_work.retain(|&(v, _)| v != vm);
        let devs = self.vms.entry(vm).or_default();
        devs.virtio = slots;
        devs.generation = self.generation;
        n
    }

    /// VM `vm` got the test device's window: a fresh device, replacing any
    /// left from an earlier VM with the same id.
    pub fn attach_test_device(&mut self, vm: u16) {
        self.vms.entry(vm).or_default().test = Some(TestDevice::new());
    }

    /// VM `vm` got the UART's window: a PL011 in its reset state.
    pub fn attach_uart(&mut self, vm: u16) {
        self.vms.entry(vm).or_default().uart = Some(GuestUart::default());
    }

    /// VM `vm` is gone: its devices go, with any output not yet taken, and
    /// its switch ports are freed.
    pub fn detach(&mut self, vm: u16) {
        self.vms.remove(&vm);
        // Its queued disk turns go; a turn out with the worker comes back
        // to no VM and is dropped (`return_disk`).
        self.disk_work.retain(|&(v, _)| v != vm);
        for (port, owner) in self.ports.iter_mut().enumerate() {
            if owner.is_some_and(|(v, _)| v == vm) {
                *owner = None;
                self.switch.forget_port(port);
            }
        }
    }

    /// Whether some disk waits for a turn with the IO worker.
    pub fn disk_work_pending(&self) -> bool {
        !self.disk_work.is_empty()
    }

    /// Whether one of VM `vm`'s disks is out with the IO worker (its RAM
    /// must stay reachable until it is back).
    pub fn lent(&self, vm: u16) -> bool {
        self.vms.get(&vm).is_some_and(|d| d.virtio.iter().any(VirtioSlot::is_lent))
    }

    /// The next disk turn for the IO worker: the device leaves the
    /// backends until [`return_disk`](Self::return_disk).
    pub fn lend_disk(&mut self) -> Option<DiskTurn> {
        while let Some((vm, slot)) = self.disk_work.pop_front() {
            let Some(devs) = self.vms.get_mut(&vm) else { continue };
            let generation = devs.generation;
            let Some(s) = devs.virtio.get_mut(slot) else { continue };
            s.queued = false;
            if !matches!(s.dev, VirtioDevice::Block(_)) {
                continue;
            }
            let VirtioDevice::Block(dev) = core::mem::replace(&mut s.dev, VirtioDevice::Lent) else { continue };
            self.stats.disk_turns += 1;
            return Some(DiskTurn { vm, slot, generation, dev, requests: 0, outcome: Outcome::default() });
        }
        None
    }

    /// A disk comes back from its turn: into its slot (if its VM is still
    /// the one it was lent from, else it is dropped and counted), another
    /// turn queued if it has more work, its interrupt line updated, then
    /// the requests that waited for it answered in order. Returns their
    /// completions (posted writes have none).
    pub fn return_disk(&mut self, turn: DiskTurn, hyp: &mut dyn Hyp) -> Vec<IoCompletion> {
        let DiskTurn { vm, slot, generation, dev, requests, outcome } = turn;
        let home = self.vms.get_mut(&vm).filter(|d| d.generation == generation).and_then(|d| d.virtio.get_mut(slot));
        let Some(s) = home.filter(|s| s.is_lent()) else {
            self.stats.disk_turns_dropped += 1;
            return Vec::new();
        };
        s.dev = VirtioDevice::Block(dev);
        self.stats.blk_requests += requests;
        if outcome.more_work {
            self.queue_disk(vm, slot);
        }
        if let Some(s) = self.vms.get_mut(&vm).and_then(|d| d.virtio.get_mut(slot)) {
            signal(vm, slot, s, hyp);
        }
        let mut answers = Vec::new();
        while let Some(req) = self.vms.get_mut(&vm).and_then(|d| d.virtio.get_mut(slot)).and_then(|s| s.waiting.pop_front()) {
            let c = self.handle(&req, hyp);
            if !req.is_posted() {
                answers.push(c);
            }
            // A waiting notification queued another turn: the rest waits
            // for that one.
            if self.vms.get(&vm).and_then(|d| d.virtio.get(slot)).is_some_and(VirtioSlot::is_lent) {
                break;
            }
        }
        answers
    }

    /// Queues a turn for disk `slot` of `vm` unless one is queued.
    fn queue_disk(&mut self, vm: u16, slot: usize) {
        if let Some(s) = self.vms.get_mut(&vm).and_then(|d| d.virtio.get_mut(slot)) {
            if !s.queued {
                s.queued = true;
                self.disk_work.push_back((vm, slot));
            }
        }
    }

    /// Whether some virtio device has work its budget did not cover.
    pub fn has_pending(&self) -> bool {
        self.vms.values().any(|d| d.virtio.iter().any(|s| s.more))
    }

    /// Gives every virtio device whose budget ran out one more turn, and
    /// moves frames between network ports. Returns whether work remains.
    pub fn poll_pending(&mut self, hyp: &mut dyn Hyp) -> bool {
        let pending: Vec<(u16, usize)> = self
            .vms
            .iter()
            .flat_map(|(&vm, d)| d.virtio.iter().enumerate().filter(|(_, s)| s.more).map(move |(i, _)| (vm, i)))
            .collect();
        for (vm, slot) in pending {
            // Errors here are the guest's (its queue is broken); the device
            // has marked itself DEVICE_NEEDS_RESET.
            let _ = self.serve_virtio(vm, slot, None, hyp);
        }
        self.has_pending()
    }

    /// Sets the per-notification budget of VM `vm`'s virtio devices.
    #[cfg(test)]
    fn set_budget(&mut self, vm: u16, budget: usize) {
        for slot in self.vms.get_mut(&vm).map(|d| d.virtio.as_mut_slice()).unwrap_or_default() {
            with_transport!(&mut slot.dev, d => d.set_budget(budget), lent => {});
        }
    }

    pub fn stats(&self) -> IoStats {
        self.stats
    }

    /// Whether any console output is waiting for [`take_output`](Self::take_output).
    pub fn output_pending(&self) -> bool {
        self.output_pending
    }

    /// Hands every VM's waiting console output (PL011, then virtio
    /// console) to `f`, oldest VM id first. There is room again: a PL011
    /// that said `TXFF` takes bytes again (and raises its transmit
    /// interrupt), a virtio console that left transmit buffers in its ring
    /// gets a turn in [`poll_pending`](Self::poll_pending).
    pub fn take_output(&mut self, mut f: impl FnMut(u16, &[u8]), hyp: &mut dyn Hyp) {
        for (&id, devs) in &mut self.vms {
            if let Some(uart) = devs.uart.as_mut().filter(|u| !u.out.is_empty()) {
                f(id, &uart.out);
                uart.out.clear();
                if uart.model.tx_blocked() {
                    uart.model.set_tx_blocked(false);
                    refill_and_signal(id, uart, hyp);
                }
            }
            for slot in &mut devs.virtio {
                if let VirtioDevice::Console(d) = &mut slot.dev {
                    let out = d.device_mut().take_output();
                    if !out.is_empty() {
                        f(id, &out);
                        slot.more = true;
                    }
                }
            }
        }
        self.output_pending = false;
    }

    /// Typed bytes for VM `vm`'s console: into its PL011's receive FIFO as
    /// far as there is room, the rest queued (up to [`INPUT_LIMIT`], then
    /// dropped and counted). If the guest has its PL011's receiver off but
    /// a virtio console whose driver is up (Linux with `console=hvc0`), the
    /// bytes go there instead. Returns `false` if the VM has neither.
    pub fn console_input(&mut self, vm: u16, bytes: &[u8], hyp: &mut dyn Hyp) -> bool {
        let pl011_listens = self.vms.get(&vm).and_then(|d| d.uart.as_ref()).is_some_and(|u| u.model.rx_enabled());
        let hvc_live = self.vms.get(&vm).is_some_and(|d| {
            d.virtio.iter().any(|s| matches!(&s.dev, VirtioDevice::Console(c) if c.live()))
        });
        if !pl011_listens && hvc_live {
            return self.virtio_console_input(vm, bytes, hyp);
        }
        let Some(uart) = self.vms.get_mut(&vm).and_then(|d| d.uart.as_mut()) else { return false };
        for &b in bytes {
            if uart.input.len() < INPUT_LIMIT {
                uart.input.push_back(b);
            } else {
                self.stats.input_dropped += 1;
            }
        }
        refill_and_signal(vm, uart, hyp);
        true
    }

    /// Takes one request copied out of the ring: answers it now, or, if
    /// it is for a device that is out with the IO worker (or has requests
    /// waiting for it), keeps it until the device is back (`None`; the
    /// answer then comes from [`return_disk`](Self::return_disk)).
    pub fn handle_or_defer(&mut self, req: &IoRequest, hyp: &mut dyn Hyp) -> Option<IoCompletion> {
        // A malformed request waits too, and `handle` faults it in turn.
        let slot = window_offset(req.addr, VIRTIO_BASE, u64::from(VIRTIO_SLOTS) * VIRTIO_STRIDE).map(|o| (o / VIRTIO_STRIDE) as usize);
        if let Some(s) = slot.and_then(|i| self.vms.get_mut(&req.vm)?.virtio.get_mut(i)) {
            if s.is_lent() || !s.waiting.is_empty() {
                if s.waiting.len() >= WAITING_LIMIT {
                    // Only a guest hammering its own busy disk gets here:
                    // its device's later accesses fail (a posted write is
                    // lost), dom0's memory stays bounded.
                    self.stats.deferred_refused += 1;
                    self.stats.handled += 1;
                    self.stats.errors += 1;
                    return Some(IoCompletion::new(req.seq, IoStatus::Fault, 0));
                }
                s.waiting.push_back(*req);
                self.stats.deferred += 1;
                return None;
            }
        }
        Some(self.handle(req, hyp))
    }

    /// Answers one request copied out of the ring.
    pub fn handle(&mut self, req: &IoRequest, hyp: &mut dyn Hyp) -> IoCompletion {
        let result = match req.validate() {
            Err(_) => {
                self.stats.malformed += 1;
                Err(())
            }
            Ok(dir) => self.access(req, dir, hyp),
        };
        self.stats.handled += 1;
        match result {
            Ok(data) => IoCompletion::new(req.seq, IoStatus::Ok, data),
            Err(()) => {
                self.stats.errors += 1;
                IoCompletion::new(req.seq, IoStatus::Fault, 0)
            }
        }
    }

    fn access(&mut self, req: &IoRequest, dir: Direction, hyp: &mut dyn Hyp) -> Result<u64, ()> {
        let devs = self.vms.get_mut(&req.vm).ok_or(())?;
        if let Some(offset) = window_offset(req.addr, iodev::BASE, iodev::WINDOW) {
            let dev = devs.test.as_mut().ok_or(())?;
            return match dir {
                Direction::Read => dev.read(offset, req.size).map_err(drop),
                Direction::Write => dev.write(offset, req.size, req.data).map(|()| 0).map_err(drop),
            };
        }
        if let Some(offset) = window_offset(req.addr, UART_BASE, UART_SIZE) {
            let uart = devs.uart.as_mut().ok_or(())?;
            let result = match dir {
                Direction::Read => uart.model.read(offset, req.size).map(u64::from).map_err(drop),
                Direction::Write => {
                    let overrun = uart.model.stats().tx_overrun;
                    let effect = uart.model.write(offset, req.size, req.data as u32).map_err(drop)?;
                    self.stats.output_dropped += uart.model.stats().tx_overrun - overrun;
                    if let Some(byte) = effect.transmitted {
                        uart.out.push(byte);
                        self.output_pending = true;
                        if uart.out.len() >= OUTPUT_LIMIT {
                            uart.model.set_tx_blocked(true);
                        }
                    }
                    Ok(0)
                }
            };
            uart.handled = req.seq;
            if dir == Direction::Write && uart.published.is_some_and(|(_, keep)| !hv_abi::hypercall::shadow_keeps(keep, offset)) {
                // The hypervisor stopped answering UARTFR at this write.
                uart.published = None;
            }
            // A read of UARTDR makes room for queued input, and it and any
            // write may change the interrupt line; reading another register
            // (UARTFR before every byte a driver sends) changes neither.
            if dir == Direction::Write || offset & !3 == crate::pl011::reg::DR {
                refill_and_signal(req.vm, uart, hyp);
            } else if offset & !3 == crate::pl011::reg::FR {
                // The hypervisor did not answer it: nothing published yet,
                // or a write made the value invalid.
                publish_flags(req.vm, uart, hyp);
            }
            return result;
        }
        if let Some(offset) = window_offset(req.addr, VIRTIO_BASE, u64::from(VIRTIO_SLOTS) * VIRTIO_STRIDE) {
            let slot = (offset / VIRTIO_STRIDE) as usize;
            let offset = offset % VIRTIO_STRIDE;
            let dev = devs.virtio.get(slot).ok_or(())?;
            return match dir {
                Direction::Read => dev.read(offset, req.size),
                Direction::Write => self.serve_virtio(req.vm, slot, Some((offset, req.size, req.data)), hyp).map(|()| 0),
            };
        }
        Err(())
    }

    /// A guest write to virtio slot `slot` of `vm` (or, with `None`, one
    /// more turn for its queues), then what follows from it: console
    /// output, frames through the switch, interrupt lines.
    fn serve_virtio(&mut self, vm: u16, slot: usize, write: Option<(u64, u8, u64)>, hyp: &mut dyn Hyp) -> Result<(), ()> {
        let devs = self.vms.get_mut(&vm).ok_or(())?;
        let dev = devs.virtio.get_mut(slot).ok_or(())?;
        // A disk's queue is served in a turn with the IO worker, never
        // here: a notification (or a further turn) queues one.
        if matches!(dev.dev, VirtioDevice::Block(_)) && write.is_none_or(|(offset, size, _)| offset == hv_virtio::mmio::reg::QUEUE_NOTIFY && size == 4) {
            self.queue_disk(vm, slot);
            return Ok(());
        }
        let blk_before = match &dev.dev {
            VirtioDevice::Block(d) => d.device().stats().requests,
            _ => 0,
        };
        let mut mem = VmMemory { hyp: &mut *hyp, vm };
        let outcome = match write {
            Some((offset, size, value)) => dev.write(&mut mem, offset, size, value),
            None => Ok(dev.poll(&mut mem)),
        };
        if let Ok(o) = outcome {
            dev.more = o.more_work;
        }
        let mut frames = Vec::new();
        match &mut dev.dev {
            VirtioDevice::Console(d) => self.output_pending |= !d.device().output().is_empty(),
            VirtioDevice::Net(d, port) => {
                let port = *port;
                while let Some(frame) = d.device_mut().take_tx() {
                    frames.push((port, frame));
                }
            }
            VirtioDevice::Block(d) => {
                self.stats.blk_requests += d.device().stats().requests.saturating_sub(blk_before);
            }
            VirtioDevice::Lent => {}
        }
        signal(vm, slot, dev, hyp);
        for (port, frame) in frames {
            self.switch_frame(port, &frame, hyp);
        }
        outcome.map(drop)
    }

    /// A frame sent on switch port `from`: to the port(s) the switch says.
    fn switch_frame(&mut self, from: usize, frame: &[u8], hyp: &mut dyn Hyp) {
        let route = self.switch.route(from, frame);
        if matches!(route, Route::Drop) {
            self.stats.frames_dropped += 1;
            return;
        }
        for port in 0..self.ports.len() {
            if !route.includes(port) {
                continue;
            }
            let Some(Some((vm, slot))) = self.ports.get(port).copied() else { continue };
            let Some(dev) = self.vms.get_mut(&vm).and_then(|d| d.virtio.get_mut(slot)) else { continue };
            let VirtioDevice::Net(d, _) = &mut dev.dev else { continue };
            let mut mem = VmMemory { hyp: &mut *hyp, vm };
            match d.deliver_rx(&mut mem, frame) {
                Ok(o) => dev.more |= o.more_work,
                Err(_) => self.stats.frames_dropped += 1,
            }
            signal(vm, slot, dev, hyp);
        }
        self.stats.frames_switched += 1;
    }

    /// Typed bytes for VM `vm`'s virtio console (if it has one).
    pub fn virtio_console_input(&mut self, vm: u16, bytes: &[u8], hyp: &mut dyn Hyp) -> bool {
        let Some(devs) = self.vms.get_mut(&vm) else { return false };
        for (i, slot) in devs.virtio.iter_mut().enumerate() {
            if let VirtioDevice::Console(d) = &mut slot.dev {
                let mut mem = VmMemory { hyp: &mut *hyp, vm };
                if d.deliver_rx(&mut mem, bytes).is_err() {
                    self.stats.input_dropped += bytes.len() as u64;
                }
                signal(vm, i, slot, hyp);
                return true;
            }
        }
        false
    }
}

/// Tells the hypervisor when a virtio device's interrupt goes up. Guests'
/// device trees describe the virtio-mmio interrupts as edge-triggered
/// (`hv_devtree::guest`), so the rise is one pulse and the fall needs no
/// hypercall: one `IrqLine` per interrupt, not two.
fn signal(vm: u16, slot: usize, dev: &mut VirtioSlot, hyp: &mut dyn Hyp) {
    let level = dev.interrupt_pending();
    if level != dev.line {
        dev.line = level;
        if level {
            hyp.pulse_irq(vm, virtio_intid(slot));
        }
    }
}

/// `addr - base` if `addr` is inside `[base, base + size)`.
fn window_offset(addr: u64, base: u64, size: u64) -> Option<u64> {
    addr.checked_sub(base).filter(|&o| o < size)
}

/// Moves queued input into the FIFO while it has room, then tells the
/// hypervisor if the interrupt line changed.
fn refill_and_signal(vm: u16, uart: &mut GuestUart, hyp: &mut dyn Hyp) {
    while uart.model.can_receive() {
        let Some(b) = uart.input.pop_front() else { break };
        uart.model.push_rx(b);
    }
    let level = uart.model.irq_level();
    if level != uart.line {
        uart.line = level;
        hyp.set_irq(vm, UART_INTID, level);
    }
    publish_flags(vm, uart, hyp);
}

/// Gives the hypervisor `UARTFR`'s value if it does not hold it already,
/// so that a driver's status reads before each byte need no request
/// (`Hyp::publish`). Called whenever the flags may have changed, before
/// the request that changed them is answered.
fn publish_flags(vm: u16, uart: &mut GuestUart, hyp: &mut dyn Hyp) {
    let now = (uart.model.flags(), uart.model.flags_keep_mask());
    if uart.published != Some(now) {
        let taken = hyp.publish(vm, UART_BASE + crate::pl011::reg::FR, Some(now.0), uart.handled, now.1);
        uart.published = taken.then_some(now);
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::iodev::{BASE, ID_OFFSET, ID_VALUE, WINDOW};
    use crate::pl011::reg;
    use alloc::boxed::Box;
    use alloc::vec;
    use hv_virtio::{MemDisk, VecMemory};

    /// Records interrupt line changes; each VM's RAM is a `VecMemory`.
    #[derive(Default)]
    struct Lines(Vec<(u16, u32, bool)>, BTreeMap<u16, VecMemory>);

    impl Hyp for Lines {
        fn set_irq(&mut self, vm: u16, intid: u32, level: bool) {
            self.0.push((vm, intid, level));
        }

        /// Recorded as a rise alone.
        fn pulse_irq(&mut self, vm: u16, intid: u32) {
            self.0.push((vm, intid, true));
        }

        fn read_guest(&self, vm: u16, gpa: u64, buf: &mut [u8]) -> Result<(), ()> {
            self.1.get(&vm).ok_or(())?.read(gpa, buf).map_err(drop)
        }

        fn write_guest(&mut self, vm: u16, gpa: u64, data: &[u8]) -> Result<(), ()> {
            self.1.get_mut(&vm).ok_or(())?.write(gpa, data).map_err(drop)
        }
    }

    fn w(seq: u64, vm: u16, addr: u64, size: u8, data: u64) -> IoRequest {
        IoRequest::new(seq, vm, 0, Direction::Write, size, addr, data)
    }

    fn r(seq: u64, vm: u16, addr: u64, size: u8) -> IoRequest {
        IoRequest::new(seq, vm, 1, Direction::Read, size, addr, 0)
    }

    #[test]
    fn test_device_is_served_per_vm_and_faults_the_rest() {
        let mut b = Backends::new();
        let h = &mut Lines::default();
        // Unknown VM.
        assert_eq!(b.handle(&r(1, 3, BASE, 8), h), IoCompletion::new(1, IoStatus::Fault, 0));
        b.attach_test_device(3);
        b.attach_test_device(4);
        assert_eq!(b.handle(&w(2, 3, BASE + 8, 4, 0xCAFE_F00D), h).status, IoStatus::Ok as u32);
        assert_eq!(b.handle(&r(3, 3, BASE + 8, 8), h), IoCompletion::new(3, IoStatus::Ok, 0xCAFE_F00D));
        // Separate devices per VM.
        assert_eq!(b.handle(&r(4, 4, BASE + 8, 8), h), IoCompletion::new(4, IoStatus::Ok, 0));
        assert_eq!(b.handle(&r(5, 4, BASE + ID_OFFSET, 8), h), IoCompletion::new(5, IoStatus::Ok, ID_VALUE));
        // Device errors, addresses outside the window, malformed requests.
        assert_eq!(b.handle(&r(6, 3, BASE + 0x108, 8), h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&r(7, 3, BASE - 8, 8), h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&r(8, 3, BASE + WINDOW, 8), h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&r(9, 3, BASE + 2, 4), h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&w(10, 3, BASE, 1, 0x100), h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&w(11, 3, BASE + ID_OFFSET, 8, 1), h).status, IoStatus::Fault as u32);
        // No UART attached to VM 3: its window faults too.
        assert_eq!(b.handle(&r(12, 3, UART_BASE + reg::FR, 4), h).status, IoStatus::Fault as u32);
        assert_eq!(b.stats(), IoStats { handled: 12, errors: 8, malformed: 1, ..IoStats::default() });
        // Re-attaching (a new VM with the same id) starts from a fresh device.
        b.attach_test_device(3);
        assert_eq!(b.handle(&r(13, 3, BASE + 8, 8), h), IoCompletion::new(13, IoStatus::Ok, 0));
        b.detach(3);
        assert_eq!(b.handle(&r(14, 3, BASE + 8, 8), h).status, IoStatus::Fault as u32);
        assert!(h.0.is_empty(), "the test device has no interrupt");
    }

    /// Linux's amba-pl011 start-up, as far as the interrupt line is concerned.
    fn enable_uart(b: &mut Backends, vm: u16, h: &mut Lines) {
        let cr = 1 | 1 << 8 | 1 << 9; // UARTEN, TXE, RXE
        assert_eq!(b.handle(&w(1, vm, UART_BASE + reg::CR, 4, cr), h).status, IoStatus::Ok as u32);
        // Receive and receive-timeout interrupts unmasked.
        assert_eq!(b.handle(&w(2, vm, UART_BASE + reg::IMSC, 4, 1 << 4 | 1 << 6), h).status, IoStatus::Ok as u32);
    }

    #[test]
    fn uart_output_is_kept_per_vm_until_taken() {
        let mut b = Backends::new();
        let h = &mut Lines::default();
        b.attach_uart(1);
        b.attach_uart(2);
        for (i, &c) in b"hi\n".iter().enumerate() {
            b.handle(&w(i as u64 + 1, 1, UART_BASE + reg::DR, 4, u64::from(c)), h);
        }
        b.handle(&w(9, 2, UART_BASE + reg::DR, 1, u64::from(b'x')), h);
        assert!(b.output_pending());
        let mut got = vec![];
        b.take_output(|vm, bytes| got.push((vm, bytes.to_vec())), h);
        assert_eq!(got, vec![(1, b"hi\n".to_vec()), (2, b"x".to_vec())]);
        assert!(!b.output_pending());
        b.take_output(|_, _| panic!("nothing left"), h);
    }

    /// The guest's PL011 flags register.
    fn uart_fr(b: &mut Backends, h: &mut Lines, vm: u16) -> u32 {
        b.handle(&r(7, vm, UART_BASE + reg::FR, 4), h).data as u32
    }

    #[test]
    fn a_full_output_buffer_stalls_the_pl011_instead_of_dropping_bytes() {
        use crate::pl011::{fr, int};
        let mut b = Backends::new();
        let h = &mut Lines::default();
        b.attach_uart(1);
        enable_uart(&mut b, 1, h);
        b.handle(&w(1, 1, UART_BASE + reg::IMSC, 4, u64::from(int::TX)), h);
        // A driver that waits while TXFF is set, as Linux and earlycon do.
        let (mut sent, mut waited, mut seq) = (0usize, 0, 10);
        while sent < OUTPUT_LIMIT + 100 {
            seq += 1;
            if uart_fr(&mut b, h, 1) & fr::TXFF != 0 {
                waited += 1;
                break;
            }
            b.handle(&w(seq, 1, UART_BASE + reg::DR, 4, u64::from(b'a' + (sent % 26) as u8)), h);
            sent += 1;
        }
        assert_eq!((sent, waited), (OUTPUT_LIMIT, 1), "TXFF once the buffer holds OUTPUT_LIMIT bytes");
        assert_eq!(uart_fr(&mut b, h, 1) & fr::TXFE, 0);
        b.handle(&w(5, 1, UART_BASE + reg::ICR, 4, u64::from(int::ALL)), h);
        h.0.clear();
        // The shell takes the output: room again, the TX interrupt rises.
        let mut got = Vec::new();
        b.take_output(|_, bytes| got.extend_from_slice(bytes), h);
        assert_eq!(got.len(), OUTPUT_LIMIT);
        assert!(got.iter().enumerate().all(|(i, &c)| c == b'a' + (i % 26) as u8), "every byte, in order");
        assert_eq!(h.0, vec![(1, UART_INTID, true)]);
        assert_eq!(uart_fr(&mut b, h, 1) & (fr::TXFF | fr::TXFE), fr::TXFE);
        assert_eq!(b.stats().output_dropped, 0);
        // A guest that ignores TXFF loses what it writes then (beyond the
        // grace for writes on a stale flag), counted.
        let grace = crate::pl011::TX_GRACE as usize;
        for i in 0..OUTPUT_LIMIT + grace + 10 {
            b.handle(&w(100 + i as u64, 1, UART_BASE + reg::DR, 4, u64::from(b'z')), h);
        }
        assert_eq!(b.stats().output_dropped, 10);
    }

    #[test]
    fn typed_input_raises_the_line_and_reading_it_lowers_the_line() {
        let mut b = Backends::new();
        let h = &mut Lines::default();
        b.attach_uart(5);
        assert!(!b.console_input(6, b"x", h), "VM 6 has no UART");
        enable_uart(&mut b, 5, h);
        h.0.clear();
        assert!(b.console_input(5, b"ab", h));
        assert_eq!(h.0, vec![(5, UART_INTID, true)]);
        let rd = |b: &mut Backends, h: &mut Lines| b.handle(&r(7, 5, UART_BASE + reg::DR, 4), h).data as u8;
        assert_eq!(rd(&mut b, h), b'a');
        assert_eq!(rd(&mut b, h), b'b');
        // FIFO empty: the receive interrupts are gone.
        assert_eq!(h.0.last(), Some(&(5, UART_INTID, false)));
    }

    #[test]
    fn only_reading_uartdr_or_writing_refills_the_fifo_and_touches_the_line() {
        use crate::pl011::fr;
        let mut b = Backends::new();
        let h = &mut Lines::default();
        b.attach_uart(1);
        enable_uart(&mut b, 1, h);
        // More input than the FIFO holds: the rest waits in the backend.
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        b.console_input(1, &text, h);
        h.0.clear();
        // Status reads (a driver polls UARTFR before every byte) move
        // nothing and leave the line alone.
        for reg in [reg::FR, reg::RIS, reg::IMSC, reg::CR] {
            b.handle(&r(3, 1, UART_BASE + reg, 4), h);
        }
        assert!(h.0.is_empty(), "no line change from status reads: {:?}", h.0);
        assert_eq!(uart_fr(&mut b, h, 1) & fr::RXFE, 0, "input waiting in the FIFO");
        // Every byte still comes out in order through UARTDR reads, each
        // of which makes room for the next.
        let got: Vec<u8> = (0..40).map(|seq| b.handle(&r(10 + seq, 1, UART_BASE + reg::DR, 4), h).data as u8).collect();
        assert_eq!(got, text);
        assert_ne!(uart_fr(&mut b, h, 1) & fr::RXFE, 0, "FIFO empty");
        assert_eq!(h.0.last(), Some(&(1, UART_INTID, false)), "the last read lowered the line");
    }

    #[test]
    fn input_waits_for_fifo_room_and_is_bounded() {
        let mut b = Backends::new();
        let h = &mut Lines::default();
        b.attach_uart(1);
        enable_uart(&mut b, 1, h);
        let text: Vec<u8> = (0..100u8).map(|i| b'0' + i % 10).collect();
        b.console_input(1, &text, h);
        // All 100 bytes come out in order although the FIFO holds 16 (or 1).
        let mut got = vec![];
        for seq in 1..=100 {
            got.push(b.handle(&r(seq, 1, UART_BASE + reg::DR, 4), h).data as u8);
        }
        assert_eq!(got, text);
        let big = vec![b'z'; INPUT_LIMIT + 100];
        b.console_input(1, &big, h);
        assert!(b.stats().input_dropped > 0);
        assert!(b.stats().input_dropped <= 100 + 32);
    }

    #[test]
    fn uart_errors_fault_and_detach_forgets_the_uart() {
        let mut b = Backends::new();
        let h = &mut Lines::default();
        b.attach_uart(1);
        assert_eq!(b.handle(&r(1, 1, UART_BASE + reg::FR, 8), h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&r(2, 1, UART_BASE + 0x100, 4), h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&r(3, 1, UART_BASE + reg::PERIPH_ID0, 4), h), IoCompletion::new(3, IoStatus::Ok, 0x11));
        b.detach(1);
        assert_eq!(b.handle(&r(4, 1, UART_BASE + reg::FR, 4), h).status, IoStatus::Fault as u32);
    }

    // ---- virtio through forwarded requests --------------------------------

    const RAM: u64 = 0x4000_0000;
    const STATUS: u64 = 0x070;

    /// A shared disk in memory (dom0's real disk on the target).
    struct Shared(MemDisk);

    impl BlockBackend for Shared {
        fn capacity_sectors(&self) -> u64 {
            hv_virtio::BlockBackend::capacity_sectors(&self.0)
        }
        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
            hv_virtio::BlockBackend::read(&mut self.0, sector, buf)
        }
        fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
            hv_virtio::BlockBackend::write(&mut self.0, sector, data)
        }
        fn flush(&mut self) -> Result<(), BackendError> {
            hv_virtio::BlockBackend::flush(&mut self.0)
        }
    }

    fn shared_disk(sectors: usize) -> &'static spin::Mutex<Shared> {
        Box::leak(Box::new(spin::Mutex::new(Shared(MemDisk::new(sectors)))))
    }

    /// A guest's virtio driver, reaching the device only through
    /// forwarded requests and its RAM only through the mock.
    struct Driver {
        vm: u16,
        slot: u64,
        seq: u64,
        /// Per queue: (desc, avail, used) addresses, next free descriptor, avail idx.
        queues: Vec<(u64, u64, u64, u16, u16)>,
    }

    const QSIZE: u16 = 32;

    impl Driver {
        fn reg(&self, off: u64) -> u64 {
            VIRTIO_BASE + self.slot * VIRTIO_STRIDE + off
        }

        fn wr(&mut self, b: &mut Backends, h: &mut Lines, off: u64, v: u32) -> IoCompletion {
            self.seq += 1;
            b.handle(&w(self.seq, self.vm, self.reg(off), 4, u64::from(v)), h)
        }

        fn rd(&mut self, b: &mut Backends, h: &mut Lines, off: u64) -> u32 {
            self.seq += 1;
            let c = b.handle(&r(self.seq, self.vm, self.reg(off), 4), h);
            assert_eq!(c.status, IoStatus::Ok as u32, "read {off:#x}");
            c.data as u32
        }

        /// Linux's bring-up: reset, ACKNOWLEDGE|DRIVER, VERSION_1 (plus
        /// `features` low bits), FEATURES_OK, queues, DRIVER_OK.
        fn up(b: &mut Backends, h: &mut Lines, vm: u16, slot: u64, nqueues: u64, features: u32) -> Driver {
            let mut d = Driver { vm, slot, seq: 1000 * (slot + 1), queues: Vec::new() };
            assert_eq!(d.rd(b, h, 0x000), 0x7472_6976, "magic");
            assert_eq!(d.rd(b, h, 0x004), 2, "version");
            d.wr(b, h, STATUS, 0);
            d.wr(b, h, STATUS, 3);
            d.wr(b, h, 0x024, 1);
            d.wr(b, h, 0x020, 1); // VERSION_1
            d.wr(b, h, 0x024, 0);
            d.wr(b, h, 0x020, features);
            d.wr(b, h, STATUS, 3 | 8);
            assert_eq!(d.rd(b, h, STATUS) & 8, 8, "FEATURES_OK kept");
            for q in 0..nqueues {
                let base = RAM + 0x1_0000 + q * 0x1000;
                let (desc, avail, used) = (base, base + 0x400, base + 0x800);
                d.wr(b, h, 0x030, q as u32);
                d.wr(b, h, 0x038, u32::from(QSIZE));
                for (off, a) in [(0x080, desc), (0x090, avail), (0x0a0, used)] {
                    d.wr(b, h, off, a as u32);
                    d.wr(b, h, off + 4, (a >> 32) as u32);
                }
                d.wr(b, h, 0x044, 1);
                d.queues.push((desc, avail, used, 0, 0));
            }
            d.wr(b, h, STATUS, 3 | 8 | 4);
            d
        }

        /// Puts a chain of (addr, len, device-writable) on queue `q` and
        /// notifies; the IO worker then takes whatever disk turns are queued.
        fn submit(&mut self, b: &mut Backends, h: &mut Lines, q: usize, bufs: &[(u64, u32, bool)]) {
            self.post(h, q, bufs);
            self.wr(b, h, 0x050, q as u32);
            disk_turns(b, h);
        }

        /// Puts a chain on queue `q` without notifying.
        fn post(&mut self, h: &mut Lines, q: usize, bufs: &[(u64, u32, bool)]) {
            let (desc, avail, _, mut next, idx) = self.queues[q];
            let mem = h.1.get_mut(&self.vm).unwrap();
            let head = next;
            for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
                let mut flags = if writable { 2u16 } else { 0 };
                let chained = i + 1 < bufs.len();
                if chained {
                    flags |= 1;
                }
                let this = next;
                next = (next + 1) % QSIZE;
                let mut e = [0u8; 16];
                e[0..8].copy_from_slice(&addr.to_le_bytes());
                e[8..12].copy_from_slice(&len.to_le_bytes());
                e[12..14].copy_from_slice(&flags.to_le_bytes());
                e[14..16].copy_from_slice(&(if chained { next } else { 0 }).to_le_bytes());
                mem.write(desc + u64::from(this) * 16, &e).unwrap();
            }
            mem.write(avail + 4 + u64::from(idx % QSIZE) * 2, &head.to_le_bytes()).unwrap();
            mem.write(avail + 2, &idx.wrapping_add(1).to_le_bytes()).unwrap();
            self.queues[q].3 = next;
            self.queues[q].4 = idx.wrapping_add(1);
        }

        /// used.idx of queue `q`.
        fn used_idx(&self, h: &Lines, q: usize) -> u16 {
            let mut v = [0u8; 2];
            h.1[&self.vm].read(self.queues[q].2 + 2, &mut v).unwrap();
            u16::from_le_bytes(v)
        }
    }

    /// What dom0's IO worker does: every queued disk turn, one after the
    /// other. Returns the completions of requests that waited.
    fn disk_turns(b: &mut Backends, h: &mut Lines) -> Vec<IoCompletion> {
        let mut answers = Vec::new();
        while let Some(mut turn) = b.lend_disk() {
            turn.serve(h);
            answers.extend(b.return_disk(turn, h));
        }
        answers
    }

    fn peek(h: &Lines, vm: u16, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        h.1[&vm].read(gpa, &mut v).unwrap();
        v
    }

    fn poke(h: &mut Lines, vm: u16, gpa: u64, data: &[u8]) {
        h.1.get_mut(&vm).unwrap().write(gpa, data).unwrap();
    }

    /// A block request: header at `buf`, data at `buf + 16`, status byte after.
    fn blk(d: &mut Driver, b: &mut Backends, h: &mut Lines, kind: u32, sector: u64, data: &[u8], len: u32) -> u8 {
        let buf = RAM + 0x2_0000;
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        poke(h, d.vm, buf, &hdr);
        poke(h, d.vm, buf + 16, data);
        poke(h, d.vm, buf + 16 + u64::from(len), &[0xff]);
        let mut chain = vec![(buf, 16, false)];
        if len > 0 {
            chain.push((buf + 16, len, kind == 0));
        }
        chain.push((buf + 16 + u64::from(len), 1, true));
        d.submit(b, h, 0, &chain);
        peek(h, d.vm, buf + 16 + u64::from(len), 1)[0]
    }

    #[test]
    fn a_disk_slice_is_written_flushed_and_read_back_through_forwarded_requests() {
        let disk = shared_disk(4096);
        let slice = DiskSlice::new(disk, 1 << 20, Some(64 << 10)).unwrap();
        let mut b = Backends::new();
        let mut h = Lines::default();
        h.1.insert(1, VecMemory::new(RAM, 1 << 20));
        assert_eq!(b.attach_virtio(1, vec![VirtioSpec::Block { slice, read_only: false }]), 1);
        let mut d = Driver::up(&mut b, &mut h, 1, 0, 1, 1 << 9);
        assert_eq!(d.rd(&mut b, &mut h, 0x008), 2, "block device");
        // Capacity in the config space: 64 KiB = 128 sectors.
        assert_eq!(d.rd(&mut b, &mut h, 0x100), 128);
        let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(blk(&mut d, &mut b, &mut h, 1, 2, &pattern, 512), 0, "OUT ok");
        // It landed at 1 MiB + 2 sectors of the shared disk, nowhere else.
        let bytes = disk.lock().0.bytes().to_vec();
        assert_eq!(&bytes[(1 << 20) + 1024..(1 << 20) + 1536], &pattern[..]);
        assert!(bytes[..(1 << 20) + 1024].iter().all(|&x| x == 0));
        assert_eq!(h.0.last(), Some(&(1, virtio_intid(0), true)), "used-buffer interrupt");
        let flushes = disk.lock().0.flushes();
        assert_eq!(blk(&mut d, &mut b, &mut h, 4, 0, &[], 0), 0, "FLUSH ok");
        assert_eq!(disk.lock().0.flushes(), flushes + 1, "flush reached the shared disk");
        assert_eq!(blk(&mut d, &mut b, &mut h, 0, 2, &[0; 512], 512), 0, "IN ok");
        assert_eq!(peek(&h, 1, RAM + 0x2_0000 + 16, 512), pattern);
        // Past the slice's end: an IO error, and the disk beyond is untouched.
        assert_eq!(blk(&mut d, &mut b, &mut h, 1, 128, &pattern, 512), 1, "OUT past the end: IOERR");
        assert!(disk.lock().0.bytes()[(1 << 20) + (64 << 10)..].iter().all(|&x| x == 0));
        assert_eq!(d.used_idx(&h, 0), 4);
        // One pulse for the four completions (none was acknowledged in
        // between); the ACK costs no hypercall, and the next completion
        // pulses again.
        assert_eq!(h.0.iter().filter(|e| e.1 == virtio_intid(0)).count(), 1);
        let isr = d.rd(&mut b, &mut h, 0x060);
        d.wr(&mut b, &mut h, 0x064, isr);
        assert_eq!(h.0.iter().filter(|e| e.1 == virtio_intid(0)).count(), 1);
        assert_eq!(blk(&mut d, &mut b, &mut h, 0, 2, &[0; 512], 512), 0);
        assert_eq!(h.0.iter().filter(|e| e.1 == virtio_intid(0)).count(), 2);
    }

    #[test]
    fn read_only_slices_refuse_writes_and_slices_must_fit_the_disk() {
        let disk = shared_disk(256);
        assert_eq!(DiskSlice::new(disk, 512, Some(1000)).unwrap_err(), SliceError::Unaligned);
        assert_eq!(DiskSlice::new(disk, 0, Some(0)).unwrap_err(), SliceError::Unaligned);
        assert!(matches!(DiskSlice::new(disk, 128 << 10, Some(1024)), Err(SliceError::PastEnd { .. })));
        assert!(matches!(DiskSlice::new(disk, u64::MAX - 511, Some(1024)), Err(SliceError::PastEnd { .. })));
        assert!(matches!(DiskSlice::new(disk, 256 << 10, None), Err(SliceError::PastEnd { .. })));
        let whole = DiskSlice::new(disk, 0, None).unwrap();
        assert_eq!(hv_virtio::BlockBackend::capacity_sectors(&whole), 256);
        let mut b = Backends::new();
        let mut h = Lines::default();
        h.1.insert(3, VecMemory::new(RAM, 1 << 20));
        b.attach_virtio(3, vec![VirtioSpec::Block { slice: whole, read_only: true }]);
        let mut d = Driver::up(&mut b, &mut h, 3, 0, 1, 1 << 5);
        assert_eq!(blk(&mut d, &mut b, &mut h, 1, 0, &[1; 512], 512), 1, "write to a read-only disk: IOERR");
        assert!(disk.lock().0.bytes().iter().all(|&x| x == 0));
    }

    /// A broadcast Ethernet frame from `src`.
    fn frame(src: u8, n: u16) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([0x52, 0x54, 0, 0, 0, src]);
        f.extend([0x88, 0xb5]);
        f.extend(n.to_le_bytes());
        f.resize(60, 0xab);
        f
    }

    #[test]
    fn frames_cross_the_switch_between_two_vms_and_a_broken_device_harms_only_its_vm() {
        let mut b = Backends::new();
        let mut h = Lines::default();
        for vm in [1, 2] {
            h.1.insert(vm, VecMemory::new(RAM, 1 << 20));
            b.attach_virtio(vm, vec![VirtioSpec::Console, VirtioSpec::Net { mac: [0x52, 0x54, 0, 0, 0, vm as u8] }]);
        }
        let mut a = Driver::up(&mut b, &mut h, 1, 1, 2, 1 << 5);
        let mut c = Driver::up(&mut b, &mut h, 2, 1, 2, 1 << 5);
        const HDR: u64 = 12;
        for round in 0..20u16 {
            // VM 2 offers a receive buffer; VM 1 sends a frame.
            let rx = RAM + 0x3_0000 + u64::from(round % 4) * 0x800;
            c.submit(&mut b, &mut h, 0, &[(rx, 1526, true)]);
            let tx = RAM + 0x4_0000;
            let f = frame(1, round);
            poke(&mut h, 1, tx, &[0; HDR as usize]);
            poke(&mut h, 1, tx + HDR, &f);
            a.submit(&mut b, &mut h, 1, &[(tx, (HDR as usize + f.len()) as u32, false)]);
            assert_eq!(peek(&h, 2, rx + HDR, f.len()), f, "round {round}");
            assert_eq!(c.used_idx(&h, 0), round + 1);
        }
        assert!(h.0.contains(&(2, virtio_intid(1), true)));
        assert_eq!(b.stats().frames_switched, 20);
        // A frame buffer outside VM 1's RAM (inside VM 2's, were it mapped
        // there): that request fails; nothing reaches VM 2.
        let used_before = c.used_idx(&h, 0);
        c.submit(&mut b, &mut h, 0, &[(RAM + 0x3_0000, 1526, true)]);
        a.submit(&mut b, &mut h, 1, &[(RAM + (1 << 20), 64, false)]);
        assert_eq!(c.used_idx(&h, 0), used_before, "nothing delivered");
        assert_eq!(a.rd(&mut b, &mut h, STATUS) & 0x40, 0, "the queue itself is sound");
        // VM 1 breaks its transmit queue: avail.idx jumps by more than the queue size.
        let avail = a.queues[1].1;
        let idx = a.queues[1].4.wrapping_add(100);
        poke(&mut h, 1, avail + 2, &idx.to_le_bytes());
        a.wr(&mut b, &mut h, 0x050, 1);
        assert_eq!(a.rd(&mut b, &mut h, STATUS) & 0x40, 0x40, "DEVICE_NEEDS_RESET");
        assert_eq!(a.rd(&mut b, &mut h, 0x060) & 2, 2, "configuration-change interrupt");
        // VM 2's devices still work: its console prints.
        let mut con = Driver::up(&mut b, &mut h, 2, 0, 2, 0);
        poke(&mut h, 2, RAM + 0x5_0000, b"still here\n");
        con.submit(&mut b, &mut h, 1, &[(RAM + 0x5_0000, 11, false)]);
        let mut out = vec![];
        b.take_output(|vm, bytes| out.push((vm, bytes.to_vec())), &mut h);
        assert_eq!(out, vec![(2, b"still here\n".to_vec())]);
        // Detaching VM 2 frees its port: VM 1's frames (after its reset) go nowhere.
        b.detach(2);
        assert!(b.ports.iter().all(|p| p.is_none_or(|(vm, _)| vm != 2)));
    }

    #[test]
    fn virtio_accesses_outside_a_vms_devices_fault() {
        let mut b = Backends::new();
        let mut h = Lines::default();
        h.1.insert(1, VecMemory::new(RAM, 1 << 20));
        b.attach_virtio(1, vec![VirtioSpec::Console]);
        // Slot 1 has no device; slot 0 takes only 32-bit register accesses.
        assert_eq!(b.handle(&r(1, 1, VIRTIO_BASE + VIRTIO_STRIDE, 4), &mut h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&r(2, 1, VIRTIO_BASE, 2), &mut h).status, IoStatus::Fault as u32);
        assert_eq!(b.handle(&r(3, 1, VIRTIO_BASE, 4), &mut h), IoCompletion::new(3, IoStatus::Ok, 0x7472_6976));
        // Another VM has none.
        assert_eq!(b.handle(&r(4, 2, VIRTIO_BASE, 4), &mut h).status, IoStatus::Fault as u32);
    }

    #[test]
    fn typed_input_goes_to_a_live_virtio_console_when_the_pl011_does_not_listen() {
        let mut b = Backends::new();
        let mut h = Lines::default();
        h.1.insert(1, VecMemory::new(RAM, 1 << 20));
        b.attach_uart(1);
        b.attach_virtio(1, vec![VirtioSpec::Console]);
        let mut con = Driver::up(&mut b, &mut h, 1, 0, 2, 0);
        // The driver offers a receive buffer; the PL011's receiver is off.
        con.submit(&mut b, &mut h, 0, &[(RAM + 0x6_0000, 64, true)]);
        assert!(b.console_input(1, b"ls\n", &mut h));
        assert_eq!(peek(&h, 1, RAM + 0x6_0000, 3), b"ls\n");
        assert_eq!(con.used_idx(&h, 0), 1);
        // Once the PL011 listens, input goes there.
        enable_uart(&mut b, 1, &mut h);
        assert!(b.console_input(1, b"x", &mut h));
        assert_eq!(b.handle(&r(99, 1, UART_BASE + reg::DR, 4), &mut h).data as u8, b'x');
    }

    #[test]
    fn a_busy_vm_gets_turns_beside_a_quiet_one_not_before_it() {
        let mut b = Backends::new();
        let mut h = Lines::default();
        let mut drivers = Vec::new();
        for vm in [1u16, 2] {
            h.1.insert(vm, VecMemory::new(RAM, 1 << 20));
            b.attach_virtio(vm, vec![VirtioSpec::Console]);
            drivers.push(Driver::up(&mut b, &mut h, vm, 0, 2, 0));
            b.set_budget(vm, 2);
        }
        let [busy, quiet] = &mut drivers[..] else { unreachable!() };
        // VM 1 fills its transmit ring (8 buffers), VM 2 posts 3; one
        // notification each serves two.
        for (d, n) in [(&mut *busy, 8u64), (&mut *quiet, 3)] {
            for i in 0..n {
                let at = RAM + 0x5_0000 + i * 0x100;
                poke(&mut h, d.vm, at, format!("{}:{i};", d.vm).as_bytes());
                d.post(&mut h, 1, &[(at, 4, false)]);
            }
            d.wr(&mut b, &mut h, 0x050, 1);
        }
        assert_eq!((busy.used_idx(&h, 1), quiet.used_idx(&h, 1)), (2, 2));
        assert!(b.has_pending());
        // Each turn serves every device with work once, in VM order: the
        // quiet VM is done after one turn, the busy one takes three.
        let mut turns = Vec::new();
        while b.poll_pending(&mut h) {
            turns.push((busy.used_idx(&h, 1), quiet.used_idx(&h, 1)));
        }
        turns.push((busy.used_idx(&h, 1), quiet.used_idx(&h, 1)));
        assert_eq!(turns, vec![(4, 3), (6, 3), (8, 3)]);
        let mut out = Vec::new();
        b.take_output(|vm, bytes| out.push((vm, bytes.to_vec())), &mut h);
        assert_eq!(out, vec![(1, b"1:0;1:1;1:2;1:3;1:4;1:5;1:6;1:7;".to_vec()), (2, b"2:0;2:1;2:2;".to_vec())]);
    }

    #[test]
    fn a_virtio_console_at_its_output_limit_waits_and_resumes_once_the_output_is_taken() {
        let mut b = Backends::new();
        let mut h = Lines::default();
        h.1.insert(1, VecMemory::new(RAM, 1 << 20));
        b.attach_virtio(1, vec![VirtioSpec::Console]);
        let mut con = Driver::up(&mut b, &mut h, 1, 0, 2, 0);
        const PIECE: u64 = 32 << 10;
        for i in 0..3u64 {
            poke(&mut h, 1, RAM + 0x8_0000 + i * PIECE, &vec![b'a' + i as u8; PIECE as usize]);
            con.post(&mut h, 1, &[(RAM + 0x8_0000 + i * PIECE, PIECE as u32, false)]);
        }
        con.wr(&mut b, &mut h, 0x050, 1);
        assert_eq!(con.used_idx(&h, 1), 2, "64 KiB taken, the third buffer left in the ring");
        assert!(!b.poll_pending(&mut h), "no turn helps while the output is full");
        assert_eq!(con.used_idx(&h, 1), 2);
        let mut out = Vec::new();
        b.take_output(|_, bytes| out.extend_from_slice(bytes), &mut h);
        assert!(b.has_pending(), "room again: the console gets a turn");
        b.poll_pending(&mut h);
        assert_eq!(con.used_idx(&h, 1), 3);
        b.take_output(|_, bytes| out.extend_from_slice(bytes), &mut h);
        assert_eq!(out.len() as u64, 3 * PIECE, "nothing lost");
        assert!(out.chunks(PIECE as usize).enumerate().all(|(i, c)| c.iter().all(|&x| x == b'a' + i as u8)));
    }

    /// VM `vm` with a disk on `disk` at `offset`, its driver up.
    fn disk_vm(b: &mut Backends, h: &mut Lines, disk: &'static spin::Mutex<Shared>, vm: u16, offset: u64) -> Driver {
        h.1.insert(vm, VecMemory::new(RAM, 1 << 20));
        let slice = DiskSlice::new(disk, offset, Some(64 << 10)).unwrap();
        b.attach_virtio(vm, vec![VirtioSpec::Block { slice, read_only: false }]);
        Driver::up(b, h, vm, 0, 1, 0)
    }

    /// Posts `n` one-sector writes of `byte` to sectors 0..n of `d`'s disk
    /// (headers, data and status bytes at distinct addresses) and notifies.
    fn post_writes(d: &mut Driver, b: &mut Backends, h: &mut Lines, n: u64, byte: u8) {
        for i in 0..n {
            let buf = RAM + 0x4_0000 + i * 0x400;
            let mut hdr = [0u8; 16];
            hdr[0..4].copy_from_slice(&1u32.to_le_bytes());
            hdr[8..16].copy_from_slice(&i.to_le_bytes());
            poke(h, d.vm, buf, &hdr);
            poke(h, d.vm, buf + 16, &[byte; 512]);
            poke(h, d.vm, buf + 528, &[0xff]);
            // Header and data in one readable buffer: the device reads them as one stream.
            d.post(h, 0, &[(buf, 528, false), (buf + 528, 1, true)]);
        }
        d.wr(b, h, 0x050, 0);
    }

    #[test]
    fn a_disk_notification_does_no_disk_io_and_requests_for_a_lent_disk_wait_in_order() {
        let disk = shared_disk(4096);
        let mut b = Backends::new();
        let mut h = Lines::default();
        let mut d = disk_vm(&mut b, &mut h, disk, 1, 0);
        h.1.insert(2, VecMemory::new(RAM, 1 << 20));
        b.attach_test_device(2);
        post_writes(&mut d, &mut b, &mut h, 3, 0xa1);
        assert!(disk.lock().0.bytes().iter().all(|&x| x == 0), "the notification wrote nothing yet");
        assert!(b.disk_work_pending());
        // The worker takes the disk out: its requests wait, other VMs' do not.
        let mut turn = b.lend_disk().expect("a turn");
        assert!(b.lent(1) && !b.lent(2));
        let isr = r(50, 1, VIRTIO_BASE + 0x060, 4);
        let ack = w(51, 1, VIRTIO_BASE + 0x064, 4, 1);
        assert_eq!(b.handle_or_defer(&isr, &mut h), None, "waits for the disk");
        assert_eq!(b.handle_or_defer(&ack, &mut h), None, "after the read, in order");
        let other = b.handle_or_defer(&r(52, 2, BASE + ID_OFFSET, 8), &mut h);
        assert_eq!(other, Some(IoCompletion::new(52, IoStatus::Ok, ID_VALUE)), "another VM's device answers at once");
        turn.serve(&mut h);
        assert!(disk.lock().0.bytes()[..3 * 512].iter().all(|&x| x == 0xa1), "the turn did the IO");
        let answers = b.return_disk(turn, &mut h);
        // The status read saw the used-buffer interrupt; the ACK was applied after it.
        assert_eq!(answers.len(), 2);
        assert_eq!((answers[0].seq, answers[0].data), (50, 1));
        assert_eq!((answers[1].seq, answers[1].status), (51, IoStatus::Ok as u32));
        assert_eq!(d.used_idx(&h, 0), 3);
        assert_eq!(b.stats().deferred, 2);
        assert_eq!(b.stats().blk_requests, 3);
    }

    #[test]
    fn busy_disks_of_two_vms_take_turns() {
        let disk = shared_disk(4096);
        let mut b = Backends::new();
        let mut h = Lines::default();
        let mut d1 = disk_vm(&mut b, &mut h, disk, 1, 0);
        let mut d2 = disk_vm(&mut b, &mut h, disk, 2, 1 << 20);
        post_writes(&mut d1, &mut b, &mut h, 12, 1);
        post_writes(&mut d2, &mut b, &mut h, 2, 2);
        assert!(DISK_TURN < 12, "VM 1 needs two turns");
        // Order of turns: VM 1 (up to DISK_TURN), VM 2, VM 1 again if it had more.
        let mut order = Vec::new();
        while let Some(mut t) = b.lend_disk() {
            t.serve(&mut h);
            order.push((t.vm, t.requests));
            b.return_disk(t, &mut h);
        }
        assert_eq!(order[0].0, 1);
        assert_eq!(order[1], (2, 2), "VM 2 is served right after VM 1's first turn");
        assert_eq!(order.iter().map(|&(_, n)| n).sum::<u64>(), 14);
        assert_eq!(order.len(), 3, "VM 1, VM 2, VM 1");
        assert!(order.iter().all(|&(_, n)| n as usize <= DISK_TURN));
        assert_eq!((d1.used_idx(&h, 0), d2.used_idx(&h, 0)), (12, 2));
    }

    #[test]
    fn a_turn_that_comes_back_after_its_vm_was_destroyed_is_dropped_and_the_new_vm_is_untouched() {
        let disk = shared_disk(4096);
        let mut b = Backends::new();
        let mut h = Lines::default();
        let mut old = disk_vm(&mut b, &mut h, disk, 1, 0);
        post_writes(&mut old, &mut b, &mut h, 2, 0x55);
        let mut turn = b.lend_disk().expect("a turn");
        // Destroyed while its disk is out; at once a new VM with the same id.
        let deferred = r(60, 1, VIRTIO_BASE + 0x060, 4);
        assert_eq!(b.handle_or_defer(&deferred, &mut h), None);
        b.detach(1);
        h.1.remove(&1);
        let mut new = disk_vm(&mut b, &mut h, disk, 1, 1 << 20);
        let before = peek(&h, 1, RAM, 1 << 20);
        turn.serve(&mut h);
        assert!(b.return_disk(turn, &mut h).is_empty(), "nothing answered for the old VM");
        assert_eq!(b.stats().disk_turns_dropped, 1);
        // The new VM's RAM is as it was except for what its own driver wrote.
        assert_eq!(peek(&h, 1, RAM, 1 << 20), before);
        assert!(!b.lent(1));
        // Its own disk works, and its slice has nothing of the old VM's.
        post_writes(&mut new, &mut b, &mut h, 1, 0x66);
        disk_turns(&mut b, &mut h);
        assert_eq!(new.used_idx(&h, 0), 1);
        assert!(disk.lock().0.bytes()[(1 << 20)..(1 << 20) + 512].iter().all(|&x| x == 0x66));
    }

    #[test]
    fn accesses_waiting_for_a_lent_disk_are_bounded() {
        let disk = shared_disk(4096);
        let mut b = Backends::new();
        let mut h = Lines::default();
        let mut d = disk_vm(&mut b, &mut h, disk, 1, 0);
        post_writes(&mut d, &mut b, &mut h, 1, 0x11);
        let mut turn = b.lend_disk().expect("a turn");
        for i in 0..WAITING_LIMIT as u64 {
            assert_eq!(b.handle_or_defer(&r(100 + i, 1, VIRTIO_BASE + 0x060, 4), &mut h), None);
        }
        let refused = b.handle_or_defer(&r(99, 1, VIRTIO_BASE + 0x060, 4), &mut h);
        assert_eq!(refused, Some(IoCompletion::new(99, IoStatus::Fault, 0)), "one too many: refused at once");
        assert_eq!(b.stats().deferred_refused, 1);
        turn.serve(&mut h);
        let answers = b.return_disk(turn, &mut h);
        assert_eq!(answers.len(), WAITING_LIMIT, "every one that waited is answered");
        assert!(answers.iter().all(|c| c.status == IoStatus::Ok as u32));
    }

    /// The hypervisor's side of `IoShadow`, as `hypervisor/src/ioshadow.rs`
    /// has it: a value, its keep mask, and the newest write that made it
    /// invalid; the guest's accesses go through it.
    #[derive(Default)]
    struct Shadowing {
        lines: Lines,
        held: Option<(u32, u64)>,
        invalidated_at: u64,
        seq: u64,
        published: usize,
    }

    impl Hyp for Shadowing {
        fn set_irq(&mut self, vm: u16, intid: u32, level: bool) {
            self.lines.set_irq(vm, intid, level);
        }
        fn read_guest(&self, vm: u16, gpa: u64, buf: &mut [u8]) -> Result<(), ()> {
            self.lines.read_guest(vm, gpa, buf)
        }
        fn write_guest(&mut self, vm: u16, gpa: u64, data: &[u8]) -> Result<(), ()> {
            self.lines.write_guest(vm, gpa, data)
        }
        fn publish(&mut self, vm: u16, addr: u64, value: Option<u32>, seq: u64, keep: u64) -> bool {
            assert_eq!((vm, addr), (1, UART_BASE + reg::FR));
            if seq < self.invalidated_at {
                return false;
            }
            self.published += 1;
            self.held = value.map(|v| (v, keep));
            true
        }
    }

    impl Shadowing {
        /// A guest read of UARTFR: answered from the value held, else a request.
        fn read_fr(&mut self, b: &mut Backends) -> (u32, bool) {
            if let Some((v, _)) = self.held {
                return (v, true);
            }
            self.seq += 1;
            (b.handle(&r(self.seq, 1, UART_BASE + reg::FR, 4), self).data as u32, false)
        }

        /// A guest write: the value held goes unless the mask names it.
        fn write(&mut self, b: &mut Backends, offset: u64, value: u64) {
            self.seq += 1;
            if self.held.is_some_and(|(_, keep)| !hv_abi::hypercall::shadow_keeps(keep, offset)) {
                self.held = None;
                self.invalidated_at = self.seq;
            }
            b.handle(&w(self.seq, 1, UART_BASE + offset, 4, value), self);
        }
    }

    /// Whatever the guest, the shell and the line do, a UARTFR read
    /// answered from the published value gives what dom0's model would
    /// answer, and most reads of a console driver are answered so.
    #[test]
    fn the_published_flags_are_always_what_the_model_would_answer() {
        use crate::pl011::{cr, fr, lcr_h};
        let mut b = Backends::new();
        let h = &mut Shadowing::default();
        b.attach_uart(1);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let (mut from_shadow, mut reads) = (0, 0);
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            match rng % 100 {
                0..=59 => {
                    let (seen, shadowed) = h.read_fr(&mut b);
                    reads += 1;
                    from_shadow += usize::from(shadowed);
                    let truth = b.vms[&1].uart.as_ref().unwrap().model.flags();
                    assert_eq!(seen, truth, "UARTFR (from the shadow: {shadowed})");
                    if seen & fr::TXFF == 0 {
                        h.write(&mut b, reg::DR, u64::from(b'a'));
                    }
                }
                60..=69 => h.write(&mut b, reg::DR, 0x41),
                70..=74 => h.write(&mut b, reg::ICR, 0x7ff),
                75..=77 => h.write(&mut b, reg::LCR_H, if rng & 256 != 0 { u64::from(lcr_h::FEN) } else { 0 }),
                78..=80 => {
                    let lbe = if rng & 512 != 0 { cr::LBE } else { 0 };
                    h.write(&mut b, reg::CR, u64::from(cr::UARTEN | cr::TXE | cr::RXE | lbe));
                }
                81..=84 => h.write(&mut b, reg::IMSC, rng >> 32 & 0x7ff),
                85..=89 => {
                    b.console_input(1, b"xy", h);
                }
                90..=94 => {
                    h.seq += 1;
                    b.handle(&r(h.seq, 1, UART_BASE + reg::DR, 4), h);
                }
                _ => {
                    if rng & 1024 != 0 {
                        b.take_output(|_, _| {}, h);
                    }
                }
            }
        }
        assert!(from_shadow * 10 > reads * 8, "{from_shadow} of {reads} reads from the published value");
        assert!(h.published > 100, "{} publications", h.published);
    }
}
