//! IO forwarding, dom0's side: the page shared with the hypervisor
//! (`hv_abi::ioreq::IoPage`), the IO event interrupt that drains its
//! request ring into the device models (`backend::Backends`), and the
//! completion ring back.
//!
//! `init` (boot CPU, after the GIC) makes `IoSetup` with a static page of
//! dom0's RAM (identity mapped, so its address is its IPA). If the
//! hypervisor says `NotSupported` (or anything else goes wrong) forwarding
//! stays off and nothing else here makes a hypercall.
//!
//! The hypervisor signals the IO event on any of dom0's CPUs (one other
//! than the requesting guest's when it can), so every CPU enables it.
//! After a request from a vCPU waiting on another CPU the handler keeps
//! polling the ring for `POLL_MICROS` (and says so in the ring's `polling`
//! word, so the hypervisor does not signal it meanwhile).
//!
//! Locking: the ring state and the device models live in one spin lock
//! taken by the interrupt handler (any CPU, IRQs masked) and by the shell
//! (`attach`, `stats`) with IRQs masked, so neither can spin on the other
//! on the same CPU. The handler never prints (the console lock could be
//! held by the code it interrupted); problems are counted for `iostat`.

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use hv_abi::hypercall::{Error, IrqAction, IO_EVENT_INTID, MAX_COPY};
use hv_abi::ioreq::{
    completion_slot_offset, request_slot_offset, IoCompletion, IoRequest, RingIndices, CPL_CONS_OFFSET,
    CPL_HEADER_OFFSET, CPL_PROD_OFFSET, IO_PAGE_SIZE, IO_RING_SLOTS, REQ_CONS_OFFSET, REQ_HEADER_OFFSET,
    REQ_POLLING_OFFSET, REQ_PROD_OFFSET, CPL_POLLING_OFFSET,
};
use spin::Mutex;

use crate::arch::aarch64::{cpu, gic, hypercall};
use crate::backend::{Backends, Hyp, IoStats, SharedDisk, VirtioSpec};
use crate::drivers::virtio_blk::Disk;
use crate::backlog::Backlog;
use crate::guestwin::{self, Translate, Window, Windows};
use hv_virtio::block::BackendError;

/// Offset of `RingHeader::cap` within a header.
const CAP_IN_HEADER: usize = 4;
/// How long the IO event handler keeps looking for more requests after the
/// ring ran empty.
const POLL_MICROS: u64 = 20;
/// The longest the IO event handler keeps the CPU: a guest that makes
/// requests back to back (a console flood, a disk stress) would otherwise
/// keep it polling for as long as it goes on, and the code it interrupted
/// (the shell, which also gives busy devices their turns) would not run.
/// After this it stops polling; requests that come later are signalled
/// again, so none waits, but the interrupted code runs in between.
pub const HANDLER_MAX_MICROS: u64 = 1000;

/// The shared page: dom0 RAM the hypervisor writes requests into.
#[repr(C, align(4096))]
struct SharedPage(UnsafeCell<[u8; IO_PAGE_SIZE]>);

// SAFETY: every access to the page's bytes after `IoSetup` goes through
// atomics (`word32`/`word64`); before it, only the hypervisor touches it.
unsafe impl Sync for SharedPage {}

const _: () = assert!(core::mem::size_of::<SharedPage>() == IO_PAGE_SIZE);

static PAGE: SharedPage = SharedPage(UnsafeCell::new([0; IO_PAGE_SIZE]));

fn page_addr() -> usize {
    PAGE.0.get() as usize
}

/// The 32-bit word at `offset` of the page, as an atomic.
fn word32(offset: usize) -> &'static AtomicU32 {
    assert!(offset.is_multiple_of(4) && offset + 4 <= IO_PAGE_SIZE);
    // SAFETY: the address is inside the static page (checked above), 4-byte
    // aligned (the page is 4096-aligned and `offset` a multiple of 4), and
    // valid for the program's lifetime. The page lives in an `UnsafeCell`,
    // and dom0 only ever accesses it through atomics, so creating shared
    // atomic views of it is sound; the hypervisor's concurrent accesses
    // follow the same protocol from outside the Rust abstract machine.
    unsafe { &*((page_addr() + offset) as *const AtomicU32) }
}

/// The 64-bit word at `offset` of the page, as an atomic.
fn word64(offset: usize) -> &'static AtomicU64 {
    assert!(offset.is_multiple_of(8) && offset + 8 <= IO_PAGE_SIZE);
    // SAFETY: as `word32`, with 8-byte alignment.
    unsafe { &*((page_addr() + offset) as *const AtomicU64) }
}

/// Copies request slot `slot` out of the page (relaxed: the caller's
/// acquire load of `prod` orders these after the hypervisor's writes).
fn read_request(slot: usize) -> IoRequest {
    let base = request_slot_offset(slot);
    IoRequest::from_words(core::array::from_fn(|i| u64::from_le(word64(base + i * 8).load(Ordering::Relaxed))))
}

/// Writes completion slot `slot` (the caller then release-stores `prod`).
fn write_completion(slot: usize, c: &IoCompletion) {
    let base = completion_slot_offset(slot);
    for (i, w) in c.to_words().into_iter().enumerate() {
        word64(base + i * 8).store(w.to_le(), Ordering::Relaxed);
    }
}

struct Port {
    /// Dom0 consumes requests, produces completions.
    req: RingIndices,
    cpl: RingIndices,
    backend: Backends,
    /// Guests' RAM as mapped into dom0 (`GuestMap`).
    windows: Windows,
    /// Completions waiting for room in the completion ring.
    backlog: Backlog,
}

/// Backends' requests to the hypervisor, as hypercalls, and their access
/// to guests' RAM: through the VM's window when it has one, else by
/// `VmCopy`.
struct Hypercalls<'a, W: Translate = Windows>(&'a W);

impl<W: Translate> Hyp for Hypercalls<'_, W> {
    fn set_irq(&mut self, vm: u16, intid: u32, level: bool) {
        irq_line(vm, intid, if level { IrqAction::Raise } else { IrqAction::Lower });
    }

    fn pulse_irq(&mut self, vm: u16, intid: u32) {
        irq_line(vm, intid, IrqAction::Pulse);
    }

    // Through the window: `translate` checked the whole range is inside it,
    // and `Windows` lives under the port's lock with the backends, so the
    // window cannot go while we copy (`detach_memory` takes that lock
    // before `GuestUnmap` or `VmDestroy`). Without one: one VmCopy each, so
    // that an access the hypervisor refuses is not partly done (the
    // `GuestMemory` contract); longer ones are refused (the virtio devices
    // never copy more than 64 KiB at once). Buffers are dom0 memory,
    // identity mapped: their addresses are IPAs.
    fn read_guest(&self, vm: u16, gpa: u64, buf: &mut [u8]) -> Result<(), ()> {
        if let Some(at) = self.0.translate(vm, gpa, buf.len()) {
            // SAFETY: `[at, at + len)` lies in a window the hypervisor
            // mapped for this VM (Normal memory, readable) and that stays
            // mapped while the port lock is held (see above).
            unsafe { crate::wincopy::copy_from_window(at as *const u8, buf) };
            return Ok(());
        }
        if buf.len() as u64 > MAX_COPY {
            return Err(());
        }
        CALLS_COPY.fetch_add(1, Ordering::Relaxed);
        hypercall::vm_copy_from(u32::from(vm), gpa, buf).map_err(drop)
    }

    fn write_guest(&mut self, vm: u16, gpa: u64, data: &[u8]) -> Result<(), ()> {
        if let Some(at) = self.0.translate(vm, gpa, data.len()) {
            // SAFETY: as in `read_guest`; the window is writable.
            unsafe { crate::wincopy::copy_to_window(data, at as *mut u8) };
            return Ok(());
        }
        if data.len() as u64 > MAX_COPY {
            return Err(());
        }
        CALLS_COPY.fetch_add(1, Ordering::Relaxed);
        hypercall::vm_copy_to(u32::from(vm), gpa, data).map_err(drop)
    }

    fn fence(&self) {
        core::sync::atomic::fence(Ordering::SeqCst);
    }

    fn publish(&mut self, vm: u16, addr: u64, value: Option<u32>, seq: u64, keep: u64) -> bool {
        CALLS_SHADOW.fetch_add(1, Ordering::Relaxed);
        match hypercall::io_shadow(u32::from(vm), addr, value, seq, keep) {
            Ok(()) => true,
            // A write not handled yet: published again once it is.
            Err(Error::Busy) => false,
            Err(e) => {
                // A hypervisor without the call (ABI before 1.3), or a
                // VM already gone: reads keep coming as requests.
                log::debug!("IoShadow for VM {vm} at {addr:#x}: {e:?}");
                false
            }
        }
    }
}

/// `IrqLine`, counted for `iostat`.
fn irq_line(vm: u16, intid: u32, action: IrqAction) {
    CALLS_IRQ.fetch_add(1, Ordering::Relaxed);
    if hypercall::irq_line(u32::from(vm), intid, action).is_err() {
        IRQ_FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The window area is free in this machine (checked in `init`).
static WINDOWS_OK: AtomicBool = AtomicBool::new(false);

static ON: AtomicBool = AtomicBool::new(false);
static PORT: Mutex<Option<Port>> = Mutex::new(None);
/// The hypervisor wrote impossible ring indices: forwarding stopped.
static CORRUPT: AtomicBool = AtomicBool::new(false);
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// IO events whose handler stopped at `HANDLER_MAX_MICROS` with the guests
/// still making requests.
static LONG_EVENTS: AtomicU64 = AtomicU64::new(0);
/// `IrqLine` calls the hypervisor refused.
static IRQ_FAILED: AtomicU64 = AtomicU64::new(0);
/// Hypercalls the backends made, by kind (`iostat`: the data path's cost).
static CALLS_COPY: AtomicU64 = AtomicU64::new(0);
static CALLS_IRQ: AtomicU64 = AtomicU64::new(0);
static CALLS_SHADOW: AtomicU64 = AtomicU64::new(0);
static CALLS_COMPLETE: AtomicU64 = AtomicU64::new(0);
/// Some guest console has output for the shell (set by the handler).
static OUTPUT: AtomicBool = AtomicBool::new(false);
/// Some virtio device ran out of budget (`poll_pending` has work).
static PENDING: AtomicBool = AtomicBool::new(false);

/// Whether IO forwarding is on (`IoSetup` succeeded and the interrupt is enabled).
pub fn enabled() -> bool {
    ON.load(Ordering::Acquire)
}

/// Sets up IO forwarding if the hypervisor supports it, and the area where
/// guests' RAM will appear (if the machine has nothing there). Boot CPU,
/// after the GIC, before the secondaries; only with `/hypervisor` in the
/// device tree `blob`.
pub fn init(blob: &[u8]) {
    match hypercall::io_setup(page_addr() as u64) {
        Ok(()) => {}
        Err(Error::NotSupported) => {
            log::info!("IO forwarding: not supported by the hypervisor");
            return;
        }
        Err(e) => {
            log::warn!("IO forwarding: IoSetup failed: {}", e.description());
            return;
        }
    }
    let ring = |header: usize, prod: usize, cons: usize| {
        let cap = word32(header + CAP_IN_HEADER).load(Ordering::Acquire);
        if cap != IO_RING_SLOTS {
            return Err("unexpected ring capacity");
        }
        RingIndices::with_counters(cap, word32(prod).load(Ordering::Acquire), word32(cons).load(Ordering::Acquire))
            .map_err(|_| "corrupt ring indices")
    };
    let rings = ring(REQ_HEADER_OFFSET, REQ_PROD_OFFSET, REQ_CONS_OFFSET)
        .and_then(|req| Ok((req, ring(CPL_HEADER_OFFSET, CPL_PROD_OFFSET, CPL_CONS_OFFSET)?)));
    let (req, cpl) = match rings {
        Ok(r) => r,
        Err(e) => {
            log::warn!("IO forwarding: the page IoSetup gave back is unusable ({e}): off");
            return;
        }
    };
    *PORT.lock() = Some(Port { req, cpl, backend: Backends::new(), windows: Windows::new(), backlog: Backlog::new() });
    // Bulk work: the console's receive interrupt goes first (see `gic`).
    if let Err(e) = gic::enable_bulk(IO_EVENT_INTID, false, on_io_event) {
        PORT.lock().take();
        log::warn!("IO forwarding: IO event interrupt {IO_EVENT_INTID}: {e}: off");
        return;
    }
    ON.store(true, Ordering::Release);
    let mut used: Vec<(u64, u64)> = Vec::new();
    crate::fdt_scan::for_each_memory(blob, |base, size| used.push((base, size)));
    used.extend(crate::fdt_scan::Tree::new(blob).devices().iter().filter_map(|d| Some((d.base?, d.size))));
    if guestwin::fits(&used) {
        crate::arch::aarch64::mmu::map_normal_gibs(guestwin::AREA_BASE, guestwin::AREA_SIZE);
        WINDOWS_OK.store(true, Ordering::Release);
    } else {
        log::warn!("IO forwarding: the machine has something at {:#x}: guests' RAM stays unmapped (VmCopy)", guestwin::AREA_BASE);
    }
    log::info!("IO forwarding: on (page at {:#x}, event INTID {IO_EVENT_INTID})", page_addr());
}

/// A secondary CPU: takes IO events too (the hypervisor signals the dom0
/// vCPU on another physical CPU than the requesting guest's, so that the
/// guest's CPU can wait for the answer without giving itself away).
pub fn init_secondary() {
    if enabled() {
        if let Err(e) = gic::enable_ppi_here(IO_EVENT_INTID, false) {
            log::warn!("IO forwarding: IO event interrupt on cpu{}: {e}", cpu::index());
        }
    }
}

/// Runs `f` on the port with IRQs masked (shell side). IRQs are unmasked
/// afterwards: the shell always runs with them unmasked.
fn with_port<R>(f: impl FnOnce(&mut Port) -> R) -> Option<R> {
    if !enabled() {
        return None;
    }
    cpu::mask_irqs();
    let r = PORT.lock().as_mut().map(f);
    cpu::unmask_irqs();
    r
}

/// VM `vm` got the test device's window with `IoMap`: give it a fresh one.
pub fn attach_test_device(vm: u32) {
    if let Ok(vm) = u16::try_from(vm) {
        with_port(|p| p.backend.attach_test_device(vm));
    }
}

/// VM `vm` got the UART's window: dom0 emulates its PL011 from now on.
pub fn attach_uart(vm: u32) {
    if let Ok(vm) = u16::try_from(vm) {
        with_port(|p| p.backend.attach_uart(vm));
    }
}

impl hv_virtio::BlockBackend for Disk {
    fn capacity_sectors(&self) -> u64 {
        Disk::capacity_sectors(self)
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        Disk::read(self, sector, buf).map_err(|_| BackendError)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BackendError> {
        Disk::write(self, sector, data).map_err(|_| BackendError)
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        Disk::flush(self).map_err(|_| BackendError)
    }

    fn execute(&mut self, ops: &mut [hv_virtio::BlockOp]) {
        Disk::execute(self, ops)
    }
}

/// Dom0's disk as guests' disks are cut from it, if it has one.
pub fn shared_disk() -> Option<&'static spin::Mutex<dyn SharedDisk>> {
    crate::drivers::disk::shared()
}

/// VM `vm` got the virtio window: its devices, in slot order.
pub fn attach_virtio(vm: u32, specs: Vec<VirtioSpec>) {
    if let Ok(vm) = u16::try_from(vm) {
        with_port(|p| p.backend.attach_virtio(vm, specs));
    }
}

/// Gives virtio devices with work left over their next turn (the event
/// loop's services call it at every pass).
pub fn poll_pending() {
    if WORKER_CPU.load(Ordering::Relaxed) == usize::MAX && DISK_WORK.load(Ordering::Acquire) {
        disk_turns();
    }
    if PENDING.load(Ordering::Acquire) {
        // Answers that waited for room in the completion ring go first,
        // then the requests left in the ring meanwhile (their events came
        // while dom0 took none).
        let waiting = with_port(|p| {
            if !p.backlog.is_empty() && !CORRUPT.load(Ordering::Relaxed) && drain(p).is_err() {
                CORRUPT.store(true, Ordering::Relaxed);
            }
            !p.backlog.is_empty()
        })
        .unwrap_or(false);
        let more = with_port(|p| p.backend.poll_pending(&mut Hypercalls(&p.windows))).unwrap_or(false) || waiting;
        PENDING.store(more, Ordering::Release);
        if with_port(|p| p.backend.output_pending()).unwrap_or(false) {
            OUTPUT.store(true, Ordering::Release);
        }
    }
}

/// Whether a guest console has output waiting (cheap: no lock).
pub fn output_pending() -> bool {
    OUTPUT.load(Ordering::Acquire)
}

/// Takes every guest console's waiting output, as (VM, bytes), to print
/// after the port's lock is released.
pub fn take_output() -> Vec<(u16, Vec<u8>)> {
    OUTPUT.store(false, Ordering::Release);
    let mut out = Vec::new();
    let more = with_port(|p| {
        p.backend.take_output(|vm, bytes| out.push((vm, bytes.to_vec())), &mut Hypercalls(&p.windows));
        p.backend.has_pending()
    });
    if more == Some(true) {
        // A virtio console stalled on a full buffer gets its turn.
        PENDING.store(true, Ordering::Release);
    }
    out
}

/// Typed bytes for VM `vm`'s emulated console; `false` if it has none.
pub fn console_input(vm: u16, bytes: &[u8]) -> bool {
    with_port(|p| p.backend.console_input(vm, bytes, &mut Hypercalls(&p.windows))).unwrap_or(false)
}

/// VM `vm` (just created, `ram` bytes of RAM) gets a window onto its RAM
/// for its backends (`GuestMap`). Without one (the hypervisor refuses, the
/// area is full or unusable) its backends use `VmCopy`.
pub fn attach_memory(vm: u32, ram: u64) -> Result<(), &'static str> {
    let id = u16::try_from(vm).map_err(|_| "VM id out of range")?;
    if !WINDOWS_OK.load(Ordering::Acquire) {
        return Err("no window area in this machine");
    }
    with_port(|p| {
        let base = p.windows.place(ram).ok_or("the window area is full")?;
        let gpa = hv_abi::hypercall::guest::RAM_BASE;
        hypercall::guest_map(vm, base, gpa, ram).map_err(|e| e.description())?;
        p.windows.insert(id, Window { base, gpa, size: ram });
        Ok(())
    })
    .unwrap_or(Err("IO forwarding is off"))
}

/// VM `vm` is about to be destroyed: its window goes first, under the
/// port's lock, so that no backend is using it when the hypervisor revokes
/// it; what its backends still do until `detach` goes through `VmCopy`,
/// which the hypervisor refuses once the VM is gone.
pub fn detach_memory(vm: u32) {
    let Ok(id) = u16::try_from(vm) else { return };
    // A disk of the VM out with the IO worker reads and writes its RAM
    // through the window: wait until it is back (a turn is bounded by the
    // disk's timeout; a stalled disk fails requests at once).
    let start = cpu::counter();
    let mut said = false;
    loop {
        let done = with_port(|p| {
            if p.backend.lent(id) {
                return false;
            }
            if let Some(w) = p.windows.remove(id) {
                let _ = hypercall::guest_unmap(vm, w.base);
            }
            true
        });
        if done != Some(false) {
            return;
        }
        if !said && cpu::counter().wrapping_sub(start) > cpu::counter_frequency() * 2 {
            said = true;
            log::warn!("VM {vm}: waiting for the IO worker to finish its disk turn before its RAM is unmapped");
        }
        core::hint::spin_loop();
    }
}

/// VM `vm` is destroyed.
pub fn detach(vm: u32) {
    detach_memory(vm);
    if let Ok(vm) = u16::try_from(vm) {
        with_port(|p| p.backend.detach(vm));
    }
}

/// What `iostat` prints.
pub struct Status {
    pub stats: IoStats,
    pub events: u64,
    /// Events whose handler gave the CPU back with requests still coming.
    pub long_events: u64,
    /// Completions that had to wait for room in the completion ring.
    pub delayed: u64,
    pub irq_failed: u64,
    pub corrupt: bool,
    /// Hypercalls the backends made: `VmCopy`, `IrqLine`, `IoComplete`,
    /// `IoShadow`.
    pub calls: [u64; 4],
}

pub fn status() -> Option<Status> {
    let stats = with_port(|p| p.backend.stats())?;
    Some(Status {
        stats,
        events: EVENTS.load(Ordering::Relaxed),
        long_events: LONG_EVENTS.load(Ordering::Relaxed),
        delayed: with_port(|p| p.backlog.delayed()).unwrap_or(0),
        irq_failed: IRQ_FAILED.load(Ordering::Relaxed),
        corrupt: CORRUPT.load(Ordering::Relaxed),
        calls: [&CALLS_COPY, &CALLS_IRQ, &CALLS_COMPLETE, &CALLS_SHADOW].map(|c| c.load(Ordering::Relaxed)),
    })
}

/// The IO event interrupt (CPU 0, IRQs masked).
fn on_io_event() {
    EVENTS.fetch_add(1, Ordering::Relaxed);
    let mut guard = PORT.lock();
    let Some(port) = guard.as_mut() else { return };
    if CORRUPT.load(Ordering::Relaxed) {
        return;
    }
    // Requests may arrive while we work without a new edge being noticed:
    // go round until a pass finds the request ring empty, then keep looking
    // for a short while (a guest that made one request often makes the
    // next at once: a console line, a stream of register reads).
    // Only worth it when the requester waits on another CPU (the
    // request says so): otherwise it may be waiting for this very CPU.
    let mut idle_since = cpu::counter();
    let window = cpu::counter_frequency() * POLL_MICROS / 1_000_000;
    let deadline = idle_since.saturating_add(cpu::counter_frequency() * HANDLER_MAX_MICROS / 1_000_000);
    let mut poll = false;
    loop {
        // Cheap look first: has the hypervisor produced anything new?
        let news = word32(REQ_PROD_OFFSET).load(Ordering::Acquire) != port.req.cons();
        match if news { drain(port) } else { Ok((0, false)) } {
            Ok((0, _)) if !poll => break,
            Ok((0, _)) => {}
            Ok((_, waiting_elsewhere)) => {
                if waiting_elsewhere && !poll {
                    // While we poll, the hypervisor need not signal us.
                    poll = true;
                    word32(REQ_POLLING_OFFSET).store(1, Ordering::Relaxed);
                    core::sync::atomic::fence(Ordering::SeqCst);
                }
                idle_since = cpu::counter();
            }
            Err(()) => {
                CORRUPT.store(true, Ordering::Relaxed);
                word32(REQ_POLLING_OFFSET).store(0, Ordering::Release);
                break;
            }
        }
        let now = cpu::counter();
        if now >= deadline {
            // Long enough: stop polling. A request published before the
            // hypervisor saw the flag cleared is in the ring without a
            // signal: take it now; any later one is signalled.
            if poll {
                word32(REQ_POLLING_OFFSET).store(0, Ordering::Relaxed);
                core::sync::atomic::fence(Ordering::SeqCst);
                if word32(REQ_PROD_OFFSET).load(Ordering::Acquire) != port.req.cons() && drain(port).is_err() {
                    CORRUPT.store(true, Ordering::Relaxed);
                }
            }
            LONG_EVENTS.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if now.wrapping_sub(idle_since) >= window {
            if !poll {
                break;
            }
            // Stop polling, then look once more: a request published
            // before the hypervisor saw the flag cleared was not signalled.
            word32(REQ_POLLING_OFFSET).store(0, Ordering::Relaxed);
            core::sync::atomic::fence(Ordering::SeqCst);
            if word32(REQ_PROD_OFFSET).load(Ordering::Acquire) == port.req.cons() {
                break;
            }
            poll = false;
            idle_since = cpu::counter();
            continue;
        }
        // Let the other CPUs run (under QEMU's single-threaded TCG this
        // hands over the host thread; on hardware it is a hint).
        // SAFETY: YIELD is a hint; it changes no register or memory.
        unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// One pass: takes every request waiting, answers them, hands the answers
/// back. Returns how many requests it took and whether one of them was
/// from a vCPU waiting on another CPU; `Err` if the hypervisor's indices
/// are impossible. While answers wait for room in the completion ring it
/// takes no request (back-pressure, see `backlog`).
fn drain(port: &mut Port) -> Result<(usize, bool), ()> {
    // Requests taken, and whether one came from a vCPU waiting elsewhere.
    let (mut taken, mut elsewhere) = (0, false);
    let mut answered = false;
    if !port.backlog.is_empty() {
        answered = flush_backlog(port)?;
        if !port.backlog.is_empty() {
            PENDING.store(true, Ordering::Release);
            return Ok((0, false));
        }
    }
    port.req.observe_prod(word32(REQ_PROD_OFFSET).load(Ordering::Acquire)).map_err(drop)?;
    while let Some(slot) = port.req.consumer_slot() {
        let req = read_request(slot);
        port.req.consumed();
        taken += 1;
        elsewhere |= req.waiting_elsewhere();
        // `None`: the request waits for its disk to come back from the IO
        // worker, which answers it then.
        let completion = port.backend.handle_or_defer(&req, &mut Hypercalls(&port.windows));
        // A posted write has nobody waiting: no completion. Answers go out
        // one by one, at once: a vCPU may be waiting for this one.
        if let Some(completion) = completion.filter(|_| !req.is_posted()) {
            answered = true;
            send_completion(port, completion)?;
            if !port.backlog.is_empty() {
                // The ring is full: take no more requests until it has room.
                PENDING.store(true, Ordering::Release);
                break;
            }
        }
    }
    if taken == 0 && !answered {
        return Ok((0, false));
    }
    if port.backend.output_pending() {
        OUTPUT.store(true, Ordering::Release);
    }
    if port.backend.has_pending() {
        PENDING.store(true, Ordering::Release);
    }
    if port.backend.disk_work_pending() {
        wake_worker();
    }
    word32(REQ_CONS_OFFSET).store(port.req.cons(), Ordering::Release);
    if answered {
        announce_completions();
    }
    Ok((taken, elsewhere))
}

/// Completions are in the ring: CPUs waiting at EL2 take them themselves
/// (and look once more when they stop), so `IoComplete` only when none is.
fn announce_completions() {
    core::sync::atomic::fence(Ordering::SeqCst);
    if word32(CPL_POLLING_OFFSET).load(Ordering::Relaxed) == 0 {
        io_complete();
    }
}

// ---- the IO worker: guests' disk turns, outside the IO event handler -------

/// The SGI that wakes the IO worker.
const SGI_WORK: u32 = 1;
/// The CPU the IO worker runs on (`usize::MAX`: none, dom0 has one CPU;
/// the event loop's services take the turns then).
static WORKER_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Some disk waits for a turn (set with the turn queued, under the lock).
static DISK_WORK: AtomicBool = AtomicBool::new(false);

/// Tells the IO worker there is a disk turn to take.
fn wake_worker() {
    DISK_WORK.store(true, Ordering::Release);
    let worker = WORKER_CPU.load(Ordering::Acquire);
    if worker == usize::MAX {
        // No worker: the event loop takes it (it wakes for this).
        PENDING.store(true, Ordering::Release);
    } else if worker != cpu::index() {
        let _ = gic::send_sgi(SGI_WORK, worker);
    }
}

/// Whether the event loop should stop waiting and run its services: guest
/// console output, or (with no worker CPU) a disk turn.
pub fn attention() -> bool {
    output_pending() || (WORKER_CPU.load(Ordering::Relaxed) == usize::MAX && DISK_WORK.load(Ordering::Acquire))
}

/// The IO worker's CPU (dom0's last): takes guests' disk turns as they
/// are queued, with IRQs unmasked, so the IO event handler, on any CPU,
/// goes on serving every other request meanwhile. Never returns.
pub fn run_worker() -> ! {
    if !enabled() {
        cpu::idle();
    }
    if let Err(e) = gic::enable_sgi_here(SGI_WORK, || {}) {
        log::warn!("IO worker: SGI {SGI_WORK}: {e}; disk turns run in the event loop");
        cpu::idle();
    }
    WORKER_CPU.store(cpu::index(), Ordering::Release);
    crate::drivers::virtio_blk::enable_interrupt();
    log::info!("IO worker: guests' disk IO on cpu{}", cpu::index());
    loop {
        cpu::wait_until(|| DISK_WORK.load(Ordering::Acquire));
        disk_turns();
    }
}

/// Takes every queued disk turn: lends the disk out of the backends,
/// serves it with the lock released (its VM's RAM through a copy of its
/// window, which `detach_memory` does not revoke while the disk is out),
/// gives it back and sends the answers to requests that waited for it.
fn disk_turns() {
    loop {
        DISK_WORK.store(false, Ordering::Release);
        let Some((mut turn, windows)) = with_port(|p| {
            let turn = p.backend.lend_disk()?;
            let windows = p.windows.only(turn.vm);
            Some((turn, windows))
        })
        .flatten() else {
            return;
        };
        turn.serve(&mut Hypercalls(&windows));
        let broken = with_port(|p| {
            let answers = p.backend.return_disk(turn, &mut Hypercalls(&p.windows));
            let answered = !answers.is_empty();
            for c in answers {
                if send_completion(p, c).is_err() {
                    return true;
                }
            }
            if p.backend.output_pending() {
                OUTPUT.store(true, Ordering::Release);
            }
            if !p.backlog.is_empty() {
                PENDING.store(true, Ordering::Release);
            }
            if answered {
                announce_completions();
            }
            false
        });
        if broken == Some(true) {
            CORRUPT.store(true, Ordering::Relaxed);
            return;
        }
    }
}


fn io_complete() {
    CALLS_COMPLETE.fetch_add(1, Ordering::Relaxed);
    let _ = hypercall::io_complete();
}

/// Puts one completion in the ring and publishes it; on a full ring, lets
/// the hypervisor take what is there first, once. `Ok(false)`: still full.
fn put_completion(cpl: &mut RingIndices, c: &IoCompletion) -> Result<bool, ()> {
    for attempt in 0..2 {
        cpl.observe_cons(word32(CPL_CONS_OFFSET).load(Ordering::Acquire)).map_err(drop)?;
        if let Some(slot) = cpl.producer_slot() {
            write_completion(slot, c);
            word32(CPL_PROD_OFFSET).store(cpl.produced(), Ordering::Release);
            return Ok(true);
        }
        if attempt == 0 {
            io_complete();
        }
    }
    Ok(false)
}

/// Sends `c` through the backlog: into the ring now, or later, in order.
fn send_completion(port: &mut Port, c: IoCompletion) -> Result<(), ()> {
    let mut broken = false;
    let Port { cpl, backlog, .. } = port;
    backlog.send(c, |c| put_completion(cpl, c).unwrap_or_else(|()| { broken = true; false }));
    if broken { Err(()) } else { Ok(()) }
}

/// Moves waiting completions into the ring while it has room; returns
/// whether any moved.
fn flush_backlog(port: &mut Port) -> Result<bool, ()> {
    let (mut broken, mut moved) = (false, false);
    let Port { cpl, backlog, .. } = port;
    backlog.flush(|c| match put_completion(cpl, c) {
        Ok(ok) => {
            moved |= ok;
            ok
        }
        Err(()) => {
            broken = true;
            false
        }
    });
    if broken { Err(()) } else { Ok(moved) }
}
