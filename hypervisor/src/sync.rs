//! The hypervisor's locks: the `spin` crate's, with a wait loop that
//! executes `YIELD` rather than the default relax hint.
//!
//! On hardware `YIELD` is a hint (most cores treat it as a NOP), so this
//! costs nothing. Under QEMU's single-threaded TCG (`-icount`, which the
//! benchmarks use) `YIELD` hands the host thread to the next vCPU: a CPU
//! waiting for a lock held by a CPU that QEMU descheduled then lets the
//! holder run, instead of spinning until the round-robin slice ends (which
//! cost a cross-CPU IO round trip some 40,000 instructions).

/// Spin-wait strategy: `YIELD` between attempts.
pub struct Yield;

impl spin::RelaxStrategy for Yield {
    #[inline(always)]
    fn relax() {
        #[cfg(target_arch = "aarch64")]
        // SAFETY: YIELD is a hint; it changes no register or memory.
        unsafe {
            core::arch::asm!("yield", options(nomem, nostack, preserves_flags))
        };
        #[cfg(not(target_arch = "aarch64"))]
        core::hint::spin_loop();
    }
}

pub type Mutex<T> = spin::mutex::Mutex<T, Yield>;
pub type MutexGuard<'a, T> = spin::mutex::MutexGuard<'a, T>;
pub type RwLock<T> = spin::rwlock::RwLock<T, Yield>;
