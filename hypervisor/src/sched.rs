//! The scheduler's mechanism: per-physical-CPU run queues of vCPUs (policy
//! in `schedpolicy`), time slices from the EL2 physical timer (CNTHP, PPI
//! 26), blocking on WFI with soft timers for blocked vCPUs' virtual timers,
//! wake-ups across CPUs by SGI, and the bookkeeping of switching vCPUs
//! (`switch` carries the switch out), and load balancing between CPUs.
//!
//! A vCPU runs only on the physical CPU it is placed on (`Vcpu::pcpu`), so
//! its context is only ever touched by that CPU. The balancer changes that
//! CPU, and only for a vCPU that waits in a run queue: saved, not running.
//! A CPU with nothing to run pulls a queued vCPU from the busiest CPU, and
//! a CPU whose slice timer fires with vCPUs waiting pushes one to the
//! least loaded CPU; both decide from per-CPU load counters (`LOAD`, kept
//! under each CPU's lock and read without it) and lock only the two CPUs
//! involved, in index order. Pinned vCPUs (and dom0's) never move.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use log::debug;
use crate::sync::{Mutex, MutexGuard};

use crate::arch::timer::{self, HYP_TIMER_PPI};
use crate::arch::{cpu, gic};
use crate::schedpolicy::{self, slice_ticks, RunQueue, SoftTimers};
use crate::vm::{self, power, Vcpu, Vm, VmId, VmKind, NOT_QUEUED};

pub use crate::vm::state;

/// A vCPU's `Vcpu::parking`: whether it is parked on its CPU and whether
/// a wake-up claimed it there. A wake-up that makes a parked vCPU
/// runnable (`wake`) claims it (`PARKED` → `WOKEN`) instead of queueing
/// it: its CPU, kicked, resumes it in place (`parked_next`) or, if it
/// switches it out instead, queues it (`switch_out`). Only the vCPU's own
/// CPU sets `PARKED` (`park`, under its scheduler lock, the vCPU blocked)
/// and takes it back to `NONE` (when it resumes the vCPU or switches it
/// out), so a claim either reaches that CPU while it still has the vCPU
/// parked, or fails and the waker queues the vCPU as for any other.
pub mod parking {
    pub const NONE: u8 = 0;
    pub const PARKED: u8 = 1;
    pub const WOKEN: u8 = 2;
}

/// What the vCPU that trapped does next, as its trap handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// Back to the vCPU (unless the scheduler has something more urgent).
    Resume,
    /// Still runnable, but let others run first (it goes to the back of
    /// its run queue).
    Yield,
    /// No longer runnable (blocked, waiting for dom0, off, stopped): switch
    /// away; whatever changed its state wakes it again.
    Leave,
}

/// Why the running vCPU leaves its CPU (`switch_out`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// It is no longer runnable (blocked, waiting for dom0, off).
    Leave,
    /// It gives way (WFE, a full IO ring): to the back of the queue.
    Yield,
    /// The scheduler asked for the switch: its slice is over (to the back
    /// of the queue), or a favoured vCPU preempted it in the middle of its
    /// slice (right behind the favoured ones, to run the rest of its slice).
    Preempt,
}

/// Where `enqueue` puts a vCPU in its CPU's run queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Back,
    /// Favoured: dom0's, or woken for an interrupt.
    Front,
    /// Behind the favoured ones (`RunQueue::push_preempted`).
    Preempted,
}

impl Place {
    fn front_if(favoured: bool) -> Place {
        if favoured {
            Place::Front
        } else {
            Place::Back
        }
    }
}

/// A vCPU, as the run queues name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuRef {
    pub vm: VmId,
    pub vcpu: u8,
}

struct CpuSched {
    runq: RunQueue<VcpuRef>,
    timers: SoftTimers<VcpuRef>,
    /// The running vCPU (its VM kept alive by the Arc).
    current: Option<(Arc<Vm>, usize)>,
    /// Counter value when the current vCPU was switched in.
    since: u64,
    slice_end: u64,
    /// A vCPU that should preempt a running guest (dom0, or woken from
    /// WFI) was queued since the last switch.
    boost_pending: bool,
    /// vCPUs switched out to wait for dom0's answer to a forwarded access
    /// (`Vcpu::io_counted`): a wait of microseconds, after which they run
    /// here again, so they count in the load. Without them a CPU whose
    /// vCPUs all write to their consoles looked idle, pulled vCPUs, then
    /// looked overloaded and pushed them away: hundreds of moves a second.
    io_waiting: usize,
    /// `current` blocked in WFI and stays loaded while this CPU has
    /// nothing else to run (`park`): it does not count in the load, and
    /// its time here is not run time.
    parked: bool,
    /// (weight, its full slice in counter ticks): `full_slice`'s last
    /// answer.
    slice_cache: Option<(u32, u64)>,
}

impl CpuSched {
    const fn new() -> Self {
        CpuSched { runq: RunQueue::new(), timers: SoftTimers::new(), current: None, since: 0, slice_end: 0, boost_pending: false, io_waiting: 0, parked: false, slice_cache: None }
    }

    /// `slice_ticks` for `weight`, worked out again only when the weight
    /// differs from the last one asked (a CPU's vCPUs mostly share one):
    /// every resume of a parked vCPU starts a slice.
    fn full_slice(&mut self, weight: u32) -> u64 {
        match self.slice_cache {
            Some((w, ticks)) if w == weight => ticks,
            _ => {
                let ticks = slice_ticks(weight, cpu::counter_frequency());
                self.slice_cache = Some((weight, ticks));
                ticks
            }
        }
    }

    /// Runnable vCPUs here, the running one included, and those waiting
    /// for dom0's answer.
    fn load(&self) -> usize {
        self.runq.len() + usize::from(self.current.is_some() && !self.parked) + self.io_waiting
    }
}

static SCHED: [Mutex<CpuSched>; cpu::MAX_CPUS] = [const { Mutex::new(CpuSched::new()) }; cpu::MAX_CPUS];
/// Fast, lock-free view of what each CPU runs, for the trap path.
static CURRENT_VM: [AtomicPtr<Vm>; cpu::MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; cpu::MAX_CPUS];
static CURRENT_VCPU: [AtomicPtr<Vcpu>; cpu::MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; cpu::MAX_CPUS];
/// This CPU should pick another vCPU at the end of the current trap.
static RESCHED: [AtomicBool; cpu::MAX_CPUS] = [const { AtomicBool::new(false) }; cpu::MAX_CPUS];
/// vCPUs placed on each CPU (for placement).
static ASSIGNED: [AtomicUsize; cpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; cpu::MAX_CPUS];
/// Each CPU's runnable vCPUs, the running one included: what placement
/// and balancing look at. Written under the CPU's lock (`publish_load`),
/// read without it.
static LOAD: [AtomicUsize; cpu::MAX_CPUS] = [const { AtomicUsize::new(0) }; cpu::MAX_CPUS];
/// Counter ticks each CPU has spent running vCPUs since the first guest
/// vCPU ran (`BUSY_FROM`; dom0's boot alone would make CPU 0 look busiest).
static BUSY_TICKS: [AtomicU64; cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; cpu::MAX_CPUS];
/// Counter value when a guest's vCPU first ran (0: none has yet).
static BUSY_FROM: AtomicU64 = AtomicU64::new(0);
/// vCPUs the balancer moved between CPUs.
static MIGRATIONS: AtomicU64 = AtomicU64::new(0);
/// Load balancing on (`hv.no_balance` turns it off).
static BALANCING: AtomicBool = AtomicBool::new(true);

/// Turns load balancing on or off (boot: `hv.no_balance`).
pub fn set_balancing(on: bool) {
    BALANCING.store(on, Ordering::Relaxed);
}

/// Republishes CPU `cpu`'s load after its queue or running vCPU changed
/// (with its lock held, so the count matches the queue).
fn publish_load(cpu: usize, s: &CpuSched) {
    LOAD[cpu].store(s.load(), Ordering::Relaxed);
}

fn loads() -> [usize; cpu::MAX_CPUS] {
    core::array::from_fn(|i| LOAD[i].load(Ordering::Relaxed))
}

/// Locks the scheduler of the CPU `v` is placed on; returns that CPU too.
/// The balancer moves only queued vCPUs, holding this lock, so once it is
/// held the answer stays true.
fn lock_home(v: &Vcpu) -> (usize, MutexGuard<'static, CpuSched>) {
    loop {
        let pcpu = v.pcpu();
        let s = SCHED[pcpu].lock();
        if v.pcpu() == pcpu {
            return (pcpu, s);
        }
    }
}

/// Per CPU: when it last switched a guest vCPU in, while that vCPU is
/// its current one (0 while it runs dom0's or idles); for
/// [`guests_quiet_since`].
static GUEST_IN: [AtomicU64; cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; cpu::MAX_CPUS];

/// Whether no CPU runs a guest vCPU now and none switched one in after
/// `since` (a counter value): the guests have been quiet since then.
pub fn guests_quiet_since(since: u64, online: usize) -> bool {
    (0..online.min(cpu::MAX_CPUS))
        .all(|i| GUEST_IN[i].load(Ordering::Relaxed) == 0 && GUEST_OUT[i].load(Ordering::Relaxed) <= since)
}

/// Per CPU: when a guest vCPU last left it.
static GUEST_OUT: [AtomicU64; cpu::MAX_CPUS] = [const { AtomicU64::new(0) }; cpu::MAX_CPUS];

/// The soft timer (WFI wake-up) deadline of `vm`'s vCPU `index`, if armed.
pub fn soft_timer_of(vm: &Vm, index: usize) -> Option<u64> {
    let v = vm.vcpus.get(index)?;
    SCHED[v.pcpu()].lock().timers.deadline_of(&VcpuRef { vm: vm.id, vcpu: index as u8 })
}

/// The VM and vCPU running on this CPU (None while it idles).
#[inline]
pub fn current() -> Option<(&'static Vm, &'static Vcpu)> {
    let i = cpu::index();
    let vm = CURRENT_VM[i].load(Ordering::Relaxed);
    let vcpu = CURRENT_VCPU[i].load(Ordering::Relaxed);
    // SAFETY: both are set together by `switch_in` from the Arc held in
    // SCHED[i].current, which keeps the VM alive until `switch_out` clears
    // these pointers first.
    unsafe { Some((vm.as_ref()?, vcpu.as_ref()?)) }
}

/// The index of `vm`'s vCPU running on this CPU, if one is.
pub fn current_vcpu_of(vm: VmId) -> Option<usize> {
    current().filter(|(v, _)| v.id == vm).map(|(_, vcpu)| vcpu.index)
}

/// Chooses the physical CPUs for a new VM's `vcpus` vCPUs (pinning: bit i
/// allows CPU i; 0 = any): each goes to the least loaded allowed CPU,
/// counting the ones placed before it. `None` if no allowed CPU is online.
pub fn place(vcpus: usize, allowed: u64, online: usize) -> Option<alloc::vec::Vec<usize>> {
    let mut load = loads();
    let mut placed = alloc::vec::Vec::with_capacity(vcpus);
    for _ in 0..vcpus {
        let assigned: [usize; cpu::MAX_CPUS] = core::array::from_fn(|i| ASSIGNED[i].load(Ordering::Relaxed));
        let Some(cpu) = schedpolicy::place(allowed, online, &load, &assigned) else {
            placed.iter().for_each(|&cpu| unplace(cpu));
            return None;
        };
        ASSIGNED[cpu].fetch_add(1, Ordering::Relaxed);
        load[cpu] += 1;
        placed.push(cpu);
    }
    Some(placed)
}

/// A vCPU is gone (its VM destroyed).
pub fn unplace(pcpu: usize) {
    ASSIGNED[pcpu].fetch_sub(1, Ordering::Relaxed);
}

/// Assigns dom0's vCPU i to physical CPU i.
pub fn place_fixed(pcpu: usize) {
    ASSIGNED[pcpu].fetch_add(1, Ordering::Relaxed);
}

/// Makes vCPU `index` of `vm` runnable if it was blocked (or has a pending
/// `CPU_ON`), and makes its physical CPU notice.
pub fn wake(vm: &Vm, index: usize) {
    let Some(v) = vm.vcpus.get(index) else { return };
    let me = cpu::index();
    let mut woken = false;
    let queue = match v.sched.load(Ordering::Acquire) {
        state::BLOCKED => {
            woken = v.sched.compare_exchange(state::BLOCKED, state::RUNNABLE, Ordering::AcqRel, Ordering::Acquire).is_ok();
            woken
        }
        state::OFF => {
            v.power.load(Ordering::Acquire) == power::ON_PENDING
                && vm.runnable()
                && v.sched.compare_exchange(state::OFF, state::RUNNABLE, Ordering::AcqRel, Ordering::Acquire).is_ok()
        }
        state::RUNNABLE => true,
        _ => false,
    };
    // Parked on its CPU (and claimed there by this wake-up, or by an
    // earlier one): that CPU resumes it, or queues it; no queue here.
    let claimed = if woken {
        v.parking.compare_exchange(parking::PARKED, parking::WOKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
    } else {
        queue && v.parking.load(Ordering::Acquire) == parking::WOKEN
    };
    if queue && !claimed {
        queue_runnable(vm, index, woken);
        return;
    }
    let pcpu = v.pcpu();
    if pcpu != me {
        // Another CPU: interrupt it so it re-flushes or stops idling.
        gic::send_sgi(gic::SGI_KICK, pcpu);
    }
}

/// The second half of [`wake`]: queues vCPU `index` on its CPU if it still
/// waits to run (`woken`: this wake-up made it runnable), and makes that
/// CPU notice. `wake` read the state without the CPU's lock: since then
/// the vCPU may have been queued by another wake-up, run, and blocked
/// again. It has then seen what this wake-up was for, and its soft timer
/// is its only way back: queueing it (a blocked vCPU in a run queue) or
/// cancelling that timer here would leave it blocked for ever.
pub(crate) fn queue_runnable(vm: &Vm, index: usize, woken: bool) {
    let Some(v) = vm.vcpus.get(index) else { return };
    let me = cpu::index();
    let dom0 = vm.kind == VmKind::Dom0;
    let (pcpu, mut s) = lock_home(v);
    let mut preempt = false;
    if v.sched.load(Ordering::Acquire) == state::RUNNABLE {
        let r = VcpuRef { vm: vm.id, vcpu: index as u8 };
        s.timers.cancel(&r);
        // Dom0 (which serves IO) and vCPUs just woken from WFI (an interrupt
        // is waiting for them) go first; woken guests then run briefly and
        // block again, so a busy guest loses little.
        enqueue(pcpu, &mut s, v, r, Place::front_if(dom0 || woken));
        s.boost_pending |= dom0 || woken;
        preempt = s.current.as_ref().is_none_or(|(cur, _)| (dom0 || woken) && cur.kind != VmKind::Dom0);
        if pcpu == me {
            // Someone now waits behind the running vCPU: its slice counts.
            program_timer(&s, cpu::counter());
        }
    }
    drop(s);
    if pcpu == me {
        if preempt {
            RESCHED[me].store(true, Ordering::Release);
        }
        return;
    }
    // Another CPU: interrupt it so it re-flushes, preempts or stops idling.
    gic::send_sgi(gic::SGI_KICK, pcpu);
}

/// Dom0 answered vCPU `index`'s forwarded access: make it runnable.
pub fn wake_io(vm: &Vm, index: usize) {
    let Some(v) = vm.vcpus.get(index) else { return };
    if v.sched.compare_exchange(state::IO_WAIT, state::RUNNABLE, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return;
    }
    let (pcpu, mut s) = lock_home(v);
    enqueue(pcpu, &mut s, v, VcpuRef { vm: vm.id, vcpu: index as u8 }, Place::Front);
    s.boost_pending = true;
    let idle = s.current.is_none();
    if pcpu == cpu::index() {
        if idle {
            RESCHED[pcpu].store(true, Ordering::Release);
        }
        program_timer(&s, cpu::counter());
        return;
    }
    drop(s);
    gic::send_sgi(gic::SGI_KICK, pcpu);
}

/// The kick SGI arrived on this CPU: preempt the running vCPU if a
/// favoured one (dom0) is waiting, or if nothing runs.
pub fn on_kick() {
    let me = cpu::index();
    if crate::machine::stopping() {
        // The system is stopping: leave the vCPU, `run_next` parks.
        RESCHED[me].store(true, Ordering::Release);
        return;
    }
    let s = SCHED[me].lock();
    if s.runq.is_empty() {
        // Nothing was queued here (a parked vCPU claimed by `wake`, a
        // re-flush): no slice to time, and the soft timers are as this CPU
        // last programmed them, or fewer (other CPUs only cancel them; an
        // early EL2 timer interrupt then reprograms it).
        return;
    }
    program_timer(&s, cpu::counter());
    // Something was queued here by another CPU: run it now if it went to
    // the front (dom0, or a vCPU woken from WFI) and a guest is running.
    let preempt = match &s.current {
        None => true,
        Some((cur, _)) => cur.kind != VmKind::Dom0 && !s.runq.is_empty() && s.boost_pending,
    };
    if preempt && !s.runq.is_empty() {
        RESCHED[me].store(true, Ordering::Release);
    }
}

/// The EL2 timer fired: wake blocked vCPUs whose virtual timer is due,
/// end the slice if others wait, and hand a waiting vCPU to a less loaded
/// CPU if there is one (`push`).
pub fn on_timer() {
    let me = cpu::index();
    let now = cpu::counter();
    // One at a time, the lock dropped before each wake (which may lock
    // this CPU's scheduler again); no allocation in the interrupt.
    loop {
        let due = SCHED[me].lock().timers.pop_due(now);
        let Some(r) = due else { break };
        if let Some(vm) = vm::get(r.vm) {
            wake(&vm, r.vcpu as usize);
        }
    }
    push(me);
    let s = SCHED[me].lock();
    if !s.runq.is_empty() && s.current.is_none() {
        RESCHED[me].store(true, Ordering::Release);
    }
    program_timer(&s, now);
}

/// Load balancing, push side (from CPU `me`'s scheduler tick): if a CPU is
/// at least two runnable vCPUs lighter, one of those waiting here moves
/// there, and that CPU is kicked (it may be idle in WFI).
fn push(me: usize) {
    let mut tried = 0;
    while let Some(to) = schedpolicy::push_to(me, crate::machine::online_cpus(), &loads(), tried) {
        if migrate(me, to) {
            gic::send_sgi(gic::SGI_KICK, to);
            return;
        }
        tried |= 1 << to;
    }
}

/// Load balancing, pull side (CPU `me` has nothing to run): takes a
/// waiting vCPU from the busiest CPU, if that evens the loads out.
/// Returns whether one came.
fn pull(me: usize) -> bool {
    let mut tried = 0;
    while let Some(from) = schedpolicy::pull_from(me, crate::machine::online_cpus(), &loads(), tried) {
        if migrate(from, me) {
            return true;
        }
        tried |= 1 << from;
    }
    false
}

/// Moves one queued vCPU from CPU `from` to CPU `to`: the one nearest the
/// back of `from`'s queue that may run on `to`, has waited there at least
/// `schedpolicy::min_wait_to_move`, and is not `from`'s running vCPU.
/// Holds both CPUs' locks (lower index first), so the vCPU is never
/// outside a queue, a wake-up finds it on one CPU or the other, and `from`
/// has saved it: `switch_out` saves the running vCPU before it lets the
/// lock go, and a vCPU is only queued on `from` while `from` runs it if it
/// was woken between blocking and being switched out, which the running
/// check skips. Its wait goes on (`queued_at` is kept: time queued on
/// either CPU is stolen). Returns whether a vCPU moved.
fn migrate(from: usize, to: usize) -> bool {
    if !BALANCING.load(Ordering::Relaxed) || from == to || from >= cpu::MAX_CPUS || to >= cpu::MAX_CPUS {
        return false;
    }
    let (mut src, mut dst);
    if from < to {
        src = SCHED[from].lock();
        dst = SCHED[to].lock();
    } else {
        dst = SCHED[to].lock();
        src = SCHED[from].lock();
    }
    if !schedpolicy::worth_moving(src.load(), dst.load()) {
        return false; // the loads changed since they were read
    }
    let running = src.current.as_ref().map(|(vm, index)| (vm.id, *index));
    let now = cpu::counter();
    let min_wait = schedpolicy::min_wait_to_move(cpu::counter_frequency());
    let mut moved = None;
    let taken = src.runq.take_last(|r| {
        if running == Some((r.vm, r.vcpu as usize)) {
            return false;
        }
        let Some(vm) = vm::get(r.vm) else { return false };
        // A stopped VM is not moved: `forget_vm` (after `halt`) may already
        // have cleaned `to`'s queue.
        // An entry whose vCPU no longer waits to run (queued by a wake-up
        // that lost a race, see `wake`) is not moved: moving would change
        // `pcpu` away from the CPU holding its soft timer.
        let ok = vm.kind == VmKind::Guest
            && vm.runnable()
            && vm.vcpus.get(r.vcpu as usize).is_some_and(|v| v.sched.load(Ordering::Acquire) == state::RUNNABLE)
            && vm.vcpus.get(r.vcpu as usize).is_some_and(|v| v.may_run_on(to) && now.saturating_sub(v.queued_at.load(Ordering::Relaxed)) >= min_wait);
        if ok {
            moved = Some(vm);
        }
        ok
    });
    let (Some(r), Some(vm)) = (taken, moved) else { return false };
    let vcpu = &vm.vcpus[r.vcpu as usize];
    vcpu.set_pcpu(to);
    ASSIGNED[from].fetch_sub(1, Ordering::Relaxed);
    ASSIGNED[to].fetch_add(1, Ordering::Relaxed);
    end_lone_turn(&mut dst);
    dst.runq.push(r, false);
    publish_load(from, &src);
    publish_load(to, &dst);
    MIGRATIONS.fetch_add(1, Ordering::Relaxed);
    debug!("{}: vcpu{} moves from cpu{from} to cpu{to}", vm.name, r.vcpu);
    true
}

/// Queues `r` (which is `vcpu`) on `s`, CPU `pcpu`'s scheduler; from now
/// until it runs, its time is stolen from it. A vCPU already queued keeps
/// its place and its wait.
fn enqueue(pcpu: usize, s: &mut CpuSched, vcpu: &Vcpu, r: VcpuRef, place: Place) {
    if vcpu.io_counted.swap(false, Ordering::Relaxed) {
        s.io_waiting = s.io_waiting.saturating_sub(1);
        publish_load(pcpu, s);
    }
    end_lone_turn(s);
    let queued = match place {
        Place::Preempted => s.runq.push_preempted(r),
        _ => s.runq.push(r, place == Place::Front),
    };
    if queued {
        vcpu.queued_at.store(cpu::counter(), Ordering::Relaxed);
        publish_load(pcpu, s);
    }
}

/// Before a vCPU joins `s`'s empty queue: the running vCPU had the CPU to
/// itself, and what it ran past its slice meanwhile took nothing from
/// anyone and is no debt; its turn ends now.
fn end_lone_turn(s: &mut CpuSched) {
    if s.runq.is_empty() && s.current.is_some() && !s.parked {
        let now = cpu::counter();
        if now > s.slice_end {
            s.slice_end = now;
        }
    }
}

/// Arms CNTHP for the earliest of: the end of the slice (if others wait)
/// and the soft timers. A slice that is already over asks for a switch at
/// the end of this trap instead (the timer's line would stay asserted).
fn program_timer(s: &CpuSched, now: u64) {
    let me = cpu::index();
    let waiting = s.current.is_some() && !s.runq.is_empty();
    if waiting && now >= s.slice_end {
        RESCHED[me].store(true, Ordering::Release);
    }
    let slice = (waiting && !RESCHED[me].load(Ordering::Relaxed)).then_some(s.slice_end);
    let deadline = match (slice, s.timers.next_deadline()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    timer::set_hyp_deadline(deadline.map(|d| d.max(now)));
}

/// Blocks a vCPU in WFI (or CPU_SUSPEND) with nothing to take: until an interrupt is
/// pending for the vCPU or its virtual timer is due (`Leave`), unless an
/// interrupt came meanwhile (`Resume`).
pub fn block(vm: &Vm, vcpu: &Vcpu) -> Next {
    vcpu.sched.store(state::BLOCKED, Ordering::Release);
    // A wake-up between the caller's check and the store above found the
    // vCPU running and only set needs_flush: look again.
    if (vcpu.needs_flush.load(Ordering::Acquire) || vm.vgic.lock().has_work(vcpu.index))
        && vcpu.sched.compare_exchange(state::BLOCKED, state::RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    {
        return Next::Resume;
    }
    // Its virtual timer wakes it: while it stays loaded (`park`) the timer
    // itself fires; once it is switched out, a soft timer (`switch_out`).
    Next::Leave
}

/// WFE from the running vCPU: it waits for an event, most often for a lock
/// another vCPU holds. If other vCPUs wait for this CPU, it yields to them
/// (the lock's holder may be among them); if none does, it goes straight
/// back (WFE may always complete early), so a vCPU alone on its CPU pays
/// one trap. Looks only at this CPU's run queue.
pub fn wait_for_event() -> Next {
    let others_waiting = !SCHED[cpu::index()].lock().runq.is_empty();
    if others_waiting {
        Next::Yield
    } else {
        Next::Resume
    }
}

/// Takes the running vCPU `vcpu` off its CPU for good (CPU_OFF, VM
/// stopped): only `CPU_ON` or a restart runs it again.
pub fn stop(vcpu: &Vcpu) -> Next {
    vcpu.sched.store(state::OFF, Ordering::Release);
    Next::Leave
}

/// Whether this CPU should switch vCPUs at the end of the current trap.
#[inline]
pub fn resched_requested() -> bool {
    RESCHED[cpu::index()].load(Ordering::Relaxed)
}

/// Takes the running vCPU off this CPU: `save` stores its state, its run
/// time is counted, and unless `out` is `Leave` it goes back to the run
/// queue if it is still running (not blocked, waiting or off): where,
/// `out` says.
pub fn switch_out(out: Out, save: impl FnOnce(&Vcpu)) {
    let me = cpu::index();
    RESCHED[me].store(false, Ordering::Relaxed);
    let mut s = SCHED[me].lock();
    let now = cpu::counter();
    if let Some((vm, index)) = s.current.take() {
        CURRENT_VM[me].store(core::ptr::null_mut(), Ordering::Relaxed);
        CURRENT_VCPU[me].store(core::ptr::null_mut(), Ordering::Relaxed);
        if GUEST_IN[me].swap(0, Ordering::Relaxed) != 0 {
            GUEST_OUT[me].store(now, Ordering::Relaxed);
        }
        let vcpu = &vm.vcpus[index];
        let r = VcpuRef { vm: vm.id, vcpu: index as u8 };
        // Before the state is read: a wake-up that claimed it parked made
        // it runnable first, and left queueing it to this CPU.
        let claimed = s.parked && vcpu.parking.swap(parking::NONE, Ordering::AcqRel) == parking::WOKEN;
        let now_state = vcpu.sched.load(Ordering::Acquire);
        if now_state == state::BLOCKED {
            // Read from the CPU before `save` stops the timer. (If a wake
            // came first, the vCPU is runnable and needs none.)
            if let Some(deadline) = timer::vtimer_deadline() {
                s.timers.arm(r, deadline);
            }
        }
        save(vcpu);
        let requeue = out != Out::Leave && now_state == state::RUNNING;
        let mut balance = 0;
        if !core::mem::take(&mut s.parked) {
            count_run_time(me, &s, vcpu, now);
            if vm.kind == VmKind::Guest {
                // Charged as used; preempted before its slice ended, it
                // keeps the rest, and its place.
                let (budget, used) = (s.slice_end.saturating_sub(s.since), now.saturating_sub(s.since));
                let preempted = requeue && out == Out::Preempt;
                balance = schedpolicy::balance_after(budget, used, preempted, schedpolicy::max_debt(cpu::counter_frequency()));
            }
        }
        vcpu.slice_balance.store(balance, Ordering::Relaxed);
        if requeue {
            vcpu.sched.store(state::RUNNABLE, Ordering::Release);
            if vm.runnable() {
                enqueue(me, &mut s, vcpu, r, if balance > 0 { Place::Preempted } else { Place::Back });
            }
        } else if claimed {
            // Woken where it was parked, switched out before it ran: queued
            // as `queue_runnable` would have (a paused VM's unpause queues
            // its runnable vCPUs).
            if vm.runnable() {
                enqueue(me, &mut s, vcpu, r, Place::Front);
                s.boost_pending = true;
            }
        } else if now_state == state::IO_WAIT && !vcpu.io_counted.swap(true, Ordering::Relaxed) {
            // `wake_io` queues it (taking it out of this count) under this
            // lock, so it cannot have been answered and queued meanwhile
            // without the state showing it.
            s.io_waiting += 1;
        }
    }
    publish_load(me, &s);
}

/// Counter ticks `vcpu` of `vm` has run, its current stretch included
/// if it is running now. (Its `run_ticks` grow only when it is switched
/// out: a vCPU alone on its CPU may run for seconds without that.)
pub fn run_ticks(vm: &Vm, vcpu: &Vcpu) -> u64 {
    let (_, s) = lock_home(vcpu);
    let counted = vcpu.run_ticks.load(Ordering::Relaxed);
    match &s.current {
        Some((cur, index)) if !s.parked && cur.id == vm.id && *index == vcpu.index => {
            counted + cpu::counter().saturating_sub(s.since)
        }
        _ => counted,
    }
}

/// Adds the running vCPU's time since it was switched in (or resumed)
/// to its run time and this CPU's busy time.
fn count_run_time(me: usize, s: &CpuSched, vcpu: &Vcpu, now: u64) {
    vcpu.run_ticks.fetch_add(now.saturating_sub(s.since), Ordering::Relaxed);
    let from = BUSY_FROM.load(Ordering::Relaxed);
    if from != 0 {
        BUSY_TICKS[me].fetch_add(now.saturating_sub(s.since.max(from)), Ordering::Relaxed);
    }
}

/// The running vCPU `vcpu` of `vm` blocked (WFI) and nothing else waits
/// for this CPU, nor can be pulled from a busier one: it stays loaded
/// while the CPU idles ("parked"), so that its wake-up is an interrupt, a
/// list register write and a return to the guest, not a switch out and in.
/// Its virtual timer, still loaded, fires by itself. Returns false (switch
/// it out instead) if anything else could run here.
pub fn park(vm: &Vm, vcpu: &Vcpu) -> bool {
    let me = cpu::index();
    if !SCHED[me].lock().runq.is_empty() || crate::machine::stopping() || !vm.runnable() || pull(me) {
        return false;
    }
    let mut s = SCHED[me].lock();
    if !s.runq.is_empty() || vcpu.sched.load(Ordering::Acquire) != state::BLOCKED {
        return false; // woken or given work meanwhile
    }
    let now = cpu::counter();
    count_run_time(me, &s, vcpu, now);
    s.parked = true;
    vcpu.parking.store(parking::PARKED, Ordering::Release);
    if GUEST_IN[me].swap(0, Ordering::Relaxed) != 0 {
        GUEST_OUT[me].store(now, Ordering::Relaxed);
    }
    publish_load(me, &s);
    program_timer(&s, now);
    true
}

/// What a CPU with a parked vCPU does after an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parked {
    /// Nothing for it yet: idle on.
    Wait,
    /// It was woken and nothing else waits: it runs again, in place.
    Resume,
    /// Something else is to run here (or its VM may not run): switch it
    /// out (`switch_out`), which arms its soft timer.
    SwitchOut,
}

/// Decides, for the parked vCPU `vcpu` of `vm`, after an interrupt.
/// `has_work`: it has an interrupt to take (found here; another CPU that
/// gave it one has woken it through `wake` already).
pub fn parked_next(vm: &Vm, vcpu: &Vcpu, has_work: bool) -> Parked {
    let me = cpu::index();
    let ours = VcpuRef { vm: vm.id, vcpu: vcpu.index as u8 };
    let mut s = SCHED[me].lock();
    if !crate::machine::stopping() && vm.runnable() {
        let alone = s.runq.is_empty();
        let resume = if alone {
            if vcpu.parking.load(Ordering::Acquire) == parking::WOKEN {
                // Made runnable by `wake`, which left it to this CPU.
                vcpu.sched.store(state::RUNNING, Ordering::Release);
                true
            } else {
                has_work && vcpu.sched.compare_exchange(state::BLOCKED, state::RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
            }
        } else if s.runq.len() == 1 && s.runq.front_is(|r| *r == ours) && vcpu.sched.load(Ordering::Acquire) == state::RUNNABLE {
            // Woken by another CPU: queued here, alone.
            let _ = s.runq.pop();
            vcpu.sched.store(state::RUNNING, Ordering::Release);
            vcpu.queued_at.store(NOT_QUEUED, Ordering::Relaxed);
            true
        } else {
            false
        };
        if resume {
            let now = cpu::counter();
            s.parked = false;
            vcpu.parking.store(parking::NONE, Ordering::Release);
            start_slice(me, &mut s, vm, vcpu, now);
            RESCHED[me].store(false, Ordering::Relaxed);
            publish_load(me, &s);
            if !alone {
                program_timer(&s, now);
            }
            // (Else nothing waits here: its slice is not timed, and the EL2
            // timer is as `park` or a kick programmed it, for the soft
            // timers, at worst early: an early interrupt reprograms it.)
            return Parked::Resume;
        }
        if s.runq.is_empty() {
            drop(s);
            if !pull(me) {
                return Parked::Wait;
            }
        } else {
            drop(s);
        }
    } else {
        drop(s);
    }
    // It is switched out: with an interrupt to take, it waits in the run
    // queue, not blocked.
    if has_work {
        wake(vm, vcpu.index);
    }
    Parked::SwitchOut
}

/// What physical CPU `cpu` has loaded, for reports: the VM and vCPU, and
/// whether it is parked (blocked, kept loaded); how many vCPUs wait in its
/// run queue.
pub fn loaded_on(cpu: usize) -> (Option<(VmId, usize, bool)>, usize) {
    let Some(s) = SCHED.get(cpu) else { return (None, 0) };
    let s = s.lock();
    (s.current.as_ref().map(|(vm, index)| (vm.id, *index, s.parked)), s.runq.len())
}

/// Whether `vcpu` is loaded on its CPU: running, or parked there.
pub fn is_loaded(vcpu: &Vcpu) -> bool {
    CURRENT_VCPU.get(vcpu.pcpu()).is_some_and(|c| core::ptr::eq(c.load(Ordering::Acquire), vcpu))
}

/// Makes the next runnable vCPU queued on this CPU the running one (reset
/// first if it is being switched on) and returns it. With none queued it
/// pulls one from the busiest CPU (`pull`); `None` if nothing is runnable
/// (the EL2 timer then covers only blocked vCPUs' timers).
pub fn switch_in_next() -> Option<(&'static Vm, &'static Vcpu)> {
    let me = cpu::index();
    loop {
        let mut s = SCHED[me].lock();
        while let Some(r) = s.runq.pop() {
            let Some(vm) = vm::get(r.vm) else { continue };
            let Some(vcpu) = vm.vcpus.get(r.vcpu as usize) else { continue };
            if !vm.runnable() || vcpu.sched.load(Ordering::Acquire) != state::RUNNABLE || vcpu.pcpu() != me {
                // Paused or stopped: unpause queues it again, and its wait
                // (`queued_at`) starts afresh then. (Placed elsewhere: a
                // stale entry, never run here.)
                continue;
            }
            if vm.kind == VmKind::Guest && !s.runq.is_empty() {
                // It owes a whole slice or more: this turn pays for one,
                // and it waits on at the back.
                let full = slice_ticks(vm.weight, cpu::counter_frequency());
                let balance = vcpu.slice_balance.load(Ordering::Relaxed);
                if schedpolicy::turn_budget(full, balance).is_none() {
                    vcpu.slice_balance.store(balance.saturating_add(full as i64), Ordering::Relaxed);
                    s.runq.push(r, false);
                    continue;
                }
            }
            return Some(make_running(me, &mut s, vm, r.vcpu as usize));
        }
        publish_load(me, &s);
        program_timer(&s, cpu::counter());
        drop(s);
        if !pull(me) {
            return None;
        }
    }
}

/// `vcpu` of `vm` starts running on CPU `me` at `now` (switched in, or
/// resumed where it was parked): its run time and slice count from here.
/// A guest's turn is its slice less what it owes, or what was left of its
/// slice when a favoured vCPU preempted it (`schedpolicy::turn_budget`);
/// a debt of a whole slice or more is forgiven when nothing else waits
/// (`switch_in_next` skips its turn otherwise).
fn start_slice(me: usize, s: &mut CpuSched, vm: &Vm, vcpu: &Vcpu, now: u64) {
    s.since = now;
    s.boost_pending = false;
    let full = s.full_slice(vm.weight);
    let balance = vcpu.slice_balance.swap(0, Ordering::Relaxed);
    let budget = if vm.kind == VmKind::Guest { schedpolicy::turn_budget(full, balance).unwrap_or(full) } else { full };
    s.slice_end = now + budget;
    GUEST_IN[me].store(if vm.kind == VmKind::Guest { now } else { 0 }, Ordering::Relaxed);
}

fn make_running(me: usize, s: &mut CpuSched, vm: Arc<Vm>, index: usize) -> (&'static Vm, &'static Vcpu) {
    let now = cpu::counter();
    // SAFETY: the Arc moves into SCHED[me].current below, which keeps the VM
    // alive while it runs here; `switch_out` clears CURRENT_* before it lets
    // the Arc go, and nothing keeps these references past that.
    let vm_ref: &'static Vm = unsafe { &*Arc::as_ptr(&vm) };
    let vcpu: &'static Vcpu = &vm_ref.vcpus[index];
    if vcpu.power.load(Ordering::Acquire) == power::ON_PENDING {
        let start = *vcpu.start.lock();
        // SAFETY: this is the vCPU's CPU and the vCPU is not running.
        unsafe { vcpu.reset(start, vm.cntvoff) };
        vcpu.power.store(power::ON, Ordering::Release);
        debug!("{}: vcpu{} starts at {:#x} on cpu{me}", vm.name, index, start.entry);
    }
    vcpu.sched.store(state::RUNNING, Ordering::Release);
    let queued_at = vcpu.queued_at.swap(NOT_QUEUED, Ordering::Relaxed);
    if queued_at != NOT_QUEUED {
        // It was runnable and waited for this CPU: stolen time, which its
        // guest sees before it runs (DEN0057).
        vcpu.steal_ticks.fetch_add(now.saturating_sub(queued_at), Ordering::Relaxed);
        crate::pvtime::publish(&vm, vcpu);
    }
    if vm.kind == VmKind::Guest && BUSY_FROM.load(Ordering::Relaxed) == 0 {
        BUSY_FROM.store(now, Ordering::Relaxed);
    }
    start_slice(me, s, &vm, vcpu, now);
    s.timers.cancel(&VcpuRef { vm: vm.id, vcpu: index as u8 });
    CURRENT_VM[me].store(Arc::as_ptr(&vm) as *mut Vm, Ordering::Relaxed);
    CURRENT_VCPU[me].store(vcpu as *const Vcpu as *mut Vcpu, Ordering::Relaxed);
    s.current = Some((vm, index));
    publish_load(me, s);
    program_timer(s, now);
    (vm_ref, vcpu)
}

/// Enables the interrupts every CPU needs for scheduling.
pub fn init_cpu() {
    gic::set_enabled(gic::SGI_KICK, true);
    gic::set_enabled(HYP_TIMER_PPI, true);
    if let Some(maintenance) = crate::machine::maintenance_intid() {
        gic::set_enabled(maintenance, true);
    }
    timer::set_hyp_deadline(None);
}

/// Is `intid` the scheduler's timer?
pub fn is_timer(intid: u32) -> bool {
    intid == HYP_TIMER_PPI
}

/// Removes every queued or timed entry of `vm` from every CPU (it is being
/// destroyed; none of its vCPUs runs).
pub fn forget_vm(vm: &Vm, online: usize) {
    for v in &vm.vcpus {
        let (pcpu, mut s) = lock_home(v);
        if v.io_counted.swap(false, Ordering::Relaxed) {
            s.io_waiting = s.io_waiting.saturating_sub(1);
            publish_load(pcpu, &s);
        }
    }
    let vm = vm.id;
    for (i, s) in SCHED.iter().enumerate().take(online) {
        let mut s = s.lock();
        s.runq.retain(|r| r.vm != vm);
        for v in 0..crate::vgic::MAX_VCPUS as u8 {
            s.timers.cancel(&VcpuRef { vm, vcpu: v });
        }
        publish_load(i, &s);
    }
}

/// Counter ticks physical CPU `cpu` has spent running vCPUs (dom0's too)
/// since the first guest vCPU ran; the running one's current stretch is not
/// yet counted.
pub fn busy_ticks(cpu: usize) -> u64 {
    BUSY_TICKS.get(cpu).map_or(0, |b| b.load(Ordering::Relaxed))
}

/// vCPUs the balancer has moved between physical CPUs.
pub fn migrations() -> u64 {
    MIGRATIONS.load(Ordering::Relaxed)
}

/// Runnable vCPUs on physical CPU `cpu`, the running one included.
#[cfg(test)]
pub fn load(cpu: usize) -> usize {
    LOAD.get(cpu).map_or(0, |l| l.load(Ordering::Relaxed))
}

/// Test support: forget every CPU's queues, timers, placements and
/// running vCPU.
#[cfg(any(test, fuzzing))]
pub fn reset_for_test() {
    for i in 0..cpu::MAX_CPUS {
        *SCHED[i].lock() = CpuSched::new();
        CURRENT_VM[i].store(core::ptr::null_mut(), Ordering::Relaxed);
        CURRENT_VCPU[i].store(core::ptr::null_mut(), Ordering::Relaxed);
        RESCHED[i].store(false, Ordering::Relaxed);
        ASSIGNED[i].store(0, Ordering::Relaxed);
        LOAD[i].store(0, Ordering::Relaxed);
        BUSY_TICKS[i].store(0, Ordering::Relaxed);
    }
    MIGRATIONS.store(0, Ordering::Relaxed);
    BUSY_FROM.store(0, Ordering::Relaxed);
    BALANCING.store(true, Ordering::Relaxed);
}

/// Test support: vCPU `index` of `vm` runs on this CPU now (as if
/// `switch_in` had entered it).
#[cfg(any(test, fuzzing))]
pub fn make_current(vm: Arc<Vm>, index: usize) {
    let me = cpu::index();
    let mut s = SCHED[me].lock();
    vm.vcpus[index].sched.store(state::RUNNING, Ordering::Release);
    CURRENT_VM[me].store(Arc::as_ptr(&vm) as *mut Vm, Ordering::Relaxed);
    CURRENT_VCPU[me].store(&vm.vcpus[index] as *const Vcpu as *mut Vcpu, Ordering::Relaxed);
    s.since = cpu::counter();
    s.slice_end = s.since + slice_ticks(vm.weight, cpu::counter_frequency());
    s.current = Some((vm, index));
    publish_load(me, &s);
}

/// Test support: the vCPUs queued on physical CPU `pcpu`, in order.
#[cfg(test)]
pub fn queued_on(pcpu: usize) -> alloc::vec::Vec<VcpuRef> {
    let mut s = SCHED[pcpu].lock();
    let mut out = alloc::vec::Vec::new();
    while let Some(r) = s.runq.pop() {
        out.push(r);
    }
    for &r in &out {
        s.runq.push(r, false);
    }
    out
}

/// Test support: queues vCPU `index` of `vm` on CPU `pcpu` whatever its
/// state (as a wake-up that lost a race used to).
#[cfg(test)]
pub fn enqueue_for_test(pcpu: usize, vm: &Vm, index: usize) {
    let mut s = SCHED[pcpu].lock();
    enqueue(pcpu, &mut s, &vm.vcpus[index], VcpuRef { vm: vm.id, vcpu: index as u8 }, Place::Back);
}

/// Test support: whether this CPU will switch at the end of the trap.
#[cfg(test)]
pub fn resched_pending() -> bool {
    RESCHED[cpu::index()].load(Ordering::Relaxed)
}

/// Test support: this CPU stops running its vCPU (as `schedule` would,
/// without saving or picking another).
#[cfg(test)]
pub fn forget_current_for_test() {
    let me = cpu::index();
    let mut s = SCHED[me].lock();
    s.current = None;
    publish_load(me, &s);
    drop(s);
    CURRENT_VM[me].store(core::ptr::null_mut(), Ordering::Relaxed);
    CURRENT_VCPU[me].store(core::ptr::null_mut(), Ordering::Relaxed);
}
