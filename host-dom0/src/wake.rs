//! When a task of dom0's event loop (`evloop`) wants to run again: the
//! answer of each task's `poll`, combined into one wait.
#![forbid(unsafe_code)]

/// When to poll a task again. Times are virtual counter ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// At once: it has more to do now.
    Now,
    /// Once the counter reaches this.
    At(u64),
    /// Only when an event it waits for comes (an interrupt wakes the loop).
    Idle,
}

impl Wake {
    /// The earlier of the two.
    pub fn min(self, other: Wake) -> Wake {
        match (self, other) {
            (Wake::Now, _) | (_, Wake::Now) => Wake::Now,
            (Wake::At(a), Wake::At(b)) => Wake::At(a.min(b)),
            (Wake::At(t), Wake::Idle) | (Wake::Idle, Wake::At(t)) => Wake::At(t),
            (Wake::Idle, Wake::Idle) => Wake::Idle,
        }
    }

    /// The deadline to wait for at `now`: `None` if there is nothing to
    /// wait for (due already), `Some(None)` to wait for an event alone.
    pub fn deadline(self, now: u64) -> Option<Option<u64>> {
        match self {
            Wake::Now => None,
            Wake::At(t) if t <= now => None,
            Wake::At(t) => Some(Some(t)),
            Wake::Idle => Some(None),
        }
    }
}

/// A task that runs every `period` ticks.
#[derive(Debug)]
pub struct Every {
    period: u64,
    next: u64,
}

impl Every {
    /// Due at once, then every `period` ticks.
    pub fn new(period: u64) -> Self {
        Every { period: period.max(1), next: 0 }
    }

    /// Whether it is due at `now`; if so, the next time is a period from now.
    pub fn due(&mut self, now: u64) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now.saturating_add(self.period);
        true
    }

    /// When it is due next.
    pub fn wake(&self) -> Wake {
        Wake::At(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_wins_and_idle_loses() {
        assert_eq!(Wake::At(5).min(Wake::Now), Wake::Now);
        assert_eq!(Wake::Idle.min(Wake::Now), Wake::Now);
        assert_eq!(Wake::At(5).min(Wake::At(3)), Wake::At(3));
        assert_eq!(Wake::Idle.min(Wake::At(7)), Wake::At(7));
        assert_eq!(Wake::At(7).min(Wake::Idle), Wake::At(7));
        assert_eq!(Wake::Idle.min(Wake::Idle), Wake::Idle);
    }

    #[test]
    fn a_past_deadline_means_no_wait() {
        assert_eq!(Wake::At(10).deadline(10), None);
        assert_eq!(Wake::At(10).deadline(11), None);
        assert_eq!(Wake::At(10).deadline(9), Some(Some(10)));
        assert_eq!(Wake::Now.deadline(0), None);
        assert_eq!(Wake::Idle.deadline(0), Some(None));
    }

    #[test]
    fn every_is_due_at_once_then_a_period_after_it_ran() {
        let mut e = Every::new(20);
        assert!(e.due(100));
        assert_eq!(e.wake(), Wake::At(120));
        assert!(!e.due(119));
        // Late: the next time counts from when it ran, not from when it was due.
        assert!(e.due(150));
        assert_eq!(e.wake(), Wake::At(170));
    }

    #[test]
    fn every_never_overflows() {
        let mut e = Every::new(0);
        assert!(e.due(u64::MAX));
        assert_eq!(e.wake(), Wake::At(u64::MAX));
        assert!(e.due(u64::MAX));
    }
}
