//! A token bucket: at most `burst` events at once, then one every
//! `interval` counter ticks. Each VM has its own (for `LogWrite`), behind
//! its own lock, so limiting one VM never waits on another. Pure: the
//! caller passes the time.
#![forbid(unsafe_code)]

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    tokens: u32,
    /// When the last token was added (counter ticks).
    refilled: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at time `now`.
    pub const fn full(burst: u32, now: u64) -> Self {
        TokenBucket { tokens: burst, refilled: now }
    }

    /// Takes a token at time `now` if there is one: first adds one for
    /// each whole `interval` since the last refill, up to `burst`. A clock
    /// that goes backwards adds nothing.
    pub fn take(&mut self, now: u64, interval: u64, burst: u32) -> bool {
        let interval = interval.max(1);
        let elapsed = now.saturating_sub(self.refilled);
        let earned = elapsed / interval;
        if earned > 0 {
            self.tokens = (self.tokens as u64 + earned).min(burst as u64) as u32;
            self.refilled += earned * interval;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_one_per_interval() {
        let mut b = TokenBucket::full(3, 1000);
        assert!((0..3).all(|_| b.take(1000, 10, 3)));
        assert!(!b.take(1000, 10, 3), "the burst is spent");
        assert!(!b.take(1009, 10, 3), "not a whole interval yet");
        assert!(b.take(1010, 10, 3));
        assert!(!b.take(1015, 10, 3));
        assert!(b.take(1020, 10, 3), "the remainder of an interval is kept");
    }

    #[test]
    fn a_long_pause_refills_only_up_to_the_burst_and_time_going_back_adds_nothing() {
        let mut b = TokenBucket::full(2, 0);
        assert!(b.take(0, 10, 2) && b.take(0, 10, 2));
        assert_eq!((0..5).filter(|_| b.take(1_000_000, 10, 2)).count(), 2);
        let mut c = TokenBucket::full(1, 500);
        assert!(c.take(500, 10, 1));
        assert!(!c.take(100, 10, 1));
        assert!(c.take(u64::MAX, 0, 1), "a zero interval counts as one tick, with no overflow");
    }
}
