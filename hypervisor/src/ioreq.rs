//! IO requests: guest MMIO forwarded to dom0. The hypervisor writes an IO
//! request into the page dom0 gave it (`hv_abi::ioreq`), signals a dom0
//! vCPU (`IO_EVENT_INTID`) unless dom0 polls the ring, and the vCPU waits;
//! dom0 answers in the completion ring and calls `IoComplete`; the vCPU
//! resumes with the value (or an abort).
//!
//! Nothing here is a list of waiters: a request's `seq` carries the
//! requesting VM and vCPU (`seq_for`), and the vCPU itself holds the `seq`
//! it waits for (`PendingIo::seq`), so a completion goes straight to its
//! vCPU. The page is published once (`PAGE`) and read without a lock. The
//! two rings are shared by every VM, because dom0 gives one page: the
//! producers of requests take turns on the request ring (`REQUESTS`), the
//! takers of completions on the completion ring (`COMPLETIONS`), each for
//! a few dozen instructions; no other lock is shared between VMs.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use hv_abi::hypercall::{Error, IO_EVENT_INTID, MAX_VCPUS, MAX_VMS};
use hv_abi::ioreq::{
    completion_slot_offset, request_slot_offset, Direction, IoCompletion, IoRequest, IoStatus, RingIndices, CPL_CONS_OFFSET, CPL_HEADER_OFFSET,
    CPL_POLLING_OFFSET, CPL_PROD_OFFSET, IO_PAGE_SIZE, IO_RING_SLOTS, REQ_CONS_OFFSET, REQ_HEADER_OFFSET, REQ_POLLING_OFFSET, REQ_PROD_OFFSET,
    WAITING_ELSEWHERE,
};
use crate::sync::Mutex;

use crate::addr::PhysAddr;
use crate::arch::{cpu, TrapFrame};
use crate::esr::DataAbort;
use crate::interrupts;
use crate::sched::{self, Next};
use crate::vm::{self, IoAnswer, IoWait, PendingIo, Vcpu, Vm, VmId};

/// The IO page's address (dom0 RAM, mapped at EL2) once `IoSetup` gave
/// it; 0 before. Set once, never changed (but by `reset_for_test`).
static PAGE: AtomicU64 = AtomicU64::new(0);

/// An empty ring of the ABI's size.
const EMPTY_RING: RingIndices = match RingIndices::new(IO_RING_SLOTS) {
    Ok(ring) => ring,
    Err(_) => panic!("IO_RING_SLOTS is a power of two"),
};

/// The producer side of the request ring, held from the load of dom0's
/// `cons` to the store of `prod`.
struct Requests {
    ring: RingIndices,
    /// The count in the next request's `seq` (from 1, so no `seq` is 0).
    count: u64,
}

static REQUESTS: Mutex<Requests> = Mutex::new(Requests { ring: EMPTY_RING, count: 1 });
/// The consumer side of the completion ring, held while one completion is
/// taken out of it.
static COMPLETIONS: Mutex<RingIndices> = Mutex::new(EMPTY_RING);

/// Low bits of a request's `seq`: who waits for it, VM id × `MAX_VCPUS` +
/// vCPU index. The bits above count requests, so a `seq` is unique for
/// the page's lifetime: an answer meant for a VM that was destroyed never
/// matches what a later VM with the same id waits for.
const WAITER_BITS: u32 = 9;
const _: () = assert!(MAX_VMS as u32 * MAX_VCPUS <= 1 << WAITER_BITS);

/// The `seq` of the `count`th request, made by vCPU `vcpu` of VM `vm`.
fn seq_for(count: u64, vm: VmId, vcpu: usize) -> u64 {
    count << WAITER_BITS | (vm.0 as u64 * MAX_VCPUS as u64 + vcpu as u64)
}

/// The VM and vCPU whose request `seq` is (as `seq_for` made it).
fn waiter_of(seq: u64) -> (VmId, usize) {
    let waiter = seq & ((1 << WAITER_BITS) - 1);
    (VmId((waiter / MAX_VCPUS as u64) as u16), (waiter % MAX_VCPUS as u64) as usize)
}

/// The IO page, once set up.
#[derive(Clone, Copy)]
struct Page(u64);

impl Page {
    fn get() -> Option<Page> {
        Some(PAGE.load(Ordering::Acquire)).filter(|&p| p != 0).map(Page)
    }

    /// A 32-bit header word (`*_OFFSET`).
    fn word(self, offset: usize) -> &'static AtomicU32 {
        debug_assert!(offset.is_multiple_of(4) && offset < IO_PAGE_SIZE);
        // SAFETY: the IO page is a page of dom0's RAM mapped at EL2 for as
        // long as the hypervisor runs (`IoSetup` is once, never undone);
        // the offsets are 4-byte-aligned header fields of the ABI.
        unsafe { &*((self.0 as usize + offset) as *const AtomicU32) }
    }

    /// Fills request slot `slot` (the producer's, under `REQUESTS`).
    fn write_request(self, slot: usize, request: &IoRequest) {
        let at = (self.0 as usize + request_slot_offset(slot)) as *mut u64;
        // SAFETY: a request slot inside the shared page, 8-byte aligned
        // (the page is, and the ABI's slots are 32 bytes from offset 256);
        // dom0 reads it only after the release store of `prod` that
        // follows, and `REQUESTS` keeps other producers out of it.
        unsafe { at.cast::<[u64; 4]>().write(request.to_words().map(u64::to_le)) };
    }

    /// Copies completion slot `slot` out (the consumer's, under
    /// `COMPLETIONS`), each word read once.
    fn read_completion(self, slot: usize) -> IoCompletion {
        let at = (self.0 as usize + completion_slot_offset(slot)) as *const u64;
        // SAFETY: a completion slot of the shared page, 8-byte aligned (24
        // bytes from 8-aligned offset 0x900), published by dom0's release
        // store of the completion `prod` this side acquired.
        let words = unsafe { at.cast::<[u64; 3]>().read() };
        IoCompletion::from_words(words.map(u64::from_le))
    }

    /// Whether dom0 has put completions in the ring that nobody took yet
    /// (a hint: another CPU may be taking them).
    fn completions_waiting(self) -> bool {
        self.word(CPL_PROD_OFFSET).load(Ordering::Acquire) != self.word(CPL_CONS_OFFSET).load(Ordering::Relaxed)
    }
}

/// Completions that reached no waiting vCPU: their request's VM was
/// destroyed or dom0 answered a request twice or one it never had.
/// Dropped, counted here (`stale_completions`).
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

/// VM `vm` is being destroyed (none of its vCPUs runs, it is out of the
/// VM table): its requests that dom0 has not answered wait no more; their
/// answers, if they come, find no VM and are dropped and counted. Returns
/// how many there were.
pub fn forget_vm(vm: &Vm) -> usize {
    vm.vcpus
        .iter()
        .filter(|v| {
            let mut io = v.io.lock();
            let waiting = io.pending.is_some() && io.answer.is_none();
            *io = IoWait::default();
            waiting
        })
        .count()
}

/// For each physical CPU, the dom0 vCPU a request made there signals: one
/// on another CPU when dom0 has one (it can answer while the requester
/// waits at EL2), bit 7 set if so. Dom0's vCPUs never move (vCPU i runs on
/// CPU i), so it is worked out once, when dom0 is made
/// (`set_dom0_placement`), not looked up in dom0's vCPUs per request.
static ANSWERER: [AtomicU8; cpu::MAX_CPUS] = [const { AtomicU8::new(NO_ANSWERER) }; cpu::MAX_CPUS];
const NO_ANSWERER: u8 = u8::MAX;
const ANSWERER_ELSEWHERE: u8 = 0x80;

/// Records that dom0's vCPU i runs on physical CPU `pcpus[i]`.
pub fn set_dom0_placement(pcpus: &[usize]) {
    for (me, slot) in ANSWERER.iter().enumerate() {
        let target = pcpus.iter().position(|&p| p != me).unwrap_or(0);
        let elsewhere = pcpus.get(target).is_some_and(|&p| p != me);
        slot.store(target as u8 | if elsewhere { ANSWERER_ELSEWHERE } else { 0 }, Ordering::Relaxed);
    }
}

/// The dom0 vCPU to signal for a request made on CPU `me`, and whether it
/// runs on another CPU (vCPU 0, here, before dom0's placement is known).
fn answerer(me: usize) -> (usize, bool) {
    match ANSWERER.get(me).map_or(NO_ANSWERER, |a| a.load(Ordering::Relaxed)) {
        NO_ANSWERER => (0, false),
        a => (usize::from(a & !ANSWERER_ELSEWHERE), a & ANSWERER_ELSEWHERE != 0),
    }
}

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

/// `IoSetup`: dom0 gives the hypervisor a page for the rings.
pub fn setup(dom0: &Vm, ipa: u64) -> Result<u64, Error> {
    if !ipa.is_multiple_of(IO_PAGE_SIZE as u64) {
        return Err(Error::InvalidParameter);
    }
    let page = dom0.ram_buffer(ipa, IO_PAGE_SIZE as u64).ok_or(Error::BadAddress)?;
    // Two dom0 vCPUs calling at once: the first one's page wins.
    let mut requests = REQUESTS.lock();
    if Page::get().is_some() {
        return Err(Error::Busy);
    }
    // SAFETY: a page of dom0's RAM, mapped at EL2; dom0 is in this hypercall.
    unsafe { core::ptr::write_bytes(page.as_u64() as *mut u8, 0, IO_PAGE_SIZE) };
    let new = Page(page.as_u64());
    new.word(REQ_HEADER_OFFSET + 4).store(IO_RING_SLOTS, Ordering::Release);
    new.word(CPL_HEADER_OFFSET + 4).store(IO_RING_SLOTS, Ordering::Release);
    *requests = Requests { ring: EMPTY_RING, count: 1 };
    *COMPLETIONS.lock() = EMPTY_RING;
    PAGE.store(page.as_u64(), Ordering::Release);
    log::info!("IO forwarding to dom0 set up, page {}", PhysAddr::new(page.as_u64()));
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
    // A read of a register dom0 published the value of (`IoShadow`):
    // answered here, no request.
    if !write {
        if let Some(value) = vm.shadows.read(ipa, size) {
            if register != 31 {
                frame.x[register as usize] = abort.load_value(value);
            }
            frame.elr += 4;
            return Ok(Next::Resume);
        }
    }
    let page = Page::get().ok_or(Unforwardable::NoIoPage)?;
    let data = if write && register != 31 { frame.x[register as usize] & size.mask() } else { 0 };
    let dir = if write { Direction::Write } else { Direction::Read };
    let mut posted = write && post_writes;
    // Signal a dom0 vCPU on another physical CPU if there is one: it can
    // answer while this CPU waits.
    let (target, answerer_elsewhere) = answerer(cpu::index());
    {
        let mut requests = REQUESTS.lock();
        if requests.ring.observe_cons(page.word(REQ_CONS_OFFSET).load(Ordering::Acquire)).is_err() {
            log::warn!("dom0's IO request ring is corrupt; guest access aborted");
            return Err(Unforwardable::CorruptRing);
        }
        let Some(slot) = requests.ring.producer_slot() else {
            // Ring full: let dom0 run; the guest repeats the access.
            return Ok(Next::Yield);
        };
        // Back-pressure: with the ring half full, a write that could be
        // posted waits for dom0 like a read (a guest sending bytes as
        // fast as it traps would otherwise fill the ring and spin on it).
        posted &= requests.ring.len() < POST_LIMIT;
        let seq = seq_for(requests.count, vm.id, vcpu.index);
        if write {
            // Before dom0 can see the write: a value it published that
            // the write may change is not handed out any more.
            vm.shadows.note_write(ipa, requests.count);
        }
        requests.count += 1;
        let mut request = if posted {
            IoRequest::posted(seq, vm.id.0, vcpu.index as u16, size.bytes() as u8, ipa, data)
        } else {
            IoRequest::new(seq, vm.id.0, vcpu.index as u16, dir, size.bytes() as u8, ipa, data)
        };
        if !posted && answerer_elsewhere {
            request.flags |= WAITING_ELSEWHERE;
        }
        page.write_request(slot, &request);
        if !posted {
            // Ready for the answer before dom0 can see the request; the
            // vCPU stays RUNNING while it waits here (see below).
            *vcpu.io.lock() = IoWait { pending: Some(PendingIo { abort, register, write, seq }), answer: None };
        }
        let prod = requests.ring.produced();
        page.word(REQ_PROD_OFFSET).store(prod, Ordering::Release);
    }

    // Dom0 polling the ring sees the request without a signal (see
    // `RingHeader::polling` for why the barrier makes this safe).
    core::sync::atomic::fence(Ordering::SeqCst);
    let polled = page.word(REQ_POLLING_OFFSET).load(Ordering::Relaxed) != 0;
    if let Some(dom0) = (!polled).then(|| vm::get(VmId(0))).flatten() {
        interrupts::with_effects(&dom0, |fx| {
            let _ = dom0.vgic.lock().pulse(IO_EVENT_INTID, target, fx);
        });
    }
    if posted {
        frame.elr += 4;
        return Ok(Next::Resume);
    }
    if answerer_elsewhere && wait_for_answer(page, vm, vcpu, frame) {
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

/// Runs `f` while no request can be pushed: `IoShadow` publishes under
/// it, so that a write is noted entirely before or after the publication
/// (`ioshadow`).
pub fn serialized<R>(f: impl FnOnce() -> R) -> R {
    let _requests = REQUESTS.lock();
    f()
}

/// The count in a request's `seq` (`seq_for`): later requests have
/// higher counts.
pub fn request_count(seq: u64) -> u64 {
    seq >> WAITER_BITS
}

/// Requests in the ring from which a posted write waits for its answer.
const POST_LIMIT: u32 = IO_RING_SLOTS / 2;

/// How long a vCPU waits at EL2 for dom0 (on another CPU) to answer before
/// it gives its CPU away: about two round trips' worth.
const SPIN_MICROS: u64 = 20;

/// Waits (at most `SPIN_MICROS`) for the answer to the vCPU's forwarded
/// access, taking dom0's completions as they come; applies it and returns
/// `true` if it came.
fn wait_for_answer(page: Page, vm: &Vm, vcpu: &Vcpu, frame: &mut TrapFrame) -> bool {
    let polling = page.word(CPL_POLLING_OFFSET);
    // Dom0 may skip IoComplete while we take completions ourselves.
    polling.fetch_add(1, Ordering::SeqCst);
    let deadline = cpu::counter() + cpu::counter_frequency() * SPIN_MICROS / 1_000_000;
    let mut answered = false;
    loop {
        if page.completions_waiting() {
            answered |= take_completions(page, Some((vm, vcpu))).is_ok_and(|(_, mine)| mine);
        }
        if answered || cpu::counter() >= deadline {
            break;
        }
        <crate::sync::Yield as spin::RelaxStrategy>::relax();
        // Another CPU may have taken our answer for us.
        answered = vcpu.io.lock().answer.is_some();
    }
    polling.fetch_sub(1, Ordering::SeqCst);
    // A completion dom0 wrote while it saw us polling, without IoComplete.
    core::sync::atomic::fence(Ordering::SeqCst);
    if page.completions_waiting() {
        let _ = take_completions(page, None);
    }
    if answered || vcpu.io.lock().answer.is_some() {
        finish(vcpu, frame);
        return true;
    }
    false
}

/// Whether dom0 has requests it has not taken yet.
pub fn requests_pending() -> bool {
    Page::get().is_some_and(|page| page.word(REQ_CONS_OFFSET).load(Ordering::Acquire) != page.word(REQ_PROD_OFFSET).load(Ordering::Relaxed))
}

/// `IoComplete`: takes dom0's completions and resumes their vCPUs.
pub fn complete() -> Result<u64, Error> {
    let page = Page::get().ok_or(Error::NotSupported)?;
    take_completions(page, None).map(|(taken, _)| taken)
}

/// Takes every completion in the ring, one at a time (the ring's lock is
/// not held while a vCPU is woken), and gives each to its vCPU. Returns
/// how many reached a vCPU, and whether one of them was `me`'s (the vCPU
/// waiting in `wait_for_answer` on this CPU, of `me`'s VM).
fn take_completions(page: Page, me: Option<(&Vm, &Vcpu)>) -> Result<(u64, bool), Error> {
    let (mut taken, mut mine) = (0, false);
    loop {
        let (c, more) = {
            let mut ring = COMPLETIONS.lock();
            ring.observe_prod(page.word(CPL_PROD_OFFSET).load(Ordering::Acquire)).map_err(|_| Error::InvalidParameter)?;
            let Some(slot) = ring.consumer_slot() else { break };
            let c = page.read_completion(slot);
            page.word(CPL_CONS_OFFSET).store(ring.consumed(), Ordering::Release);
            // Seen now, taken next time round; what dom0 adds later is
            // for whoever takes completions after it signals.
            (c, !ring.is_empty())
        };
        match deliver(&c, me) {
            Some(was_me) => {
                taken += 1;
                mine |= was_me;
            }
            None => drop_stale(c.seq),
        }
        if !more {
            break;
        }
    }
    Ok((taken, mine))
}

/// Gives completion `c` to the vCPU waiting for it and wakes that vCPU;
/// returns whether that was `me` (`None`: nobody waits for `c.seq`). `me`
/// waits on this CPU, RUNNING, and looks for its answer itself: it needs
/// neither a look-up nor a wake-up.
fn deliver(c: &IoCompletion, me: Option<(&Vm, &Vcpu)>) -> Option<bool> {
    let (id, index) = waiter_of(c.seq);
    if let Some((_, vcpu)) = me.filter(|(vm, vcpu)| vm.id == id && vcpu.index == index) {
        return give_answer(vcpu, c).then_some(true);
    }
    let vm = vm::get(id)?;
    let vcpu = vm.vcpus.get(index)?;
    if !give_answer(vcpu, c) {
        return None;
    }
    sched::wake_io(&vm, index);
    Some(false)
}

/// Records `c` as `vcpu`'s answer if `vcpu` waits for it.
fn give_answer(vcpu: &Vcpu, c: &IoCompletion) -> bool {
    let mut io = vcpu.io.lock();
    // The seq check is also the instance check: a later VM with the same
    // id waits for another seq.
    if io.answer.is_some() || !io.pending.is_some_and(|p| p.seq == c.seq) {
        return false;
    }
    io.answer = Some(IoAnswer { status: IoStatus::from_u32(c.status), data: c.data });
    true
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
    PAGE.store(0, Ordering::Release);
    ANSWERER.iter().for_each(|a| a.store(NO_ANSWERER, Ordering::Relaxed));
    *REQUESTS.lock() = Requests { ring: EMPTY_RING, count: 1 };
    *COMPLETIONS.lock() = EMPTY_RING;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_names_its_waiter_and_is_never_zero() {
        for (vm, vcpu) in [(0u16, 0usize), (1, 7), (MAX_VMS - 1, MAX_VCPUS as usize - 1)] {
            let seq = seq_for(1, VmId(vm), vcpu);
            assert_ne!(seq, 0);
            assert_eq!(waiter_of(seq), (VmId(vm), vcpu));
            assert_ne!(seq_for(2, VmId(vm), vcpu), seq, "the count tells requests of one vCPU apart");
        }
    }
}
