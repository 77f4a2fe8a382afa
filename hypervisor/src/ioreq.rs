//! IO requests: guest MMIO forwarded to dom0. The hypervisor writes an IO
//! request into
//! the page dom0 gave it (`hv_abi::ioreq`), blocks the vCPU and raises
//! `IO_EVENT_INTID` on dom0's vCPU 0; dom0 answers in the completion ring and
//! calls `IoComplete`; the vCPU resumes with the value (or an abort).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hv_abi::hypercall::{Error, IO_EVENT_INTID};
use hv_abi::ioreq::{
    completion_slot_offset, request_slot_offset, Direction, WAITING_ELSEWHERE, IoCompletion, IoRequest, IoStatus, RingIndices, CPL_CONS_OFFSET,
    CPL_HEADER_OFFSET, CPL_PROD_OFFSET, IO_PAGE_SIZE, IO_RING_SLOTS, REQ_CONS_OFFSET, REQ_HEADER_OFFSET, REQ_POLLING_OFFSET, CPL_POLLING_OFFSET,
    REQ_PROD_OFFSET,
};
use crate::sync::Mutex;

use crate::addr::PhysAddr;
use crate::arch::{cpu, TrapFrame};
use crate::esr::DataAbort;
use crate::interrupts;
use crate::sched::{self, Next};
use crate::vm::{self, IoAnswer, IoWait, PendingIo, Vcpu, Vm, VmId};

/// The request/completion page and the requests waiting for an answer.
struct IoRings {
    page: PhysAddr,
    req: RingIndices,
    cpl: RingIndices,
    next_seq: u64,
    /// Every request not yet completed.
    waiting: Vec<Waiter>,
}

/// A vCPU waiting for the answer to request `seq`: vCPU `vcpu` of VM `vm`,
/// the instance `instance` of it (`Vm::instance`), not a later VM that got
/// the same id.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    seq: u64,
    vm: VmId,
    instance: u64,
    vcpu: usize,
}

/// Completions that reached no waiting vCPU: their request's VM was
/// destroyed (its waiters purged) or dom0 answered a request twice or one
/// it never had. Dropped, counted here (`stale_completions`).
static STALE: AtomicU64 = AtomicU64::new(0);

/// How many completions were dropped because nobody waited for them.
pub fn stale_completions() -> u64 {
    STALE.load(Ordering::Relaxed)
}

/// Counts a dropped completion; says so at the 1st, 2nd, 4th, 8th...
fn drop_stale(seq: u64) {
    let n = STALE.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        log::info!("IO completion {seq} answers no waiting request (its VM was destroyed?): dropped ({n} so far)");
    }
}

/// VM `vm` is being destroyed (none of its vCPUs runs): its requests that
/// dom0 has not answered wait no more; their answers, if they come, are
/// dropped and counted. Returns how many there were.
pub fn forget_vm(vm: &Vm) -> usize {
    let mut guard = RINGS.lock();
    let Some(port) = guard.as_mut() else { return 0 };
    let before = port.waiting.len();
    port.waiting.retain(|w| w.instance != vm.instance);
    before - port.waiting.len()
}

static RINGS: Mutex<Option<IoRings>> = Mutex::new(None);

/// Why an access cannot go to dom0 (the caller injects an abort).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unforwardable {
    /// No syndrome (ISV = 0): the access cannot be described to dom0.
    NoSyndrome,
    /// Dom0 has not set up IO forwarding.
    NoIoPage,
    /// Dom0's request ring indices are corrupt.
    CorruptRing,
}

impl IoRings {
    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: `page` is a page of dom0's RAM (checked in `setup`),
        // mapped at EL2; offsets are the ABI's 4-byte-aligned header fields.
        unsafe { &*((self.page.as_u64() as usize + offset) as *const AtomicU32) }
    }

    fn bytes_at(&self, offset: usize, len: usize) -> *mut u8 {
        debug_assert!(offset + len <= IO_PAGE_SIZE);
        (self.page.as_u64() as usize + offset) as *mut u8
    }
}

/// A 32-bit header word (`*_OFFSET`) of the IO page at `page`.
fn page_word(page: PhysAddr, offset: usize) -> &'static AtomicU32 {
    debug_assert!(offset.is_multiple_of(4) && offset < IO_PAGE_SIZE);
    // SAFETY: `page` is the IO page, a page of dom0's RAM mapped at EL2 for
    // as long as the hypervisor runs (IoSetup is once, never undone); the
    // offsets are 4-byte-aligned header fields of the ABI.
    unsafe { &*((page.as_u64() as usize + offset) as *const AtomicU32) }
}

/// `IoSetup`: dom0 gives the hypervisor a page for the rings.
pub fn setup(dom0: &Vm, ipa: u64) -> Result<u64, Error> {
    if !ipa.is_multiple_of(IO_PAGE_SIZE as u64) {
        return Err(Error::InvalidParameter);
    }
    let page = dom0.ram_buffer(ipa, IO_PAGE_SIZE as u64).ok_or(Error::BadAddress)?;
    let mut port = RINGS.lock();
    if port.is_some() {
        return Err(Error::Busy);
    }
    // SAFETY: a page of dom0's RAM, mapped at EL2; dom0 is in this hypercall.
    unsafe { core::ptr::write_bytes(page.as_u64() as *mut u8, 0, IO_PAGE_SIZE) };
    let new = IoRings {
        page,
        req: RingIndices::new(IO_RING_SLOTS).map_err(|_| Error::InvalidParameter)?,
        cpl: RingIndices::new(IO_RING_SLOTS).map_err(|_| Error::InvalidParameter)?,
        next_seq: 1,
        waiting: Vec::new(),
    };
    new.u32_at(REQ_HEADER_OFFSET + 4).store(IO_RING_SLOTS, Ordering::Release);
    new.u32_at(CPL_HEADER_OFFSET + 4).store(IO_RING_SLOTS, Ordering::Release);
    *port = Some(new);
    log::info!("IO forwarding to dom0 set up, page {page}");
    Ok(0)
}

/// Forwards the access described by `frame` (a data abort at `ipa` in a
/// window dom0 emulates). A write to a window with posted writes goes into
/// the ring and the vCPU steps over it at once (`Resume`); anything else
/// waits until dom0 answers: briefly here, if dom0 runs elsewhere, else
/// the vCPU gives its CPU away (`Leave`). A full ring lets dom0 run first
/// and the guest repeats the access (`Yield`).
pub fn forward(vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame, ipa: u64, abort: DataAbort, post_writes: bool) -> Result<Next, Unforwardable> {
    let DataAbort::Emulatable { size, register, write, .. } = abort else { return Err(Unforwardable::NoSyndrome) };
    let data = if write && register != 31 { frame.x[register as usize] & size.mask() } else { 0 };
    let dir = if write { Direction::Write } else { Direction::Read };
    let posted = write && post_writes;
    // Signal a dom0 vCPU on another physical CPU if there is one: it can
    // answer while this CPU waits.
    let me = cpu::index();
    let dom0 = vm::get(VmId(0));
    let target = dom0.as_ref().and_then(|d| d.vcpus.iter().position(|v| v.pcpu() != me)).unwrap_or(0);
    let answerer_elsewhere = dom0.as_ref().and_then(|d| d.vcpus.get(target)).is_some_and(|v| v.pcpu() != me);
    let mut guard = RINGS.lock();
    let port = guard.as_mut().ok_or(Unforwardable::NoIoPage)?;
    if port.req.observe_cons(port.u32_at(REQ_CONS_OFFSET).load(Ordering::Acquire)).is_err() {
        log::warn!("dom0's IO request ring is corrupt; guest access aborted");
        return Err(Unforwardable::CorruptRing);
    }
    let Some(slot) = port.req.producer_slot() else {
        // Ring full: let dom0 run; the guest repeats the access.
        return Ok(Next::Yield);
    };
    let seq = port.next_seq;
    port.next_seq += 1;
    let mut request = if posted {
        IoRequest::posted(seq, vm.id.0, vcpu.index as u16, size.bytes() as u8, ipa, data)
    } else {
        IoRequest::new(seq, vm.id.0, vcpu.index as u16, dir, size.bytes() as u8, ipa, data)
    };
    if !posted && answerer_elsewhere {
        request.flags |= WAITING_ELSEWHERE;
    }
    let bytes = request.to_bytes();
    // SAFETY: a request slot inside the shared page; dom0 reads it only after
    // the release store of `prod` below.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), port.bytes_at(request_slot_offset(slot), bytes.len()), bytes.len()) };
    if !posted {
        port.waiting.push(Waiter { seq, vm: vm.id, instance: vm.instance, vcpu: vcpu.index });
        // Ready for the answer before dom0 can see the request; the vCPU
        // stays RUNNING while it waits here (see below).
        *vcpu.io.lock() = IoWait { pending: Some(PendingIo { abort, register, write }), answer: None };
    }
    let prod = port.req.produced();
    port.u32_at(REQ_PROD_OFFSET).store(prod, Ordering::Release);
    let polling = page_word(port.page, REQ_POLLING_OFFSET);
    drop(guard);

    // Dom0 polling the ring sees the request without a signal (see
    // `RingHeader::polling` for why the barrier makes this safe).
    core::sync::atomic::fence(Ordering::SeqCst);
    let polled = polling.load(Ordering::Relaxed) != 0;
    if let Some(dom0) = dom0.filter(|_| !polled) {
        interrupts::with_effects(&dom0, |fx| {
            let _ = dom0.vgic.lock().pulse(IO_EVENT_INTID, target, fx);
        });
    }
    if posted {
        frame.elr += 4;
        return Ok(Next::Resume);
    }
    if answerer_elsewhere && wait_for_answer(vcpu, frame) {
        return Ok(Next::Resume);
    }
    // Give the CPU away until dom0 answers. An answer that came after the
    // last look found the vCPU RUNNING and did not queue it: look again
    // once it is marked waiting.
    vcpu.sched.store(sched::state::IO_WAIT, Ordering::Release);
    if vcpu.io.lock().answer.is_some()
        && vcpu.sched.compare_exchange(sched::state::IO_WAIT, sched::state::RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    {
        finish(vcpu, frame);
        return Ok(Next::Resume);
    }
    Ok(Next::Leave)
}

/// How long a vCPU waits at EL2 for dom0 (on another CPU) to answer before
/// it gives its CPU away: about two round trips' worth.
const SPIN_MICROS: u64 = 20;

/// Waits (at most `SPIN_MICROS`) for the answer to the vCPU's forwarded
/// access, taking dom0's completions as they come; applies it and returns
/// `true` if it came.
fn wait_for_answer(vcpu: &Vcpu, frame: &mut TrapFrame) -> bool {
    let Some(page) = RINGS.lock().as_ref().map(|p| p.page) else { return false };
    let polling = page_word(page, CPL_POLLING_OFFSET);
    // Dom0 may skip IoComplete while we take completions ourselves.
    polling.fetch_add(1, Ordering::SeqCst);
    let deadline = cpu::counter() + cpu::counter_frequency() * SPIN_MICROS / 1_000_000;
    let answered = loop {
        if vcpu.io.lock().answer.is_some() {
            break true;
        }
        if completions_waiting() {
            let _ = complete();
            continue;
        }
        if cpu::counter() >= deadline {
            break false;
        }
        <crate::sync::Yield as spin::RelaxStrategy>::relax();
    };
    polling.fetch_sub(1, Ordering::SeqCst);
    // A completion dom0 wrote while it saw us polling, without IoComplete.
    core::sync::atomic::fence(Ordering::SeqCst);
    if completions_waiting() {
        let _ = complete();
    }
    if answered || vcpu.io.lock().answer.is_some() {
        finish(vcpu, frame);
        return true;
    }
    false
}

/// Whether dom0 has put completions in the ring that nobody took yet.
fn completions_waiting() -> bool {
    let guard = RINGS.lock();
    guard.as_ref().is_some_and(|port| port.u32_at(CPL_PROD_OFFSET).load(Ordering::Acquire) != port.cpl.cons())
}

/// Whether dom0 has requests it has not taken yet.
pub fn requests_pending() -> bool {
    let guard = RINGS.lock();
    guard.as_ref().is_some_and(|port| port.u32_at(REQ_CONS_OFFSET).load(Ordering::Acquire) != port.req.prod())
}

/// `IoComplete`: takes dom0's completions and resumes their vCPUs.
pub fn complete() -> Result<u64, Error> {
    let mut taken = 0;
    // One completion at a time (no big buffer on the stack to clear: this
    // is on the path of every forwarded read).
    loop {
        let answer = {
            let mut guard = RINGS.lock();
            let port = guard.as_mut().ok_or(Error::NotSupported)?;
            port.cpl.observe_prod(port.u32_at(CPL_PROD_OFFSET).load(Ordering::Acquire)).map_err(|_| Error::InvalidParameter)?;
            let Some(slot) = port.cpl.consumer_slot() else { break };
            let mut bytes = [0u8; IoCompletion::SIZE];
            // SAFETY: a completion slot of the shared page, published by
            // dom0's release store of the completion `prod`.
            unsafe { core::ptr::copy_nonoverlapping(port.bytes_at(completion_slot_offset(slot), bytes.len()), bytes.as_mut_ptr(), bytes.len()) };
            let c = IoCompletion::from_bytes(&bytes);
            let cons = port.cpl.consumed();
            port.u32_at(CPL_CONS_OFFSET).store(cons, Ordering::Release);
            match port.waiting.iter().position(|w| w.seq == c.seq) {
                Some(i) => Ok((port.waiting.swap_remove(i), IoAnswer { status: IoStatus::from_u32(c.status), data: c.data })),
                None => Err(c.seq),
            }
        };
        let (waiter, answer) = match answer {
            Ok(found) => found,
            Err(seq) => {
                drop_stale(seq);
                continue;
            }
        };
        taken += 1;
        // The instance check closes the window between taking the waiter
        // and this look-up, in which the VM could go and another come.
        let Some(vm) = vm::get(waiter.vm).filter(|vm| vm.instance == waiter.instance) else {
            drop_stale(waiter.seq);
            continue;
        };
        let Some(vcpu) = vm.vcpus.get(waiter.vcpu) else { continue };
        vcpu.io.lock().answer = Some(answer);
        sched::wake_io(&vm, waiter.vcpu);
    }
    Ok(taken)
}

/// On the vCPU's own CPU before it runs again: finish its forwarded access
/// (set the loaded register and step over the instruction, or abort).
pub fn finish(vcpu: &Vcpu, frame: &mut TrapFrame) {
    let (pending, answer) = {
        let mut io = vcpu.io.lock();
        if io.answer.is_none() {
            return;
        }
        (io.pending.take(), io.answer.take())
    };
    let (Some(p), Some(answer)) = (pending, answer) else { return };
    match answer.status {
        IoStatus::Ok => {
            if !p.write && p.register != 31 {
                frame.x[p.register as usize] = p.abort.load_value(answer.data);
            }
            frame.elr += 4;
        }
        _ => crate::arch::abort_access(frame),
    }
}


/// Test support: no IO page.
#[cfg(any(test, fuzzing))]
pub fn reset_for_test() {
    *RINGS.lock() = None;
}
