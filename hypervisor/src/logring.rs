//! The hypervisor's log ring: once dom0 owns the console UART, log lines go
//! here and dom0 reads them with the `LogRead` hypercall.
//!
//! Positions are byte counts since boot ("cursors"), so a reader that falls
//! behind learns exactly how much it lost, and a reader never sees a
//! partially overwritten line as current data.

/// A byte ring of `N` bytes (a power of two).
pub struct LogRing<const N: usize> {
    buf: [u8; N],
    /// Bytes ever written; the ring holds `[written - min(written, N), written)`.
    written: u64,
}

/// What one read returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadResult {
    pub copied: usize,
    /// The cursor to pass next time.
    pub next: u64,
    /// Bytes between the caller's cursor and the oldest byte still held.
    pub lost: u64,
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogRing<N> {
    const _POWER_OF_TWO: () = assert!(N.is_power_of_two());

    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::_POWER_OF_TWO;
        LogRing { buf: [0; N], written: 0 }
    }

    // push and read are out of line: each is called from several log and
    // console paths, none of them a trap's, and inlined they were a copy
    // apiece (1.1 KiB of the image in all).
    #[inline(never)]
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[(self.written % N as u64) as usize] = b;
            self.written += 1;
        }
    }

    /// Bytes ever written.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn oldest(&self) -> u64 {
        self.written.saturating_sub(N as u64)
    }

    /// Copies bytes from `cursor` on into `out`. A cursor beyond what was
    /// written reads nothing and is answered with the current end.
    #[inline(never)]
    pub fn read(&self, cursor: u64, out: &mut [u8]) -> ReadResult {
        let start = cursor.clamp(self.oldest(), self.written);
        let lost = start.saturating_sub(cursor);
        let available = (self.written - start) as usize;
        let copied = available.min(out.len());
        for (i, slot) in out[..copied].iter_mut().enumerate() {
            *slot = self.buf[((start + i as u64) % N as u64) as usize];
        }
        ReadResult { copied, next: start + copied as u64, lost }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_writes_with_cursors() {
        let mut ring = LogRing::<16>::new();
        ring.push(b"hello ");
        let mut out = [0u8; 4];
        let r = ring.read(0, &mut out);
        assert_eq!((r.copied, r.next, r.lost), (4, 4, 0));
        assert_eq!(&out, b"hell");
        let r = ring.read(r.next, &mut out);
        assert_eq!((r.copied, r.next), (2, 6));
        assert_eq!(&out[..2], b"o ");
        assert_eq!(ring.read(6, &mut out).copied, 0);
    }

    #[test]
    fn overwritten_bytes_are_reported_lost_and_skipped() {
        let mut ring = LogRing::<8>::new();
        ring.push(b"0123456789abcdef0123");
        let mut out = [0u8; 32];
        let r = ring.read(0, &mut out);
        assert_eq!(r.lost, 12);
        assert_eq!(r.copied, 8);
        assert_eq!(&out[..8], b"cdef0123");
        assert_eq!(r.next, 20);
    }

    #[test]
    fn cursor_from_the_future_reads_nothing() {
        let mut ring = LogRing::<8>::new();
        ring.push(b"abc");
        let r = ring.read(1000, &mut [0u8; 4]);
        assert_eq!((r.copied, r.next, r.lost), (0, 3, 0));
    }
}
