//! Host tests of the mechanism (trap dispatch, hypercalls, VM control, IO
//! forwarding, scheduling) against the fake arch (`arch::fake`). Each test
//! takes the machine with [`support::Machine::take`]: the core keeps
//! per-machine state in statics, so these tests run one at a time.

mod support;

mod domctl;
mod hypercall;
mod ioreq;
mod pvtime;
mod sched;
mod trap;
