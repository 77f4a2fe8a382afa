//! Calls to the firmware's PSCI (Arm DEN 0022) through the conduit the
//! device tree names. The `smccc` crate issues the calls.

use core::sync::atomic::{AtomicU8, Ordering};

use smccc::{psci, Hvc, Smc};

use crate::addr::PhysAddr;
use crate::platform::{Psci, PsciConduit};

const NONE: u8 = 0;
const SMC: u8 = 1;
const HVC: u8 = 2;

static CONDUIT: AtomicU8 = AtomicU8::new(NONE);

/// Records the firmware's PSCI conduit; without this call there is no PSCI.
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

/// Starts the CPU `mpidr` at `entry` (physical, MMU off) with x0 = `context`.
pub fn cpu_on(mpidr: u64, entry: PhysAddr, context: u64) -> Result<(), psci::error::Error> {
    match CONDUIT.load(Ordering::Relaxed) {
        SMC => psci::cpu_on::<Smc>(mpidr, entry.as_u64(), context),
        HVC => psci::cpu_on::<Hvc>(mpidr, entry.as_u64(), context),
        _ => Err(psci::error::Error::NotSupported),
    }
}

/// Powers the machine off. Returns only if there is no PSCI or it failed.
pub fn system_off() {
    let _ = match CONDUIT.load(Ordering::Relaxed) {
        SMC => psci::system_off::<Smc>(),
        HVC => psci::system_off::<Hvc>(),
        _ => return,
    };
}

/// Resets the machine. Returns only if there is no PSCI or it failed.
pub fn system_reset() {
    let _ = match CONDUIT.load(Ordering::Relaxed) {
        SMC => psci::system_reset::<Smc>(),
        HVC => psci::system_reset::<Hvc>(),
        _ => return,
    };
}
