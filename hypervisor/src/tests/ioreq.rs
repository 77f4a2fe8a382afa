//! IO forwarding to dom0: the request and completion rings as the
//! hypervisor drives them, and the polling handshake that lets either side
//! skip a signal, checked in every interleaving of the two sides.

use core::sync::atomic::{AtomicU32, Ordering};

use hv_abi::hypercall::{Function, VmState, IO_EVENT_INTID};
use hv_abi::ioreq::{
    completion_slot_offset, request_slot_offset, IoCompletion, IoRequest, IoStatus, CPL_PROD_OFFSET, IO_PAGE_SIZE, REQ_CONS_OFFSET,
    REQ_POLLING_OFFSET, REQ_PROD_OFFSET,
};

use super::support::*;
use crate::arch::fake::{self, Event};
use crate::arch::{GuestException, TrapFrame};
use crate::sched::{self, Next};

const WINDOW: u64 = 0x0a00_0000;

struct Setup {
    _m: Machine,
    d0: alloc::sync::Arc<crate::vm::Vm>,
    g: alloc::sync::Arc<crate::vm::Vm>,
    page: u64,
}

/// Dom0 with an IO page, a running guest with a forwarded window at
/// `WINDOW` (posted writes if `posted`).
fn setup(posted: bool) -> Setup {
    let m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    let page = d0.ram[0].ipa.as_u64() + 0x10_0000;
    assert_eq!(hypercall(&d0, Function::IoSetup, &[page]).0, 0);
    assert_eq!(hypercall(&d0, Function::IoMap, &[g.id.0 as u64, WINDOW, 0x1000, posted as u64]).0, 0);
    g.set_state(VmState::Running);
    fake::take_events();
    Setup { _m: m, d0, g, page }
}

fn word(page: u64, offset: usize) -> &'static AtomicU32 {
    assert!(offset < IO_PAGE_SIZE);
    // SAFETY: the IO page is dom0 RAM, in host tests the test's heap block,
    // alive for the whole run; offsets are the ABI's aligned header words.
    unsafe { &*((page as usize + offset) as *const AtomicU32) }
}

fn request(page: u64, slot: usize) -> IoRequest {
    let mut bytes = [0u8; IoRequest::SIZE];
    // SAFETY: as in `word`.
    unsafe { core::ptr::copy_nonoverlapping((page as usize + request_slot_offset(slot)) as *const u8, bytes.as_mut_ptr(), bytes.len()) };
    IoRequest::from_bytes(&bytes)
}

/// Dom0 answers: a completion in slot `slot`, published.
fn answer(page: u64, slot: usize, c: IoCompletion) {
    let bytes = c.to_bytes();
    // SAFETY: as in `word`.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (page as usize + completion_slot_offset(slot)) as *mut u8, bytes.len()) };
    word(page, CPL_PROD_OFFSET).fetch_add(1, Ordering::Release);
}

#[test]
fn forwarded_read_waits_for_dom0_and_resumes_with_its_answer() {
    let s = setup(false);
    fake::el2::set_fault_ipa(WINDOW + 0x18);
    let mut frame = TrapFrame { esr: data_abort_esr(4, 3, false), far: 0x18, elr: 0x4000_0100, ..TrapFrame::default() };
    let next = trap(&s.g, 0, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Leave, "the vCPU gives its CPU away while dom0 works");
    assert_eq!(s.g.vcpus[0].sched.load(Ordering::Acquire), sched::state::IO_WAIT);
    // The request is in the ring, and dom0 (not polling) was signalled.
    assert_eq!(word(s.page, REQ_PROD_OFFSET).load(Ordering::Acquire), 1);
    let r = request(s.page, 0);
    assert_eq!((r.vm, r.vcpu, r.addr, r.size), (s.g.id.0, 0, WINDOW + 0x18, 4));
    assert!(r.waiting_elsewhere(), "dom0 runs on another CPU");
    assert!(s.d0.vgic.lock().irq_view(IO_EVENT_INTID, 0).is_some_and(|i| i.pending), "IO event pending for dom0");
    // Dom0 consumes it and answers; its IoComplete wakes the vCPU on its CPU.
    word(s.page, REQ_CONS_OFFSET).store(1, Ordering::Release);
    answer(s.page, 0, IoCompletion::new(r.seq, IoStatus::Ok, 0xffff_ff41));
    assert_eq!(hypercall(&s.d0, Function::IoComplete, &[]).0, 1, "one completion taken");
    let v = &s.g.vcpus[0];
    assert_eq!(v.sched.load(Ordering::Acquire), sched::state::RUNNABLE);
    assert!(fake::take_events().contains(&Event::Sgi { intid: crate::arch::gic::SGI_KICK, target: v.pcpu(), from: 0 }));
    // Back on its CPU: the value lands in x3, masked to the access size.
    crate::ioreq::finish(v, &mut frame);
    assert_eq!(frame.x[3], 0xffff_ff41);
    assert_eq!(frame.elr, 0x4000_0104);
}

#[test]
fn dom0_error_answer_becomes_an_external_abort() {
    let s = setup(false);
    fake::el2::set_fault_ipa(WINDOW);
    let mut frame = TrapFrame { esr: data_abort_esr(4, 3, false), far: 0x0, elr: 0x4000_0100, ..TrapFrame::default() };
    assert_eq!(trap(&s.g, 0, &mut frame, GuestException::Sync), Next::Leave);
    let r = request(s.page, 0);
    answer(s.page, 0, IoCompletion::new(r.seq, IoStatus::Fault, 0));
    assert_eq!(hypercall(&s.d0, Function::IoComplete, &[]).0, 1);
    fake::take_events();
    crate::ioreq::finish(&s.g.vcpus[0], &mut frame);
    // A data abort from EL0 (SPSR 0), read, DFSC 0x10.
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x9200_0010, far: 0 }]);
    assert_eq!(frame.elr, 0x4000_0100, "the load is not stepped over");
}

#[test]
fn completion_for_an_unknown_request_wakes_nobody() {
    let s = setup(false);
    answer(s.page, 0, IoCompletion::new(12345, IoStatus::Ok, 1));
    assert_eq!(hypercall(&s.d0, Function::IoComplete, &[]).0, 0);
    assert!(s.g.vcpus[0].io.lock().answer.is_none());
}

#[test]
fn posted_write_goes_into_the_ring_and_the_vcpu_goes_on() {
    let s = setup(true);
    fake::el2::set_fault_ipa(WINDOW + 4);
    let mut frame = TrapFrame { esr: data_abort_esr(1, 2, true), far: 0x4, elr: 0x4000_0200, ..TrapFrame::default() };
    frame.x[2] = 0x1234_5678_9abc_de41;
    assert_eq!(trap(&s.g, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert_eq!(frame.elr, 0x4000_0204);
    let r = request(s.page, 0);
    assert!(r.is_posted());
    assert_eq!(r.data, 0x41, "masked to the byte written");
    assert!(s.g.vcpus[0].io.lock().pending.is_none(), "nothing to wait for");
}

#[test]
fn ring_full_lets_dom0_run_and_the_guest_repeats_the_access() {
    let s = setup(true);
    fake::el2::set_fault_ipa(WINDOW);
    let half = hv_abi::ioreq::IO_RING_SLOTS / 2;
    for i in 0..half {
        let mut frame = TrapFrame { esr: data_abort_esr(4, 0, true), elr: 0x100, ..TrapFrame::default() };
        assert_eq!(trap(&s.g, 0, &mut frame, GuestException::Sync), Next::Resume, "write {i}");
    }
    // The other half: reads of vCPUs of other guests, each waiting.
    let mut others = alloc::vec::Vec::new();
    for n in 0..half as usize / 8 {
        let g = create_guest(&s.d0, &alloc::format!("o{n}"), 8, 2 << 20, 0).expect("created");
        assert_eq!(hypercall(&s.d0, Function::IoMap, &[g.id.0 as u64, WINDOW, 0x1000, 1]).0, 0);
        g.set_state(VmState::Running);
        for v in 0..8 {
            let mut frame = TrapFrame { esr: data_abort_esr(4, 0, false), elr: 0x100, ..TrapFrame::default() };
            assert_eq!(trap(&g, v, &mut frame, GuestException::Sync), Next::Leave, "read of {n}/{v} waits");
        }
        others.push(g);
    }
    let mut frame = TrapFrame { esr: data_abort_esr(4, 0, true), elr: 0x100, ..TrapFrame::default() };
    assert_eq!(trap(&s.g, 0, &mut frame, GuestException::Sync), Next::Yield);
    assert_eq!(frame.elr, 0x100, "the store is repeated once dom0 made room");
}

#[test]
fn dom0_polling_the_ring_is_not_signalled() {
    let s = setup(true);
    word(s.page, REQ_POLLING_OFFSET).store(1, Ordering::Release);
    fake::el2::set_fault_ipa(WINDOW);
    let mut frame = TrapFrame { esr: data_abort_esr(4, 0, true), elr: 0x100, ..TrapFrame::default() };
    assert_eq!(trap(&s.g, 0, &mut frame, GuestException::Sync), Next::Resume);
    assert!(!s.d0.vgic.lock().irq_view(IO_EVENT_INTID, 0).is_some_and(|i| i.pending), "no signal while dom0 polls");
}

#[test]
fn access_without_syndrome_or_io_page_is_aborted() {
    let _m = Machine::take();
    let d0 = dom0();
    let g = create_guest(&d0, "g", 1, 2 << 20, 0).expect("created");
    assert_eq!(hypercall(&d0, Function::IoMap, &[g.id.0 as u64, WINDOW, 0x1000, 0]).0, 0);
    fake::take_events();
    fake::el2::set_fault_ipa(WINDOW);
    // No IO page set up yet.
    let mut frame = TrapFrame { esr: data_abort_esr(4, 0, false), far: 0x8, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut frame, GuestException::Sync), Next::Resume);
    // ISV = 0 (a load pair): cannot be described to dom0.
    let mut pair = TrapFrame { esr: esr(ec::DABT_LOWER, 0b000100), far: 0x10, ..TrapFrame::default() };
    assert_eq!(trap(&g, 0, &mut pair, GuestException::Sync), Next::Resume);
    assert_eq!(fake::take_events(), [Event::InjectAbort { esr: 0x9200_0010, far: 0x8 }, Event::InjectAbort { esr: 0x9200_0010, far: 0x10 }]);
}

/// The polling handshake of `RingHeader::polling`, as a model: a producer
/// publishes an entry, fences, and signals unless it sees the consumer
/// polling; the consumer sets `polling`, looks, clears `polling`, fences
/// and looks once more. Every interleaving of the two (sequentially
/// consistent, which the fences on both sides give) must leave the entry
/// either seen by a look or signalled: never lost.
mod handshake {
    extern crate std;
    use std::vec::Vec;

    #[derive(Clone, Copy, Debug)]
    enum Producer {
        Publish,
        ReadPollingAndSignal,
    }

    #[derive(Clone, Copy, Debug)]
    enum Consumer {
        SetPolling,
        Look,
        ClearPolling,
        LookAgain,
    }

    #[derive(Default)]
    struct World {
        published: bool,
        polling: bool,
        seen: bool,
        signalled: bool,
    }

    fn step_producer(w: &mut World, s: Producer) {
        match s {
            Producer::Publish => w.published = true,
            Producer::ReadPollingAndSignal => w.signalled |= !w.polling,
        }
    }

    fn step_consumer(w: &mut World, s: Consumer, again: bool) {
        match s {
            Consumer::SetPolling => w.polling = true,
            Consumer::Look => w.seen |= w.published,
            Consumer::ClearPolling => w.polling = false,
            Consumer::LookAgain => w.seen |= again && w.published,
        }
    }

    /// Every interleaving of `p` and `c` (order within each kept).
    fn interleavings(p: usize, c: usize) -> Vec<Vec<bool>> {
        if p == 0 || c == 0 {
            return std::vec![std::iter::repeat_n(p > 0, p + c).collect()];
        }
        let mut out = Vec::new();
        for mut rest in interleavings(p - 1, c) {
            rest.insert(0, true);
            out.push(rest);
        }
        for mut rest in interleavings(p, c - 1) {
            rest.insert(0, false);
            out.push(rest);
        }
        out
    }

    /// Runs every interleaving; returns how many lost the entry.
    fn lost(look_again: bool) -> (usize, usize) {
        let producer = [Producer::Publish, Producer::ReadPollingAndSignal];
        let consumer = [Consumer::SetPolling, Consumer::Look, Consumer::ClearPolling, Consumer::LookAgain];
        let all = interleavings(producer.len(), consumer.len());
        let mut lost = 0;
        for order in &all {
            let mut w = World::default();
            let (mut p, mut c) = (0, 0);
            for &producer_moves in order {
                if producer_moves {
                    step_producer(&mut w, producer[p]);
                    p += 1;
                } else {
                    step_consumer(&mut w, consumer[c], look_again);
                    c += 1;
                }
            }
            if !(w.seen || w.signalled) {
                lost += 1;
            }
        }
        (lost, all.len())
    }

    #[test]
    fn no_interleaving_loses_an_entry() {
        let (lost, total) = lost(true);
        assert_eq!(total, 15, "C(6, 2) interleavings");
        assert_eq!(lost, 0);
    }

    #[test]
    fn without_the_second_look_an_entry_can_be_lost() {
        // The model can fail: dropping the consumer's look after clearing
        // `polling` loses the entry published just before the clear.
        let (lost, _) = lost(false);
        assert!(lost > 0);
    }
}

#[test]
fn a_late_answer_for_a_destroyed_vm_never_reaches_the_next_vm_with_its_id() {
    let s = setup(false);
    // The old VM's vCPU waits for a read; the VM is destroyed meanwhile.
    fake::el2::set_fault_ipa(WINDOW + 0x8);
    let mut frame = TrapFrame { esr: data_abort_esr(4, 3, false), far: 0x8, elr: 0x4000_0100, ..TrapFrame::default() };
    assert_eq!(trap(&s.g, 0, &mut frame, GuestException::Sync), Next::Leave);
    sched::forget_current_for_test(); // the CPU switched away from it
    let old = request(s.page, 0);
    let id = s.g.id;
    assert_eq!(hypercall(&s.d0, Function::VmDestroy, &[id.0 as u64]).0, 0);
    // A new VM gets the same id at once, with the same window, and its
    // vCPU 0 waits for a read of its own.
    let g2 = create_guest(&s.d0, "g2", 1, 2 << 20, 0).expect("created");
    assert_eq!(g2.id, id, "ids are reused");
    assert_eq!(hypercall(&s.d0, Function::IoMap, &[id.0 as u64, WINDOW, 0x1000, 0]).0, 0);
    g2.set_state(VmState::Running);
    let mut frame2 = TrapFrame { esr: data_abort_esr(4, 5, false), far: 0x8, elr: 0x4000_0200, ..TrapFrame::default() };
    assert_eq!(trap(&g2, 0, &mut frame2, GuestException::Sync), Next::Leave);
    let new = request(s.page, 1);
    assert_eq!((new.vm, new.vcpu), (old.vm, old.vcpu), "same VM id and vCPU: only seq tells them apart");
    assert_ne!(new.seq, old.seq);
    // Dom0's late answer to the old request: taken, dropped, counted.
    let stale = crate::ioreq::stale_completions();
    word(s.page, REQ_CONS_OFFSET).store(2, Ordering::Release);
    answer(s.page, 0, IoCompletion::new(old.seq, IoStatus::Ok, 0xdead));
    assert_eq!(hypercall(&s.d0, Function::IoComplete, &[]).0, 0, "nobody was answered");
    assert_eq!(crate::ioreq::stale_completions(), stale + 1);
    assert!(g2.vcpus[0].io.lock().answer.is_none(), "the new VM's vCPU still waits");
    assert_eq!(g2.vcpus[0].sched.load(Ordering::Acquire), sched::state::IO_WAIT);
    // Its own answer reaches it.
    answer(s.page, 1, IoCompletion::new(new.seq, IoStatus::Ok, 0x77));
    assert_eq!(hypercall(&s.d0, Function::IoComplete, &[]).0, 1);
    crate::ioreq::finish(&g2.vcpus[0], &mut frame2);
    assert_eq!(frame2.x[5], 0x77);
}

/// `IoShadow`: a published register's reads are answered without a
/// request; a posted write the keep mask names leaves it, another write
/// invalidates it (reads go to dom0 again), and a publication dom0 made
/// before it handled that write is refused.
#[test]
fn a_published_register_is_read_without_dom0_until_a_write_may_change_it() {
    use hv_abi::hypercall::{Error, SHADOW_NONE};
    let s = setup(true);
    let g = s.g.id.0 as u64;
    let publish = |value: u64, seq: u64| hypercall(&s.d0, Function::IoShadow, &[g, WINDOW + 0x18, value, seq, 1]).0;
    // Only inside a window, only 4-byte aligned, only dom0's guests.
    assert_eq!(hypercall(&s.d0, Function::IoShadow, &[g, WINDOW + 0x1000, 0x90, 0, 1]).0, Error::InvalidParameter.code());
    assert_eq!(hypercall(&s.d0, Function::IoShadow, &[g, WINDOW + 0x1a, 0x90, 0, 1]).0, Error::InvalidParameter.code());
    assert_eq!(hypercall(&s.g, Function::IoShadow, &[g, WINDOW + 0x18, 0x90, 0, 1]).0, Error::Denied.code());
    assert_eq!(publish(0xffff_ff90, 0), 0);
    let read = |far: u64| {
        fake::el2::set_fault_ipa(WINDOW + far);
        let mut frame = TrapFrame { esr: data_abort_esr(4, 3, false), far, elr: 0x4000_0100, ..TrapFrame::default() };
        let next = trap(&s.g, 0, &mut frame, GuestException::Sync);
        (next, frame.x[3], frame.elr)
    };
    assert_eq!(read(0x18), (Next::Resume, 0xffff_ff90, 0x4000_0104));
    assert_eq!(word(s.page, REQ_PROD_OFFSET).load(Ordering::Acquire), 0, "no request");
    let write = |far: u64| {
        fake::el2::set_fault_ipa(WINDOW + far);
        let mut frame = TrapFrame { esr: data_abort_esr(4, 2, true), far, elr: 0x4000_0200, ..TrapFrame::default() };
        assert_eq!(trap(&s.g, 0, &mut frame, GuestException::Sync), Next::Resume, "posted");
    };
    // The data register (offset 0, kept): still answered here.
    write(0);
    assert_eq!(read(0x18).1, 0xffff_ff90);
    // Line control (0x2c): the next read is a request to dom0.
    write(0x2c);
    let lcr = request(s.page, 1);
    assert_eq!(read(0x18).0, Next::Leave, "waits for dom0");
    assert_eq!(request(s.page, 2).addr, WINDOW + 0x18);
    assert_eq!(publish(0x10, request(s.page, 0).seq), Error::Busy.code(), "worked out before the LCR write was handled");
    assert_eq!(publish(0x10, lcr.seq), 0);
    s.g.vcpus[0].io.lock().pending = None; // the forwarded read above, not answered in this test
    assert_eq!(read(0x18).1, 0x10);
    assert_eq!(publish(SHADOW_NONE, lcr.seq), 0);
    assert_eq!(read(0x18).0, Next::Leave, "withdrawn: to dom0 again");
}

/// With the request ring half full, a write to a posted window waits for
/// dom0 like a read: back-pressure on a guest writing as fast as it traps.
#[test]
fn posted_writes_wait_once_the_ring_is_half_full() {
    let s = setup(true);
    fake::el2::set_fault_ipa(WINDOW);
    let write = || {
        let mut frame = TrapFrame { esr: data_abort_esr(4, 2, true), far: 0, elr: 0x4000_0200, ..TrapFrame::default() };
        trap(&s.g, 0, &mut frame, GuestException::Sync)
    };
    let half = hv_abi::ioreq::IO_RING_SLOTS as usize / 2;
    for i in 0..half {
        assert_eq!(write(), Next::Resume, "write {i} posted");
        assert!(request(s.page, i).is_posted());
    }
    assert_ne!(write(), Next::Resume, "the vCPU waits for dom0's answer");
    let r = request(s.page, half);
    assert!(!r.is_posted(), "dom0 answers it");
    assert_eq!(s.g.vcpus[0].io.lock().pending.map(|p| p.seq), Some(r.seq));
}
