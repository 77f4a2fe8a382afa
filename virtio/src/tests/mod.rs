//! Tests that drive whole devices through the MMIO registers with the
//! test driver ([`crate::testutil`]), as a guest would.

mod block;
mod console;
mod fuzz;
mod hostile;
mod net;
mod transport;
