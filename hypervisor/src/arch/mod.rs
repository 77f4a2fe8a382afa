//! The architecture layer: the only code that touches system registers,
//! the physical GIC and assembly. The core (everything outside `arch/`)
//! reaches the machine only through the interface re-exported here, and
//! arch calls up into the core only through its named entry points:
//! the exception entry (`crate::trap::handle_lower`), the secondary-CPU
//! entry (`crate::boot::secondary_start`) and the fatal-error path
//! (`crate::runstate::stop_system`, `crate::console::panic_console`).
//!
//! On the target the interface is `aarch64`. Under `cargo test` on the
//! build machine it is `fake`: the same functions, recording what the core
//! asked of the hardware, so the mechanism (trap dispatch, hypercalls, IO
//! forwarding, VM lifecycle, scheduling) runs as host tests.
//!
//! The interface, by module:
//! - `cpu`: this CPU's index, the counter, cache-line zeroing, waiting;
//! - `gic`: the physical GIC (acknowledge, route, enable, SGIs) and the
//!   running CPU's list registers (`HwListRegisters`);
//! - `el2`: the trap controls and stage-2 registers for running a VM, the
//!   faulting IPA;
//! - `timer`: the EL2 slice timer and the loaded vCPU's virtual timer;
//! - `inject`: exceptions injected into the running vCPU;
//! - `vcpu`: a vCPU's architectural state (`VcpuArch`), its switch and the
//!   guest entry;
//! - `psci`: the firmware's PSCI (power off, reset);
//! - `TrapFrame`, `GuestException`, `fatal`: the exception entry's view.

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod aarch64;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use aarch64 as imp;

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub mod fake;
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
use fake as imp;

mod frame;
pub use frame::{fast_frame_has, GuestException, TrapFrame};
pub use imp::exception::fatal;
pub use imp::{cpu, el2, gic, inject, psci, timer, vcpu};

/// Boot-time services: only `boot` uses them (MMU, secondary CPUs).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use imp::{mmu, smp};

/// Answers an access the hypervisor or dom0 cannot complete (a device
/// refused it, or it has no syndrome to emulate) with a synchronous
/// external abort on the access, as the running vCPU's hardware would.
pub fn abort_access(frame: &mut TrapFrame) {
    let syndrome = crate::esr::injected_external_abort(frame.esr, frame.spsr, None);
    inject::abort(frame, syndrome, frame.far);
}
