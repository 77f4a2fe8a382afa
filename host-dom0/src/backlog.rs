//! Completions that found the completion ring full: kept, in order, until
//! the hypervisor has taken enough of the ring, never dropped (a dropped
//! completion would leave its vCPU blocked for good).
//!
//! Back-pressure: while anything waits here dom0 takes no new request from
//! the request ring (`ioreq::drain`), so the backlog holds at most one
//! batch (the request ring's 64 slots). Once the request ring is full the
//! hypervisor makes the requesting vCPUs give their CPU away and repeat
//! their access later: guests slow down, nothing is lost. The backlog is
//! retried at every IO event and from dom0's event loop (`evloop`).
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;

use hv_abi::ioreq::IoCompletion;

#[derive(Debug, Default)]
pub struct Backlog {
    waiting: VecDeque<IoCompletion>,
    /// Completions that ever had to wait here.
    delayed: u64,
}

impl Backlog {
    pub const fn new() -> Self {
        Backlog { waiting: VecDeque::new(), delayed: 0 }
    }

    /// Hands `c` to `put` (which returns `false` if the ring is full),
    /// unless older completions are still waiting: then, or if `put`
    /// refuses, `c` waits behind them.
    pub fn send(&mut self, c: IoCompletion, mut put: impl FnMut(&IoCompletion) -> bool) {
        if self.waiting.is_empty() && put(&c) {
            return;
        }
        self.waiting.push_back(c);
        self.delayed += 1;
    }

    /// Hands waiting completions to `put`, oldest first, until it refuses
    /// one. Returns whether none is left.
    pub fn flush(&mut self, mut put: impl FnMut(&IoCompletion) -> bool) -> bool {
        while let Some(c) = self.waiting.front() {
            if !put(c) {
                return false;
            }
            self.waiting.pop_front();
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Completions that ever had to wait for room.
    pub fn delayed(&self) -> u64 {
        self.delayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use hv_abi::ioreq::IoStatus;

    /// A completion ring of `room` free slots.
    struct Ring {
        room: usize,
        got: Vec<u64>,
    }

    impl Ring {
        fn put(&mut self, c: &IoCompletion) -> bool {
            if self.room == 0 {
                return false;
            }
            self.room -= 1;
            self.got.push(c.seq);
            true
        }
    }

    fn c(seq: u64) -> IoCompletion {
        IoCompletion::new(seq, IoStatus::Ok, seq * 10)
    }

    #[test]
    fn completions_go_straight_out_while_the_ring_has_room() {
        let mut b = Backlog::new();
        let mut ring = Ring { room: 8, got: Vec::new() };
        for seq in 1..=3 {
            b.send(c(seq), |c| ring.put(c));
        }
        assert_eq!(ring.got, [1, 2, 3]);
        assert!(b.is_empty());
        assert_eq!(b.delayed(), 0);
    }

    #[test]
    fn a_full_ring_keeps_completions_in_order_and_drops_none() {
        let mut b = Backlog::new();
        let mut ring = Ring { room: 2, got: Vec::new() };
        for seq in 1..=5 {
            b.send(c(seq), |c| ring.put(c));
        }
        assert_eq!(ring.got, [1, 2]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.delayed(), 3);
        // Still full: nothing moves, nothing is lost.
        assert!(!b.flush(|c| ring.put(c)));
        assert_eq!(b.len(), 3);
        // A newer completion never overtakes the waiting ones, even if
        // the ring has room when it comes.
        ring.room = 1;
        b.send(c(6), |c| ring.put(c));
        assert_eq!(ring.got, [1, 2]);
        assert_eq!(b.delayed(), 4);
        ring.room = 10;
        assert!(b.flush(|c| ring.put(c)));
        assert_eq!(ring.got, [1, 2, 3, 4, 5, 6]);
        assert!(b.is_empty());
    }
}
