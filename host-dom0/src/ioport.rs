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
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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
use hv_virtio::block::BackendError;

/// Offset of `RingHeader::cap` within a header.
const CAP_IN_HEADER: usize = 4;
/// How long the IO event handler keeps looking for more requests after the
/// ring ran empty.
const POLL_MICROS: u64 = 20;
/// `IoComplete`s tried on a full completion ring before giving up on a batch.
const FULL_RETRIES: u32 = 4;

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
    let mut bytes = [0u8; IoRequest::SIZE];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&word64(base + i * 8).load(Ordering::Relaxed).to_le_bytes());
    }
    IoRequest::from_bytes(&bytes)
}

/// Writes completion slot `slot` (the caller then release-stores `prod`).
fn write_completion(slot: usize, c: &IoCompletion) {
    let base = completion_slot_offset(slot);
    for (i, chunk) in c.to_bytes().chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        word64(base + i * 8).store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
}

struct Port {
    /// Dom0 consumes requests, produces completions.
    req: RingIndices,
    cpl: RingIndices,
    backend: Backends,
}

/// Backends' requests to the hypervisor, as hypercalls.
struct Hypercalls;

impl Hyp for Hypercalls {
    fn set_irq(&mut self, vm: u16, intid: u32, level: bool) {
        let action = if level { IrqAction::Raise } else { IrqAction::Lower };
        if hypercall::irq_line(u32::from(vm), intid, action).is_err() {
            IRQ_FAILED.fetch_add(1, Ordering::Relaxed);
        }
    }

    // Buffers are dom0 memory, identity mapped: their addresses are IPAs.
    // One VmCopy each, so that an access the hypervisor refuses is not
    // partly done (the `GuestMemory` contract); longer ones are refused
    // (the virtio devices never copy more than 64 KiB at once).
    fn read_guest(&self, vm: u16, gpa: u64, buf: &mut [u8]) -> Result<(), ()> {
        if buf.len() as u64 > MAX_COPY {
            return Err(());
        }
        hypercall::vm_copy_from(u32::from(vm), gpa, buf).map_err(drop)
    }

    fn write_guest(&mut self, vm: u16, gpa: u64, data: &[u8]) -> Result<(), ()> {
        if data.len() as u64 > MAX_COPY {
            return Err(());
        }
        hypercall::vm_copy_to(u32::from(vm), gpa, data).map_err(drop)
    }

    fn fence(&self) {
        core::sync::atomic::fence(Ordering::SeqCst);
    }
}

static ON: AtomicBool = AtomicBool::new(false);
static PORT: Mutex<Option<Port>> = Mutex::new(None);
/// The hypervisor wrote impossible ring indices: forwarding stopped.
static CORRUPT: AtomicBool = AtomicBool::new(false);
static EVENTS: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// `IrqLine` calls the hypervisor refused.
static IRQ_FAILED: AtomicU64 = AtomicU64::new(0);
/// Some guest console has output for the shell (set by the handler).
static OUTPUT: AtomicBool = AtomicBool::new(false);
/// Some virtio device ran out of budget (`poll_pending` has work).
static PENDING: AtomicBool = AtomicBool::new(false);

/// Whether IO forwarding is on (`IoSetup` succeeded and the interrupt is enabled).
pub fn enabled() -> bool {
    ON.load(Ordering::Acquire)
}

/// Sets up IO forwarding if the hypervisor supports it. Boot CPU, after
/// the GIC; only with `/hypervisor` in the device tree.
pub fn init() {
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
    *PORT.lock() = Some(Port { req, cpl, backend: Backends::new() });
    if let Err(e) = gic::enable(IO_EVENT_INTID, false, on_io_event) {
        PORT.lock().take();
        log::warn!("IO forwarding: IO event interrupt {IO_EVENT_INTID}: {e}: off");
        return;
    }
    ON.store(true, Ordering::Release);
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

impl SharedDisk for Disk {
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

/// Gives virtio devices with work left over their next turn (the shell
/// calls it between inputs).
pub fn poll_pending() {
    if PENDING.load(Ordering::Acquire) {
        let more = with_port(|p| p.backend.poll_pending(&mut Hypercalls)).unwrap_or(false);
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
    with_port(|p| p.backend.take_output(|vm, bytes| out.push((vm, bytes.to_vec()))));
    out
}

/// Typed bytes for VM `vm`'s emulated console; `false` if it has none.
pub fn console_input(vm: u16, bytes: &[u8]) -> bool {
    with_port(|p| p.backend.console_input(vm, bytes, &mut Hypercalls)).unwrap_or(false)
}

/// VM `vm` is destroyed.
pub fn detach(vm: u32) {
    if let Ok(vm) = u16::try_from(vm) {
        with_port(|p| p.backend.detach(vm));
    }
}

/// What `iostat` prints.
pub struct Status {
    pub stats: IoStats,
    pub events: u64,
    pub dropped: u64,
    pub irq_failed: u64,
    pub corrupt: bool,
}

pub fn status() -> Option<Status> {
    let stats = with_port(|p| p.backend.stats())?;
    Some(Status {
        stats,
        events: EVENTS.load(Ordering::Relaxed),
        dropped: DROPPED.load(Ordering::Relaxed),
        irq_failed: IRQ_FAILED.load(Ordering::Relaxed),
        corrupt: CORRUPT.load(Ordering::Relaxed),
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
        if cpu::counter().wrapping_sub(idle_since) >= window {
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
/// are impossible.
fn drain(port: &mut Port) -> Result<(usize, bool), ()> {
    // Requests taken, and whether one came from a vCPU waiting elsewhere.
    let (mut taken, mut elsewhere) = (0, false);
    let mut answered = false;
    port.req.observe_prod(word32(REQ_PROD_OFFSET).load(Ordering::Acquire)).map_err(drop)?;
    while let Some(slot) = port.req.consumer_slot() {
        let req = read_request(slot);
        port.req.consumed();
        taken += 1;
        elsewhere |= req.waiting_elsewhere();
        let completion = port.backend.handle(&req, &mut Hypercalls);
        // A posted write has nobody waiting: no completion. Answers go out
        // one by one, at once: a vCPU may be waiting for this one.
        if !req.is_posted() {
            answered = true;
            publish_completion(port, &completion)?;
        }
    }
    if taken == 0 {
        return Ok((0, false));
    }
    if port.backend.output_pending() {
        OUTPUT.store(true, Ordering::Release);
    }
    if port.backend.has_pending() {
        PENDING.store(true, Ordering::Release);
    }
    word32(REQ_CONS_OFFSET).store(port.req.cons(), Ordering::Release);
    if answered {
        // CPUs waiting at EL2 take completions themselves (and look once
        // more when they stop): IoComplete only when none is.
        core::sync::atomic::fence(Ordering::SeqCst);
        if word32(CPL_POLLING_OFFSET).load(Ordering::Relaxed) == 0 {
            let _ = hypercall::io_complete();
        }
    }
    Ok((taken, elsewhere))
}

/// Puts one completion in the ring and publishes it; on a full ring, lets
/// the hypervisor take what is there first (a few times, then the
/// completion is dropped and counted: its vCPU stays blocked).
fn publish_completion(port: &mut Port, c: &IoCompletion) -> Result<(), ()> {
    for _ in 0..=FULL_RETRIES {
        port.cpl.observe_cons(word32(CPL_CONS_OFFSET).load(Ordering::Acquire)).map_err(drop)?;
        if let Some(slot) = port.cpl.producer_slot() {
            write_completion(slot, c);
            word32(CPL_PROD_OFFSET).store(port.cpl.produced(), Ordering::Release);
            return Ok(());
        }
        let _ = hypercall::io_complete();
    }
    DROPPED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
