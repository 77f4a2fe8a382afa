//! A lock-free single-producer, single-consumer byte ring: the UART receive
//! interrupt pushes, the shell pops.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// A ring of `N` bytes (`N` a power of two). Head and tail are free-running
/// counters, so all `N` slots are usable.
pub struct ByteRing<const N: usize> {
    slots: [AtomicU8; N],
    /// Bytes ever pushed (written only by the producer).
    head: AtomicUsize,
    /// Bytes ever popped (written only by the consumer).
    tail: AtomicUsize,
    /// Bytes dropped because the ring was full.
    dropped: AtomicUsize,
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ByteRing<N> {
    const CHECK: () = assert!(N.is_power_of_two());

    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        Self {
            slots: [const { AtomicU8::new(0) }; N],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }

    /// Producer side: appends `byte`, or counts it as dropped if the ring is full.
    pub fn push(&self, byte: u8) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= N {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.slots[head % N].store(byte, Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Consumer side: the oldest byte, if any.
    pub fn pop(&self) -> Option<u8> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let byte = self.slots[tail % N].load(Ordering::Relaxed);
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Some(byte)
    }

    pub fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire) == self.tail.load(Ordering::Acquire)
    }

    /// Bytes dropped so far because the consumer fell behind.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order() {
        let r = ByteRing::<8>::new();
        assert!(r.is_empty());
        for b in b"abc" {
            assert!(r.push(*b));
        }
        assert_eq!(
            [r.pop(), r.pop(), r.pop(), r.pop()],
            [Some(b'a'), Some(b'b'), Some(b'c'), None]
        );
    }

    #[test]
    fn a_full_ring_drops_and_counts_new_bytes() {
        let r = ByteRing::<4>::new();
        for b in 0..4 {
            assert!(r.push(b));
        }
        assert!(!r.push(9));
        assert_eq!(r.dropped(), 1);
        assert_eq!(r.pop(), Some(0));
        assert!(r.push(4));
        assert_eq!(
            (1..=4).map(|_| r.pop().unwrap()).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn wraps_around_many_times() {
        let r = ByteRing::<4>::new();
        for i in 0..1000u32 {
            assert!(r.push(i as u8));
            assert_eq!(r.pop(), Some(i as u8));
        }
        assert!(r.is_empty());
    }

    #[test]
    fn producer_and_consumer_threads_agree() {
        let r = std::sync::Arc::new(ByteRing::<16>::new());
        let p = r.clone();
        let t = std::thread::spawn(move || {
            for i in 0..10_000u32 {
                while !p.push(i as u8) {
                    std::hint::spin_loop();
                }
            }
        });
        for i in 0..10_000u32 {
            let b = loop {
                if let Some(b) = r.pop() {
                    break b;
                }
            };
            assert_eq!(b, i as u8);
        }
        t.join().unwrap();
    }
}
