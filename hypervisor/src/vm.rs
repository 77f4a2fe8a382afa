//! Virtual machines and their vCPUs: the VM table, per-VM state and
//! statistics, and what a vCPU carries between runs.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use hv_abi::hypercall::{FaultPolicy, StopReason, VmState, LOG_WRITE_BURST, MAX_VMS};
use crate::sync::Mutex;

use crate::addr::{Ipa, PhysAddr};
use crate::arch::gic;
use crate::arch::vcpu::{VcpuArch, SPSR_EL1H_MASKED};
use crate::arch::{cpu, TrapFrame};
use crate::ratelimit::TokenBucket;
use crate::stage2::Stage2Tables;
use crate::vgic::Vgic;

/// A VM's identifier, as dom0 sees it (dom0 is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VmId(pub u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmKind {
    /// The privileged host VM: owns the hardware, may make control calls.
    Dom0,
    Guest,
}

/// A device the hypervisor emulates for a VM: accesses to its IPA window
/// trap (the window is left unmapped at stage 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatedDevice {
    GicDistributor,
    GicRedistributors,
    /// A transmit-only PL011 whose lines go to the guest console ring.
    ConsoleUart,
}

#[derive(Clone, Copy, Debug)]
pub struct EmulatedRegion {
    pub base: Ipa,
    pub size: u64,
    pub device: EmulatedDevice,
}

/// A VM's GIC distributor window, found once when the VM is made: the trap
/// path checks an abort's IPA against it with one compare before any other
/// look-up, and answers loads of the registers that never change from
/// `fixed` (`emulate::data_abort`).
#[derive(Clone, Copy, Debug)]
pub struct GicdWindow {
    base: u64,
    /// 0 if the VM has no distributor region (nothing matches).
    size: u64,
    pub fixed: crate::vgic::DistFixed,
}

impl GicdWindow {
    fn new(regions: &[EmulatedRegion], vgic: &Vgic) -> Self {
        let region = regions.iter().find(|r| r.device == EmulatedDevice::GicDistributor);
        GicdWindow {
            base: region.map_or(0, |r| r.base.as_u64()),
            size: region.map_or(0, |r| r.size),
            fixed: vgic.dist_fixed(),
        }
    }

    /// The offset of `ipa` in the window, if it is inside.
    #[inline(always)]
    pub fn offset_of(&self, ipa: u64) -> Option<u64> {
        let offset = ipa.wrapping_sub(self.base);
        (offset < self.size).then_some(offset)
    }
}

/// vCPU power states (PSCI).
pub mod power {
    pub const OFF: u8 = 0;
    /// `CPU_ON` accepted (or the VM started); not yet run.
    pub const ON_PENDING: u8 = 1;
    pub const ON: u8 = 2;
}

/// Exit reasons counted per VM (`hv_abi::hypercall::EXIT_REASONS`).
#[derive(Clone, Copy, Debug)]
pub enum Exit {
    Hvc = 0,
    Smc = 1,
    Mmio = 2,
    Wfi = 3,
    SysReg = 4,
    Irq = 5,
    Abort = 6,
    Other = 7,
}

/// What a vCPU's physical CPU restores when it (re)enters it: the
/// general-purpose registers, and the architectural rest (`arch`).
pub struct VcpuContext {
    pub regs: TrapFrame,
    pub arch: VcpuArch,
}

impl VcpuContext {
    fn reset(entry: u64, x0: u64, mpidr: u64, cntvoff: u64) -> Self {
        let mut regs = TrapFrame { x: [0; 31], sp: 0, elr: entry, spsr: SPSR_EL1H_MASKED, esr: 0, far: 0 };
        regs.x[0] = x0;
        VcpuContext { regs, arch: VcpuArch::reset(mpidr, cntvoff) }
    }
}

/// Where a vCPU starts when it is switched on (`CPU_ON`, `VmSetEntry`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuStart {
    pub entry: u64,
    /// x0 at entry (PSCI's context ID; the device tree for vCPU 0).
    pub context: u64,
}

pub struct Vcpu {
    pub index: usize,
    /// The MPIDR the vCPU reads (VMPIDR_EL2), as its VM's device tree says.
    pub mpidr: u64,
    /// The physical CPU this vCPU is placed on (`pcpu()`): it runs there,
    /// is queued there, and that CPU owns its context. The load balancer
    /// (`sched`) moves it only while it sits in a run queue (saved, not
    /// running), holding both CPUs' scheduler locks.
    pcpu: AtomicUsize,
    /// The physical CPUs it may run on (bit i = CPU i; 0 = any): its
    /// pinning. The balancer never moves it outside them.
    pub allowed: u64,
    pub power: AtomicU8,
    /// Where a pending `CPU_ON` starts it.
    pub start: Mutex<VcpuStart>,
    /// Set when the vGIC has new work for this vCPU: flush the list
    /// registers before re-entering it.
    pub needs_flush: AtomicBool,
    /// Scheduler state (`sched::state`).
    pub sched: AtomicU8,
    /// Whether it is parked on its CPU (`sched::park`) and whether a
    /// wake-up claimed it there (`sched::parking`).
    pub parking: AtomicU8,
    /// Counter ticks this vCPU has run.
    pub run_ticks: AtomicU64,
    /// Counter ticks it waited in a run queue (runnable, not running): its
    /// stolen time (`pvtime`).
    pub steal_ticks: AtomicU64,
    /// It was switched out waiting for dom0 (`IO_WAIT`) and counts in its
    /// CPU's load until it is queued again (`sched`). Under that CPU's
    /// scheduler lock.
    pub io_counted: AtomicBool,
    /// Counter value when it was last queued, `NOT_QUEUED` while it is
    /// not in a run queue. Written under its CPU's scheduler lock.
    pub queued_at: AtomicU64,
    /// Its turns charged as used (`schedpolicy::turn_budget`), in counter
    /// ticks: > 0 what was left of its slice when a favoured vCPU
    /// preempted it, < 0 by how much its turns overran their slices.
    /// Written under its CPU's scheduler lock; 0 while it runs.
    pub slice_balance: AtomicI64,
    /// Exits by reason (`Exit`). Only the vCPU's own CPU writes them, so a
    /// plain load and store count without a read-modify-write loop.
    pub exits: [AtomicU64; 8],
    /// A forwarded access in flight (`ioreq`): what to do with the answer,
    /// and the answer once dom0 gave it.
    pub io: Mutex<IoWait>,
    context: UnsafeCell<VcpuContext>,
}

// SAFETY: `context` is only touched by the physical CPU the vCPU is placed
// on (`pcpu`), through `context_mut`, which documents that duty; `pcpu`
// changes only while the vCPU is saved and queued, under the scheduler
// locks of both CPUs, which order the old CPU's save before the new CPU's
// load. Everything else is atomic or locked.
unsafe impl Sync for Vcpu {}

impl Vcpu {
    pub fn new(index: usize, mpidr: u64, pcpu: usize, cntvoff: u64) -> Self {
        Vcpu {
            index,
            mpidr,
            pcpu: AtomicUsize::new(pcpu),
            allowed: 1 << pcpu,
            power: AtomicU8::new(power::OFF),
            start: Mutex::new(VcpuStart::default()),
            needs_flush: AtomicBool::new(false),
            sched: AtomicU8::new(0),
            parking: AtomicU8::new(0),
            run_ticks: AtomicU64::new(0),
            steal_ticks: AtomicU64::new(0),
            io_counted: AtomicBool::new(false),
            queued_at: AtomicU64::new(NOT_QUEUED),
            slice_balance: AtomicI64::new(0),
            exits: [const { AtomicU64::new(0) }; 8],
            io: Mutex::new(IoWait::default()),
            context: UnsafeCell::new(VcpuContext::reset(0, 0, mpidr, cntvoff)),
        }
    }

    /// May run on the CPUs of `allowed` (bit i = CPU i; 0 = any CPU); a new
    /// vCPU is pinned to the CPU it was placed on.
    pub fn with_allowed(mut self, allowed: u64) -> Self {
        self.allowed = allowed;
        self
    }

    /// The physical CPU the vCPU is placed on. Stable while it runs, is
    /// blocked or waits for dom0; only a queued vCPU may be moved.
    #[inline]
    pub fn pcpu(&self) -> usize {
        self.pcpu.load(Ordering::Acquire)
    }

    /// May it run on physical CPU `cpu`?
    pub fn may_run_on(&self, cpu: usize) -> bool {
        self.allowed == 0 || (cpu < 64 && self.allowed & (1 << cpu) != 0)
    }

    /// Places it on `cpu` (the balancer, holding the scheduler locks of
    /// its old and new CPU, with the vCPU saved and queued).
    pub(crate) fn set_pcpu(&self, cpu: usize) {
        self.pcpu.store(cpu, Ordering::Release);
    }

    /// # Safety
    /// Only on the physical CPU the vCPU is placed on (`pcpu`), while it is not running the
    /// vCPU (or from its own trap handler), with no other reference to the
    /// context alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn context_mut(&self) -> &mut VcpuContext {
        // SAFETY: the caller guarantees exclusive access (see above).
        unsafe { &mut *self.context.get() }
    }

    #[inline]
    pub fn count_exit(&self, exit: Exit) {
        let c = &self.exits[exit as usize];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Resets the context for a (re)start at `entry` with x0 = `context`.
    ///
    /// # Safety
    /// As for `context_mut`.
    pub unsafe fn reset(&self, start: VcpuStart, cntvoff: u64) {
        // SAFETY: forwarded from the caller.
        let ctx = unsafe { self.context_mut() };
        *ctx = VcpuContext::reset(start.entry, start.context, self.mpidr, cntvoff);
    }
}

/// `Vcpu::queued_at` of a vCPU that is not in a run queue.
pub const NOT_QUEUED: u64 = u64::MAX;

/// `Vcpu::sched` values: where the scheduler has the vCPU.
pub mod state {
    /// Not runnable: powered off, or its VM not started.
    pub const OFF: u8 = 0;
    /// Wants to run (in a run queue, or waiting for its VM to be unpaused).
    pub const RUNNABLE: u8 = 1;
    pub const RUNNING: u8 = 2;
    /// In WFI with nothing to take.
    pub const BLOCKED: u8 = 3;
    /// Waiting for dom0 to answer a forwarded access (`io`); only that
    /// answer wakes it.
    pub const IO_WAIT: u8 = 4;
}

/// A vCPU's forwarded access: what to do with the answer, and the answer
/// once dom0 gave it.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoWait {
    pub pending: Option<PendingIo>,
    pub answer: Option<IoAnswer>,
}

/// Dom0's answer to a forwarded access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAnswer {
    pub status: hv_abi::ioreq::IoStatus,
    /// The value read (reads only).
    pub data: u64,
}

/// What a vCPU blocked on a forwarded access needs to resume.
#[derive(Clone, Copy, Debug)]
pub struct PendingIo {
    pub abort: crate::esr::DataAbort,
    pub register: u8,
    pub write: bool,
    /// The request's `seq`: only the completion with this one is its answer.
    pub seq: u64,
}

/// Why and where a VM stopped.
#[derive(Clone, Copy, Debug)]
pub struct StopInfo {
    pub reason: StopReason,
    pub syndrome: u64,
    pub address: u64,
}

/// A block of a VM's RAM: `size` bytes at `ipa`, backed by host memory at
/// `pa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamChunk {
    pub ipa: Ipa,
    pub pa: PhysAddr,
    pub size: u64,
}

impl RamChunk {
    /// The offset of `ipa` in this chunk, if it is inside.
    fn offset_of(&self, ipa: u64) -> Option<u64> {
        ipa.checked_sub(self.ipa.as_u64()).filter(|&o| o < self.size)
    }
}

/// What answers a VM's access outside its RAM (`Vm::mmio_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mmio {
    /// Dom0, through the IO rings.
    Forwarded(Forwarded),
    /// The hypervisor: the device, and the offset into its window.
    Emulated(EmulatedDevice, u64),
}

/// A window of a VM's IPA space whose accesses go to dom0 (`IoMap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarded {
    pub base: u64,
    pub size: u64,
    /// Writes are posted: the vCPU does not wait for dom0.
    pub post_writes: bool,
}

pub struct Vm {
    pub id: VmId,
    pub name: String,
    pub kind: VmKind,
    /// Stage-2 VMID (8 bits).
    pub vmid: u16,
    /// Its stage-2 tables (taken when it is destroyed).
    pub stage2: Mutex<Option<Stage2Tables>>,
    pub stage2_root: PhysAddr,
    pub vtcr: u64,
    /// The VM's RAM, in IPA order.
    pub ram: Vec<RamChunk>,
    /// Whether `ram` still belongs to the VM: `VmCopy` holds the read side
    /// while it copies, destroying takes the write side and clears it
    /// before the chunks go back to the allocator.
    pub ram_live: crate::sync::RwLock<bool>,
    pub regions: Vec<EmulatedRegion>,
    /// The distributor's entry of `regions`, for the trap's hot path.
    pub gicd: GicdWindow,
    /// IPA windows whose accesses go to dom0 (`IoMap`): (base, size).
    pub forwarded: crate::sync::RwLock<Vec<Forwarded>>,
    /// Registers in those windows whose reads the hypervisor answers with
    /// the value dom0 published (`IoShadow`).
    pub shadows: crate::ioshadow::IoShadows,
    /// Physical PPIs hardware-linked to each of its vCPUs.
    pub hw_ppis: Vec<u32>,
    /// The page of its vCPUs' stolen-time structures (`pvtime`), mapped
    /// read-only at `guest::PV_TIME_BASE`; guests only.
    pub pv_time: Option<PhysAddr>,
    pub vgic: Mutex<Vgic>,
    pub vcpus: Vec<Vcpu>,
    /// CNTVOFF_EL2 for its vCPUs.
    pub cntvoff: u64,
    pub weight: u32,
    pub state: AtomicU32,
    pub stop: Mutex<StopInfo>,
    /// The guest console's current line.
    pub console_line: Mutex<Vec<u8>>,
    /// Warnings logged about this VM's misbehaviour so far.
    pub warnings: AtomicU32,
    /// What a touch of an IPA with nothing behind it does
    /// (`hv_abi::hypercall::FaultPolicy` as u8); dom0 sets it with
    /// `VmConfigure` before the VM starts.
    pub on_fault: AtomicU8,
    /// `LogWrite`'s rate limit, and the lines it dropped (in all, and when
    /// the log last said so).
    pub log_limit: Mutex<LogLimit>,
    pub log_dropped: AtomicU64,
}

/// A VM's `LogWrite` rate limit.
pub struct LogLimit {
    pub bucket: TokenBucket,
    /// `log_dropped` when the log last reported drops.
    pub reported: u64,
}

/// What a new VM is made of; everything else starts empty.
pub struct VmSpec {
    pub id: VmId,
    pub name: String,
    pub kind: VmKind,
    pub stage2: Stage2Tables,
    pub ram: Vec<RamChunk>,
    pub regions: Vec<EmulatedRegion>,
    pub hw_ppis: Vec<u32>,
    pub pv_time: Option<PhysAddr>,
    pub vgic: Vgic,
    pub vcpus: Vec<Vcpu>,
    pub cntvoff: u64,
    pub weight: u32,
    pub state: VmState,
}

impl Vm {
    /// A VM from `spec`, not yet in the VM table. Its stage-2 VMID is its
    /// id + 1 (VMID 0 is never used).
    pub fn new(spec: VmSpec) -> Vm {
        Vm {
            id: spec.id,
            name: spec.name,
            kind: spec.kind,
            vmid: spec.id.0 + 1,
            stage2_root: spec.stage2.root(),
            vtcr: spec.stage2.vtcr,
            stage2: Mutex::new(Some(spec.stage2)),
            ram: spec.ram,
            ram_live: crate::sync::RwLock::new(true),
            gicd: GicdWindow::new(&spec.regions, &spec.vgic),
            regions: spec.regions,
            forwarded: crate::sync::RwLock::new(Vec::new()),
            shadows: crate::ioshadow::IoShadows::new(),
            hw_ppis: spec.hw_ppis,
            pv_time: spec.pv_time,
            vgic: Mutex::new(spec.vgic),
            vcpus: spec.vcpus,
            cntvoff: spec.cntvoff,
            weight: spec.weight,
            state: AtomicU32::new(spec.state as u32),
            stop: Mutex::new(StopInfo { reason: StopReason::None, syndrome: 0, address: 0 }),
            console_line: Mutex::new(Vec::new()),
            warnings: AtomicU32::new(0),
            on_fault: AtomicU8::new(FaultPolicy::Abort as u8),
            log_limit: Mutex::new(LogLimit { bucket: TokenBucket::full(LOG_WRITE_BURST, 0), reported: 0 }),
            log_dropped: AtomicU64::new(0),
        }
    }
}

/// Warnings a VM may cause before the rest are suppressed: a guest must not
/// be able to flood the hypervisor's log.
pub const WARNING_BUDGET: u32 = 64;

/// `warn!` about a VM's misbehaviour, within its `WARNING_BUDGET`.
macro_rules! vm_warn {
    ($vm:expr, $($arg:tt)*) => {{
        let vm: &$crate::vm::Vm = $vm;
        let n = vm.warnings.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        if n < $crate::vm::WARNING_BUDGET {
            log::warn!($($arg)*);
        } else if n == $crate::vm::WARNING_BUDGET {
            vm.warnings_suppressed();
        }
    }};
}
pub(crate) use vm_warn;

impl Vm {
    /// `vm_warn!`'s last word about this VM. Out of line and cold: every use
    /// of the macro would otherwise carry this second log line.
    #[cold]
    #[inline(never)]
    pub fn warnings_suppressed(&self) {
        log::warn!("{}: further warnings about this VM are suppressed", self.name);
    }
}

impl Vm {
    pub fn state(&self) -> VmState {
        VmState::from_u32(self.state.load(Ordering::Acquire)).unwrap_or(VmState::Stopped)
    }

    pub fn set_state(&self, state: VmState) {
        self.state.store(state as u32, Ordering::Release);
    }

    /// Marks the VM stopped for `info` (its vCPUs stop at their next trap) and
    /// tells dom0 through the log. (The caller tells `runstate`.)
    pub fn stop(&self, info: StopInfo) {
        *self.stop.lock() = info;
        self.halt();
        log::info!("{} (VM {}) stopped: {:?}", self.name, self.id.0, info.reason);
    }

    /// Marks the VM stopped and makes every CPU running one of its vCPUs drop it.
    pub fn halt(&self) {
        self.set_state(VmState::Stopped);
        for v in &self.vcpus {
            // A blocked one may be parked (loaded while its CPU idles):
            // its CPU must look too.
            let s = v.sched.load(Ordering::Acquire);
            if (s == state::RUNNING || s == state::BLOCKED) && v.pcpu() != cpu::index() {
                gic::send_sgi(gic::SGI_KICK, v.pcpu());
            }
        }
    }

    /// Does its owner want it stopped, rather than aborted, when it touches
    /// an IPA with nothing behind it?
    pub fn stops_on_fault(&self) -> bool {
        self.on_fault.load(Ordering::Relaxed) == FaultPolicy::Stop as u8
    }

    /// May its vCPUs run now?
    #[inline]
    pub fn runnable(&self) -> bool {
        self.state.load(Ordering::Acquire) == VmState::Running as u32
    }

    /// Exits of all its vCPUs by reason.
    pub fn exits(&self) -> [u64; 8] {
        let mut total = [0u64; 8];
        for v in &self.vcpus {
            for (t, c) in total.iter_mut().zip(&v.exits) {
                *t += c.load(Ordering::Relaxed);
            }
        }
        total
    }

    pub fn ram_size(&self) -> u64 {
        self.ram.iter().map(|c| c.size).sum()
    }

    /// The emulated device at `ipa`, and the offset into it.
    pub fn emulated_region(&self, ipa: u64) -> Option<(EmulatedDevice, u64)> {
        self.regions.iter().find_map(|r| {
            let offset = ipa.checked_sub(r.base.as_u64())?;
            (offset < r.size).then_some((r.device, offset))
        })
    }

    /// The window dom0 emulates at `ipa`, if any.
    pub fn forwarded_at(&self, ipa: u64) -> Option<Forwarded> {
        self.forwarded.read().iter().find(|w| ipa >= w.base && ipa - w.base < w.size).copied()
    }

    /// Who answers an access at `ipa`: a window dom0 took (`IoMap`, which
    /// may cover the console UART, never a GIC frame), else a device the
    /// hypervisor emulates; `None` if neither.
    pub fn mmio_at(&self, ipa: u64) -> Option<Mmio> {
        match self.forwarded_at(ipa) {
            Some(window) => Some(Mmio::Forwarded(window)),
            None => self.emulated_region(ipa).map(|(device, offset)| Mmio::Emulated(device, offset)),
        }
    }

    /// Translates a buffer `[ipa, ipa+len)` that lies entirely inside one
    /// RAM chunk into the host physical address of its start.
    pub fn ram_buffer(&self, ipa: u64, len: u64) -> Option<PhysAddr> {
        let end = ipa.checked_add(len)?;
        self.ram.iter().find_map(|c| {
            let offset = c.offset_of(ipa)?;
            (end <= c.ipa.as_u64() + c.size).then(|| PhysAddr::new(c.pa.as_u64() + offset))
        })
    }

    /// The 64-bit word at `ipa` (8-byte aligned) of this VM's RAM; `None`
    /// outside it. A racy read of memory the guest may be changing, which
    /// is all a caller redoing the guest's own table walk needs.
    pub fn read_ram_u64(&self, ipa: u64) -> Option<u64> {
        if !ipa.is_multiple_of(8) {
            return None;
        }
        let pa = self.ram_buffer(ipa, 8)?;
        // SAFETY: `ram_buffer` checked the 8 aligned bytes are this VM's
        // RAM, which the hypervisor maps; a volatile read of plain memory
        // the guest may write concurrently yields some value it held.
        Some(unsafe { core::ptr::read_volatile(pa.as_u64() as *const u64) })
    }

    /// The host pieces of `[ipa, ipa+len)` of this VM's RAM, in order:
    /// `(PA, bytes)`. `None` unless the whole range is RAM.
    pub fn ram_pieces(&self, ipa: u64, len: u64) -> Option<Vec<(PhysAddr, u64)>> {
        let end = ipa.checked_add(len)?;
        let mut pieces = Vec::new();
        let mut at = ipa;
        while at < end {
            let (chunk, offset) = self.ram.iter().find_map(|c| Some((c, c.offset_of(at)?)))?;
            let n = (chunk.size - offset).min(end - at);
            pieces.push((PhysAddr::new(chunk.pa.as_u64() + offset), n));
            at += n;
        }
        Some(pieces)
    }

    /// Is `[ipa, ipa+len)` entirely in this VM's RAM (possibly across chunks)?
    pub fn contains_ram(&self, ipa: u64, len: u64) -> bool {
        let Some(end) = ipa.checked_add(len) else { return false };
        let mut at = ipa;
        while at < end {
            let Some(chunk) = self.ram.iter().find(|c| c.offset_of(at).is_some()) else {
                return false;
            };
            at = chunk.ipa.as_u64() + chunk.size;
        }
        true
    }

}

/// One entry of the VM table: a VM published as a raw `Arc` pointer
/// (`Arc::into_raw`; null while the id is free), and the readers between
/// loading that pointer and taking a reference of their own. Each on its
/// own cache line, so looking up one VM does not slow down another's.
#[repr(align(64))]
struct Slot {
    vm: AtomicPtr<Vm>,
    readers: AtomicU32,
}

/// The VM table, indexed by id, read without a lock: the trap, IO
/// forwarding and completion, interrupt and scheduling paths look VMs up
/// here by id (never by scanning), on every CPU at once. A reader counts
/// itself in its slot's `readers` before it loads the pointer and until it
/// holds its own reference; `remove` clears the pointer, then waits until
/// the slot has no reader, so the table's reference is never dropped
/// under one. Writers (create and destroy, from dom0) serialise on nothing
/// but the slot: `insert` claims a free slot with one compare-and-swap.
static VMS: [Slot; MAX_VMS as usize] = [const { Slot { vm: AtomicPtr::new(core::ptr::null_mut()), readers: AtomicU32::new(0) } }; MAX_VMS as usize];

/// The VM with id `id`, if there is one. Lock-free: a few atomic
/// operations on the VM's own slot and reference count.
pub fn get(id: VmId) -> Option<Arc<Vm>> {
    let slot = VMS.get(id.0 as usize)?;
    // SeqCst pairs with `remove`: either this load sees the pointer
    // cleared, or `remove` sees this reader and waits for it.
    slot.readers.fetch_add(1, Ordering::SeqCst);
    let ptr = slot.vm.load(Ordering::SeqCst);
    let vm = (!ptr.is_null()).then(|| {
        // SAFETY: `ptr` came from `Arc::into_raw` in `insert`, and the
        // table's own reference to it is alive: `remove` drops it only
        // once no reader is counted in this slot, and this one is.
        unsafe {
            Arc::increment_strong_count(ptr);
            Arc::from_raw(ptr)
        }
    });
    slot.readers.fetch_sub(1, Ordering::Release);
    vm
}

/// The guest VM a hypercall argument `id` names; `None` for dom0, an
/// absent id or one out of range.
pub fn guest(id: u64) -> Option<Arc<Vm>> {
    let id = u16::try_from(id).ok()?;
    get(VmId(id)).filter(|vm| vm.kind == VmKind::Guest)
}

/// Puts `vm` in the table under its id (which must be free).
pub fn insert(vm: Arc<Vm>) -> Result<(), Arc<Vm>> {
    let Some(slot) = VMS.get(vm.id.0 as usize) else { return Err(vm) };
    let ptr = Arc::into_raw(vm).cast_mut();
    match slot.vm.compare_exchange(core::ptr::null_mut(), ptr, Ordering::SeqCst, Ordering::Relaxed) {
        Ok(_) => Ok(()),
        // SAFETY: `ptr` is the reference `into_raw` just gave up, never
        // published: taking it back is its only use.
        Err(_) => Err(unsafe { Arc::from_raw(ptr) }),
    }
}

/// Takes VM `id` out of the table; once this returns no look-up can reach
/// it, and the caller holds the table's reference.
pub fn remove(id: VmId) -> Option<Arc<Vm>> {
    let slot = VMS.get(id.0 as usize)?;
    let ptr = slot.vm.swap(core::ptr::null_mut(), Ordering::SeqCst);
    if ptr.is_null() {
        return None;
    }
    // Readers that may have loaded `ptr` finish taking their reference
    // (a few instructions each; EL2 does not preempt them).
    while slot.readers.load(Ordering::SeqCst) != 0 {
        <crate::sync::Yield as spin::RelaxStrategy>::relax();
    }
    // SAFETY: the table's reference, published by `insert`; the swap made
    // this the only copy of the pointer and no reader still uses it.
    Some(unsafe { Arc::from_raw(ptr) })
}

/// A free VM id (1.. for guests). Two creates may both see the same one:
/// `insert` lets only one of them have it.
pub fn free_id() -> Option<VmId> {
    (1..MAX_VMS).find(|&i| VMS[i as usize].vm.load(Ordering::Acquire).is_null()).map(VmId)
}

/// Ids of guests (not dom0) that exist.
pub fn guest_ids() -> Vec<VmId> {
    (1..MAX_VMS).map(VmId).filter(|&id| get(id).is_some_and(|vm| vm.kind == VmKind::Guest)).collect()
}

/// Test support: empties the VM table.
#[cfg(any(test, fuzzing))]
pub fn clear_for_test() {
    for id in 0..MAX_VMS {
        drop(remove(VmId(id)));
    }
}
