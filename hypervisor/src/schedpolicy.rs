//! Scheduling policy, arch-neutral and host-tested: per-physical-CPU run
//! queues with weighted time slices, favoured (dom0) vCPUs first, soft
//! timers for blocked vCPUs, placement of new vCPUs, and which CPUs the
//! load balancer moves a vCPU between.
//!
//! The mechanism (context switch, the EL2 timer, IPIs) is in `sched`; this
//! module only decides.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Default weight; a vCPU's slice is `BASE_SLICE * weight / DEFAULT_WEIGHT`.
pub const DEFAULT_WEIGHT: u32 = 256;
pub const MAX_WEIGHT: u32 = 1024;

/// Time slice at the default weight, in counter ticks per second units:
/// callers pass the counter frequency.
pub fn slice_ticks(weight: u32, counter_hz: u64) -> u64 {
    const BASE_SLICE_MS: u64 = 10;
    let weight = weight.clamp(1, MAX_WEIGHT) as u64;
    (counter_hz * BASE_SLICE_MS / 1000 * weight / DEFAULT_WEIGHT as u64).max(1)
}

/// A guest vCPU's turns are charged as used. Its balance (counter ticks)
/// is what a favoured vCPU's preemption left of its last slice (> 0: it
/// runs that much, at its place), or by how much its turns overran their
/// slices (< 0: the EL2 timer came late, or a trap took long; under QEMU
/// a CPU thread the host descheduled sees its timer interrupt tens of
/// milliseconds late). Without the charge, that lateness comes on top of
/// every turn alike, short or long, and evens out shares whatever the
/// weights. Returns how long its next turn may be, or `None` if it still
/// owes a whole slice: it skips this turn, which pays a slice of its
/// debt (the caller adds `full` to the balance).
pub fn turn_budget(full: u64, balance: i64) -> Option<u64> {
    if balance > 0 {
        return Some(balance as u64);
    }
    let budget = full as i64 + balance;
    (budget > 0).then_some(budget as u64)
}

/// The balance after a turn with `budget` ticks of which it used `used`:
/// the overrun as a debt (at most `max_debt`), the rest of its budget if
/// a favoured vCPU `preempted` it, otherwise nothing (what a vCPU leaves
/// by blocking or yielding is not kept).
pub fn balance_after(budget: u64, used: u64, preempted: bool, max_debt: u64) -> i64 {
    if used > budget {
        -((used - budget).min(max_debt).min(i64::MAX as u64) as i64)
    } else if preempted {
        (budget - used).min(i64::MAX as u64) as i64
    } else {
        0
    }
}

/// The most a vCPU may owe: a second (under QEMU on a loaded host, a CPU
/// thread is at times descheduled for more than a tenth of that).
pub fn max_debt(counter_hz: u64) -> u64 {
    counter_hz
}

/// One physical CPU's runnable vCPUs (handles `T`), in the order they run.
/// Favoured vCPUs (dom0's, woken for IO) go to the front; a vCPU they
/// preempted goes right behind them (`push_preempted`), so it loses no
/// turn. Each entry remembers whether it was queued as favoured.
#[derive(Debug)]
pub struct RunQueue<T> {
    queue: VecDeque<(T, bool)>,
}

impl<T: PartialEq + Clone> Default for RunQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: PartialEq + Clone> RunQueue<T> {
    pub const fn new() -> Self {
        RunQueue { queue: VecDeque::new() }
    }

    /// Makes `v` runnable; a vCPU already queued is not queued twice.
    /// Returns whether it was newly queued.
    pub fn push(&mut self, v: T, favoured: bool) -> bool {
        if self.contains(&v) {
            return false;
        }
        if favoured {
            self.queue.push_front((v, true));
        } else {
            self.queue.push_back((v, false));
        }
        true
    }

    /// Queues `v`, which a favoured vCPU preempted in the middle of its
    /// slice, behind the favoured ones and ahead of the others: it
    /// continues its turn once they are done (with what was left of its
    /// slice: the caller keeps that). Sent to the back instead, a vCPU with
    /// a long slice (a high weight) would lose more of its turn to each
    /// preemption than one with a short slice, and frequent preemptions
    /// would even out shares whatever the weights. Returns whether it was
    /// newly queued.
    pub fn push_preempted(&mut self, v: T) -> bool {
        if self.contains(&v) {
            return false;
        }
        let at = self.queue.iter().position(|&(_, favoured)| !favoured).unwrap_or(self.queue.len());
        self.queue.insert(at, (v, false));
        true
    }

    fn contains(&self, v: &T) -> bool {
        self.queue.iter().any(|(x, _)| x == v)
    }

    /// The next vCPU to run, removed from the queue.
    pub fn pop(&mut self) -> Option<T> {
        self.queue.pop_front().map(|(v, _)| v)
    }

    /// Is anything waiting for this CPU?
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Is a favoured vCPU waiting (then the running one is preempted)?
    pub fn front_is(&self, pred: impl Fn(&T) -> bool) -> bool {
        self.queue.front().is_some_and(|(v, _)| pred(v))
    }

    /// Removes `v` wherever it is (its VM is paused or destroyed).
    pub fn remove(&mut self, v: &T) {
        self.queue.retain(|(x, _)| x != v);
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.queue.retain(|(v, _)| keep(v));
    }

    /// Removes and returns the vCPU nearest the back that `movable`
    /// accepts: the one that would wait longest here (the balancer moves
    /// it to another CPU).
    pub fn take_last(&mut self, mut movable: impl FnMut(&T) -> bool) -> Option<T> {
        let at = self.queue.iter().rposition(|(v, _)| movable(v))?;
        self.queue.remove(at).map(|(v, _)| v)
    }
}

/// Blocked vCPUs of one physical CPU with the counter value at which each
/// must wake (its virtual timer's deadline), if any.
#[derive(Debug)]
pub struct SoftTimers<T> {
    entries: Vec<(T, u64)>,
}

impl<T: PartialEq + Clone> Default for SoftTimers<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: PartialEq + Clone> SoftTimers<T> {
    pub const fn new() -> Self {
        SoftTimers { entries: Vec::new() }
    }

    /// Sets (or replaces) `v`'s wake-up deadline.
    pub fn arm(&mut self, v: T, deadline: u64) {
        self.cancel(&v);
        self.entries.push((v, deadline));
    }

    pub fn cancel(&mut self, v: &T) {
        self.entries.retain(|(x, _)| x != v);
    }

    /// `v`'s deadline, if it has one.
    pub fn deadline_of(&self, v: &T) -> Option<u64> {
        self.entries.iter().find(|(x, _)| x == v).map(|&(_, d)| d)
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.entries.iter().map(|&(_, d)| d).min()
    }

    /// Removes and returns one vCPU whose deadline is at or before `now`
    /// (`None`: none is due). Called in a loop, it expires them all without
    /// allocating (this runs in the timer interrupt).
    pub fn pop_due(&mut self, now: u64) -> Option<T> {
        let i = self.entries.iter().position(|&(_, d)| d <= now)?;
        Some(self.entries.swap_remove(i).0)
    }
}

/// Chooses the physical CPU for a new vCPU: among those `allowed` (bit i =
/// CPU i; 0 = any) and online, the least loaded (`load`: runnable vCPUs,
/// the running one included), then the one with the fewest vCPUs assigned
/// (blocked ones too); ties go to the lowest number. `None` if no allowed
/// CPU is online.
pub fn place(allowed: u64, online: usize, load: &[usize], assigned: &[usize]) -> Option<usize> {
    let at = |v: &[usize], cpu: usize| v.get(cpu).copied().unwrap_or(0);
    (0..online.min(64))
        .filter(|&cpu| allowed == 0 || allowed & (1 << cpu) != 0)
        .min_by_key(|&cpu| (at(load, cpu), at(assigned, cpu), cpu))
}

/// A queued vCPU moves to another CPU only once it has waited this long
/// (a tenth of a default slice): one that waits behind a short stay of
/// dom0, or behind a vCPU back from a console write, runs again here
/// soon, and moving it would only make the CPUs trade vCPUs back and forth.
pub fn min_wait_to_move(counter_hz: u64) -> u64 {
    counter_hz / 1000
}

/// Moving one vCPU from a CPU with `from` runnable vCPUs to one with `to`
/// evens them out only if the gap is at least two; a smaller one would
/// just swap sides (and the vCPU would bounce back).
pub fn worth_moving(from: usize, to: usize) -> bool {
    from >= to + 2
}

/// Load balancing, pull side: CPU `me` (idle, or lightly loaded) takes a
/// queued vCPU from the busiest of the `online` CPUs not in `tried` (bit
/// i = CPU i: those that had nothing movable), if moving one evens the
/// loads out (`load[i]`: CPU i's runnable vCPUs, the running one
/// included). Ties go to the lowest number.
pub fn pull_from(me: usize, online: usize, load: &[usize], tried: u64) -> Option<usize> {
    let mine = load.get(me).copied().unwrap_or(0);
    (0..online.min(load.len()).min(64))
        .filter(|&cpu| cpu != me && tried & (1 << cpu) == 0 && worth_moving(load[cpu], mine))
        .max_by_key(|&cpu| (load[cpu], core::cmp::Reverse(cpu)))
}

/// Load balancing, push side: CPU `me`, at its scheduler tick, hands one
/// of its queued vCPUs to the least loaded of the `online` CPUs not in
/// `tried` (none of its vCPUs may run there), if that evens the loads
/// out. Ties go to the lowest number.
pub fn push_to(me: usize, online: usize, load: &[usize], tried: u64) -> Option<usize> {
    let mine = load.get(me).copied().unwrap_or(0);
    (0..online.min(load.len()).min(64))
        .filter(|&cpu| cpu != me && tried & (1 << cpu) == 0 && worth_moving(mine, load[cpu]))
        .min_by_key(|&cpu| (load[cpu], cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs CPU-bound vCPUs (id, weight) round-robin on one CPU for
    /// `total` ticks; returns ticks each got.
    fn simulate(vcpus: &[(u32, u32)], total: u64, hz: u64) -> Vec<u64> {
        let mut q = RunQueue::new();
        for &(id, _) in vcpus {
            q.push(id, false);
        }
        let mut got = vec![0u64; vcpus.len()];
        let mut now = 0;
        while now < total {
            let id = q.pop().unwrap();
            let weight = vcpus.iter().find(|v| v.0 == id).unwrap().1;
            let run = slice_ticks(weight, hz).min(total - now);
            got[id as usize] += run;
            now += run;
            q.push(id, false);
        }
        got
    }

    /// As `simulate`, with the scheduler's interrupt `late` ticks late at
    /// every turn's end, each turn charged as used (`turn_budget`,
    /// `balance_after`), or not (`charge` false: whole slices, as before).
    fn simulate_late(vcpus: &[(u32, u32)], total: u64, hz: u64, late: u64, charge: bool) -> Vec<u64> {
        let mut q = RunQueue::new();
        for &(id, _) in vcpus {
            q.push(id, false);
        }
        let mut got = vec![0u64; vcpus.len()];
        let mut balance = vec![0i64; vcpus.len()];
        let mut now = 0;
        while now < total {
            let id = q.pop().unwrap();
            let (i, full) = (id as usize, slice_ticks(vcpus[id as usize].1, hz));
            let budget = if charge { turn_budget(full, balance[i]) } else { Some(full) };
            let Some(budget) = budget else {
                balance[i] += full as i64;
                q.push(id, false);
                continue;
            };
            let run = (budget + late).min(total - now);
            got[i] += run;
            now += run;
            balance[i] = balance_after(budget, run, false, max_debt(hz));
            q.push(id, false);
        }
        got
    }

    #[test]
    fn late_timer_interrupts_are_charged_and_shares_still_follow_weights() {
        let hz = 62_500_000;
        // 25 ms late at every turn's end: 10 ms and 40 ms slices become
        // 35 and 65 ms turns, nowhere near 1:4 ...
        let weights = [(0, 1024), (1, 256)];
        let got = simulate_late(&weights, 30 * hz, hz, hz / 40, false);
        let ratio = got[0] as f64 / got[1] as f64;
        assert!(ratio < 2.0, "uncharged lateness evens shares out: {got:?}");
        // ... unless the overrun is charged.
        let got = simulate_late(&weights, 30 * hz, hz, hz / 40, true);
        let ratio = got[0] as f64 / got[1] as f64;
        assert!((ratio - 4.0).abs() < 0.2, "{got:?}: ratio {ratio}");
    }

    #[test]
    fn turns_are_charged_as_used() {
        let full = 1000;
        assert_eq!(turn_budget(full, 0), Some(1000));
        assert_eq!(turn_budget(full, 300), Some(300), "the rest of a preempted slice");
        assert_eq!(turn_budget(full, -400), Some(600), "a debt shortens the next turn");
        assert_eq!(turn_budget(full, -1000), None, "a whole slice owed: this turn is skipped");
        assert_eq!(balance_after(1000, 1250, false, 10_000), -250);
        assert_eq!(balance_after(1000, 90_000, true, 10_000), -10_000, "debts are capped");
        assert_eq!(balance_after(1000, 400, true, 10_000), 600, "preempted: the rest is kept");
        assert_eq!(balance_after(1000, 400, false, 10_000), 0, "blocked or yielded: nothing is kept");
    }

    #[test]
    fn a_preempted_vcpu_goes_behind_the_favoured_ones_and_ahead_of_the_others() {
        let mut q = RunQueue::new();
        q.push(1, false);
        q.push(2, false);
        q.push(8, true);
        q.push(9, true);
        assert!(q.push_preempted(5));
        assert!(!q.push_preempted(5), "already queued");
        assert_eq!((q.pop(), q.pop(), q.pop(), q.pop(), q.pop()), (Some(9), Some(8), Some(5), Some(1), Some(2)));
        q.push_preempted(5);
        assert_eq!(q.pop(), Some(5), "with no favoured one waiting it runs next");
    }

    #[test]
    fn equal_weights_share_a_cpu_equally() {
        let got = simulate(&[(0, 256), (1, 256)], 62_500_000, 62_500_000);
        let (a, b) = (got[0] as f64, got[1] as f64);
        assert!((a - b).abs() / (a + b) < 0.05, "{got:?}");
    }

    #[test]
    fn weights_give_proportional_shares() {
        let got = simulate(&[(0, 512), (1, 256)], 62_500_000, 62_500_000);
        let ratio = got[0] as f64 / got[1] as f64;
        assert!((ratio - 2.0).abs() < 0.1, "{got:?}");
    }

    #[test]
    fn favoured_vcpus_run_first_and_nothing_is_queued_twice() {
        let mut q = RunQueue::new();
        assert!(q.push(1, false));
        assert!(q.push(2, false));
        assert!(!q.push(1, false), "already queued");
        assert!(q.push(0, true));
        assert_eq!(q.len(), 3);
        assert!(q.front_is(|&v| v == 0));
        assert_eq!((q.pop(), q.pop(), q.pop(), q.pop()), (Some(0), Some(1), Some(2), None));
    }

    #[test]
    fn removed_vcpus_do_not_run() {
        let mut q = RunQueue::new();
        for v in 0..4 {
            q.push(v, false);
        }
        q.remove(&2);
        q.retain(|&v| v != 0);
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(1), Some(3), None));
    }

    #[test]
    fn soft_timers_expire_in_deadline_order_and_can_be_rearmed() {
        let mut t = SoftTimers::new();
        t.arm('a', 300);
        t.arm('b', 100);
        t.arm('a', 200);
        assert_eq!(t.next_deadline(), Some(100));
        assert_eq!(t.pop_due(150), Some('b'));
        assert_eq!(t.pop_due(150), None, "'a' is not due yet");
        assert_eq!(t.next_deadline(), Some(200));
        t.arm('c', 250);
        let mut due = [t.pop_due(260), t.pop_due(260), t.pop_due(260)];
        due.sort();
        assert_eq!(due, [None, Some('a'), Some('c')], "every due one, once");
        t.arm('a', 300);
        t.cancel(&'a');
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.pop_due(u64::MAX), None);
    }

    #[test]
    fn placement_respects_pinning_and_balances() {
        let idle = [0; 4];
        assert_eq!(place(0, 4, &idle, &[2, 1, 1, 0]), Some(3));
        assert_eq!(place(0b0110, 4, &idle, &[0, 3, 1, 0]), Some(2));
        assert_eq!(place(0b1000, 2, &idle, &[0, 0]), None, "pinned to an offline CPU");
        assert_eq!(place(0, 1, &idle, &[5]), Some(0));
    }

    #[test]
    fn placement_prefers_the_least_loaded_cpu_over_the_least_assigned() {
        // CPU 0 has fewer vCPUs, but its one spins; CPU 1's three sleep.
        assert_eq!(place(0, 2, &[1, 0], &[1, 3]), Some(1));
        // Pinned: the least loaded of the allowed ones.
        assert_eq!(place(0b101, 3, &[2, 0, 1], &[0, 0, 0]), Some(2));
    }

    #[test]
    fn an_idle_cpu_pulls_from_the_busiest_and_only_when_it_evens_out() {
        assert_eq!(pull_from(3, 4, &[2, 3, 3, 0], 0), Some(1), "busiest, lowest number first");
        assert_eq!(pull_from(0, 4, &[0, 1, 1, 1], 0), None, "each runs its only vCPU: nothing queued to take");
        assert_eq!(pull_from(0, 3, &[1, 2, 2], 0), None, "a gap of one would only swap sides");
        assert_eq!(pull_from(0, 3, &[1, 2, 3], 0), Some(2));
        assert_eq!(pull_from(0, 2, &[0, 0, 9], 0), None, "CPU 2 is offline");
        assert_eq!(pull_from(3, 4, &[2, 3, 3, 0], 0b010), Some(2), "CPU 1 had nothing movable");
    }

    #[test]
    fn a_loaded_cpu_pushes_to_the_least_loaded() {
        assert_eq!(push_to(0, 4, &[3, 1, 0, 2], 0), Some(2));
        assert_eq!(push_to(0, 4, &[2, 1, 1, 1], 0), None, "a gap of one would only swap sides");
        assert_eq!(push_to(1, 3, &[0, 2, 0], 0), Some(0));
        assert_eq!(push_to(0, 1, &[5], 0), None, "alone");
        assert_eq!(push_to(0, 4, &[3, 1, 0, 2], 0b100), Some(1), "none may run on CPU 2");
    }

    /// Applies pull and push decisions until none is left (pulls first
    /// if `pulls`, as idle CPUs pull at once; then pushes),
    /// returning the loads and the number of moves.
    fn balance(mut load: [usize; 8], pulls: bool) -> ([usize; 8], usize) {
        let mut moves = 0;
        loop {
            // Only a CPU with nothing to run pulls (`sched::switch_in_next`).
            let pull = || (0..8).filter(|&me| load[me] == 0).find_map(|me| pull_from(me, 8, &load, 0).map(|from| (from, me)));
            let push = || (0..8).find_map(|me| push_to(me, 8, &load, 0).map(|to| (me, to)));
            let step = if pulls { pull().or_else(push) } else { push() };
            let Some((from, to)) = step else { break };
            load[from] -= 1;
            load[to] += 1;
            moves += 1;
            assert!(moves <= 12, "bouncing: {load:?}");
        }
        (load, moves)
    }

    #[test]
    fn balancing_converges_without_bouncing() {
        // 12 runnable vCPUs on 4 of 8 CPUs: idle CPUs pulling even them
        // out in the fewest moves (4), and pushes alone get there too; then
        // nothing moves any more.
        for pulls in [true, false] {
            let (load, moves) = balance([3, 3, 3, 3, 0, 0, 0, 0], pulls);
            assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1, "{load:?}");
            assert_eq!(load.iter().sum::<usize>(), 12);
            if pulls {
                assert_eq!(moves, 4, "{load:?}");
            }
        }
    }

    #[test]
    fn take_last_takes_the_movable_vcpu_nearest_the_back() {
        let mut q = RunQueue::new();
        for v in 0..4 {
            q.push(v, false);
        }
        assert_eq!(q.take_last(|&v| v != 3), Some(2));
        assert_eq!(q.take_last(|&v| v > 5), None);
        assert_eq!((q.pop(), q.pop(), q.pop(), q.pop()), (Some(0), Some(1), Some(3), None));
    }

    #[test]
    fn slices_scale_with_weight_and_never_vanish() {
        let hz = 62_500_000;
        assert_eq!(slice_ticks(256, hz), 625_000);
        assert_eq!(slice_ticks(512, hz), 1_250_000);
        assert!(slice_ticks(1, 1000) >= 1);
        assert_eq!(slice_ticks(100_000, hz), slice_ticks(MAX_WEIGHT, hz));
    }
}
