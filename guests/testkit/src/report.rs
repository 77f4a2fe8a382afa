//! Result bookkeeping and the exact line formats the test harness greps for:
//!
//! ```text
//! TEST <guest>: <check>: PASS|FAIL[ <detail>]
//! GUEST <guest>: DONE <passed> passed, <failed> failed
//! ```

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

/// Pass/fail counters (any CPU may report).
pub struct Tally {
    passed: AtomicU32,
    failed: AtomicU32,
}

impl Tally {
    pub const fn new() -> Self {
        Self { passed: AtomicU32::new(0), failed: AtomicU32::new(0) }
    }

    pub fn record(&self, pass: bool) {
        let counter = if pass { &self.passed } else { &self.failed };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// `(passed, failed)`.
    pub fn counts(&self) -> (u32, u32) {
        (self.passed.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes one `TEST` line, newline included. An empty detail adds nothing
/// after PASS/FAIL.
pub fn write_test_line(
    out: &mut impl Write,
    guest: &str,
    check: &str,
    pass: bool,
    detail: fmt::Arguments<'_>,
) -> fmt::Result {
    write!(out, "TEST {guest}: {check}: {}", if pass { "PASS" } else { "FAIL" })?;
    // Render the detail once to see whether it is empty.
    let mut probe = NonEmpty(false);
    let _ = probe.write_fmt(detail);
    if probe.0 {
        write!(out, " {detail}")?;
    }
    out.write_str("\n")
}

/// Writes the final `GUEST` line, newline included.
pub fn write_done_line(out: &mut impl Write, guest: &str, passed: u32, failed: u32) -> fmt::Result {
    writeln!(out, "GUEST {guest}: DONE {passed} passed, {failed} failed")
}

struct NonEmpty(bool);

impl Write for NonEmpty {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 |= !s.is_empty();
        Ok(())
    }
}

/// Is `actual` within `percent` % of `expected`?
pub fn within_percent(actual: u64, expected: u64, percent: u64) -> bool {
    let slack = expected.saturating_mul(percent) / 100;
    actual >= expected.saturating_sub(slack) && actual <= expected.saturating_add(slack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lines_have_the_exact_format() {
        let mut s = String::new();
        write_test_line(&mut s, "psci", "version", true, format_args!("0x{:x}", 0x10001)).unwrap();
        write_test_line(&mut s, "psci", "off", false, format_args!("")).unwrap();
        write_done_line(&mut s, "psci", 1, 1).unwrap();
        assert_eq!(
            s,
            "TEST psci: version: PASS 0x10001\nTEST psci: off: FAIL\nGUEST psci: DONE 1 passed, 1 failed\n"
        );
    }

    #[test]
    fn tally_counts_both_outcomes() {
        let t = Tally::new();
        t.record(true);
        t.record(true);
        t.record(false);
        assert_eq!(t.counts(), (2, 1));
    }

    #[test]
    fn tolerance_is_symmetric_and_inclusive() {
        assert!(within_percent(450, 500, 10));
        assert!(within_percent(550, 500, 10));
        assert!(!within_percent(449, 500, 10));
        assert!(!within_percent(551, 500, 10));
        assert!(within_percent(0, 0, 10));
    }
}
