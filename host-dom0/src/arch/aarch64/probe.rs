//! Reads that may abort (`peek`): a per-CPU "probing" flag tells the
//! synchronous exception handler to resume at a recovery label instead of
//! crashing. The hypervisor answers dom0 accesses outside its memory with a
//! synchronous external abort; on bare hardware it depends on the bus.

use core::sync::atomic::{AtomicBool, Ordering};

use super::cpu::{self, MAX_CPUS};
use hv_arm::esr::ExceptionClass;

use super::exception::TrapFrame;

extern "C" {
    /// boot.S: `*out = *(u64 *)addr`, returning 1, or 0 if the load aborted.
    fn probe_read_u64(addr: u64, out: *mut u64) -> u64;
    static probe_read_u64_load: u8;
    static probe_read_u64_fixup: u8;
}

/// What the handler saw when a probe aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    pub esr: u64,
    pub far: u64,
}

struct Probe {
    active: AtomicBool,
    esr: core::sync::atomic::AtomicU64,
    far: core::sync::atomic::AtomicU64,
}

static PROBES: [Probe; MAX_CPUS] = [const {
    Probe {
        active: AtomicBool::new(false),
        esr: core::sync::atomic::AtomicU64::new(0),
        far: core::sync::atomic::AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Reads the 64-bit word at (identity-mapped) physical address `addr`, or
/// reports the data abort it caused.
pub fn read_u64(addr: u64) -> Result<u64, Abort> {
    let probe = &PROBES[cpu::index()];
    probe.active.store(true, Ordering::SeqCst);
    let mut value = 0u64;
    // SAFETY: the address is arbitrary on purpose: a successful read only
    // copies 8 bytes into `value`, and an abort is caught by `fix_up`, which
    // resumes at the fix-up label that returns 0. The read has no side
    // effects dom0 relies on (a read-sensitive device register is the
    // operator's choice, as with any `peek`).
    let ok = unsafe { probe_read_u64(addr, &mut value) };
    probe.active.store(false, Ordering::SeqCst);
    if ok == 1 {
        Ok(value)
    } else {
        Err(Abort {
            esr: probe.esr.load(Ordering::SeqCst),
            far: probe.far.load(Ordering::SeqCst),
        })
    }
}

/// Called for synchronous exceptions: if this CPU is probing and the probe's
/// load took a data abort, records it and resumes at the fix-up label.
pub fn fix_up(frame: &mut TrapFrame) -> bool {
    let probe = &PROBES[cpu::index()];
    let load = core::ptr::addr_of!(probe_read_u64_load) as u64;
    if !probe.active.load(Ordering::SeqCst)
        || ExceptionClass::from_esr(frame.esr) != ExceptionClass::DataAbortSameEl
        || frame.elr != load
    {
        return false;
    }
    probe.esr.store(frame.esr, Ordering::SeqCst);
    probe.far.store(frame.far, Ordering::SeqCst);
    probe.active.store(false, Ordering::SeqCst);
    frame.elr = core::ptr::addr_of!(probe_read_u64_fixup) as u64;
    true
}
