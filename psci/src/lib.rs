#![no_std]
// The calls are AArch64 instructions; on the build machine the crate is empty.
#![cfg(target_arch = "aarch64")]
//! PSCI (Arm DEN 0022) calls to the firmware (from the hypervisor) or to
//! the hypervisor (from dom0), through the conduit the device tree names; the
//! `smccc` crate issues the calls.

use core::sync::atomic::{AtomicU8, Ordering};

use hv_devtree::platform::{Psci, PsciConduit};
use smccc::{psci, Hvc, Smc};

const NONE: u8 = 0;
const SMC: u8 = 1;
const HVC: u8 = 2;

static CONDUIT: AtomicU8 = AtomicU8::new(NONE);

/// Records the conduit; without this call there is no PSCI.
pub fn init(psci: Option<&Psci>) {
    let conduit = match psci.map(|p| p.conduit) {
        Some(PsciConduit::Smc) => SMC,
        Some(PsciConduit::Hvc) => HVC,
        None => NONE,
    };
    CONDUIT.store(conduit, Ordering::Relaxed);
}

pub fn available() -> bool {
    CONDUIT.load(Ordering::Relaxed) != NONE
}

/// Starts CPU `mpidr` at physical `entry` (MMU off) with x0 = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), psci::error::Error> {
    match CONDUIT.load(Ordering::Relaxed) {
        SMC => psci::cpu_on::<Smc>(mpidr, entry, context),
        HVC => psci::cpu_on::<Hvc>(mpidr, entry, context),
        _ => Err(psci::error::Error::NotSupported),
    }
}

/// Powers the machine off. Returns only if there is no PSCI or the call failed.
pub fn system_off() -> Result<(), psci::error::Error> {
    match CONDUIT.load(Ordering::Relaxed) {
        SMC => psci::system_off::<Smc>(),
        HVC => psci::system_off::<Hvc>(),
        _ => Err(psci::error::Error::NotSupported),
    }
}

/// Resets the machine. Returns only if there is no PSCI or the call failed.
pub fn system_reset() -> Result<(), psci::error::Error> {
    match CONDUIT.load(Ordering::Relaxed) {
        SMC => psci::system_reset::<Smc>(),
        HVC => psci::system_reset::<Hvc>(),
        _ => Err(psci::error::Error::NotSupported),
    }
}
