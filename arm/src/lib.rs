//! Arm architecture definitions shared by every image of the project: the
//! hypervisor (EL2), dom0 and the test guests (EL1).
//!
//! - [`TrapFrame`]: the register frame the exception vectors save (the
//!   hypervisor's `vectors.S`, and `asm/el1_vectors.S` of dom0 and the
//!   guests), with the offsets the assembly relies on checked at compile time;
//! - [`esr`]: Exception Syndrome Register decoding;
//! - [`Vector`]: which vector table entry was taken;
//! - [`gic`]: GICv2/GICv3 register maps (distributor, redistributor, CPU
//!   interface, virtual interface control);
//! - [`pl011`]: the PL011 UART's register map and flag bits.
//!
//! Definitions only: no register is touched here, so everything builds and
//! is tested on the build machine, and the crate has no `unsafe`.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod esr;
pub mod gic;
pub mod pl011;
mod trap_frame;
mod vector;

pub use trap_frame::{TrapFrame, TRAP_FRAME_SIZE};
pub use vector::{Vector, VectorAtEl, VectorKind, VectorOrigin};
