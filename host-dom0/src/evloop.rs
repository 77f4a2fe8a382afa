//! Dom0's event loop: everything the boot CPU does after boot, as a few
//! small tasks polled in turn, none of which waits for another.
//!
//! ```text
//! loop {
//!     services: driver notices → device turns → guest consoles → VM restarts
//!     shell:    the running command's next step, or the bytes typed so far
//!     wait (WFI) until the earliest task's `Wake`, typed input, or guest
//!               console output / a disk turn with no IO worker (`ioreq::attention`)
//! }
//! ```
//!
//! Each task's `poll` does what is due now and says when it wants to run
//! again ([`Wake`]). The shell is a task like the others: a command that
//! takes time is a job stepped by the loop — `sleep` a deadline, `cycle`
//! and `spawn` one VM per step — so while it runs the guests' consoles
//! are printed, their devices get turns and VMs that reset themselves are
//! restarted, exactly as while the shell waits for input. Nothing else
//! waits anywhere: the one blocking wait is at the bottom of the loop.
//!
//! What is not here runs without the loop: guests' IO requests in the IO
//! event interrupt (any of dom0's CPUs), guests' disk turns on the IO
//! worker's CPU (`ioreq::run_worker`; with one CPU, in the services),
//! typed input into a ring by the UART's interrupt.

use crate::arch::aarch64::{cpu, timer};
use crate::shell::{Shell, System};
use crate::toolstack::Toolstack;
use crate::wake::{Every, Wake};
use crate::{console, ioreq};

/// How often the services run with no event: guest output that is
/// waiting (partial lines, the hypervisor's console ring) is printed and
/// devices with work left over get their next turn.
const TICK_MICROS: u64 = 20_000;

/// Runs the shell and the services forever (the boot CPU, after boot).
pub fn run(sys: System) -> ! {
    let freq = cpu::counter_frequency().max(1);
    let mut shell = Shell::new(sys);
    let mut services = Services::new(crate::command::micros_to_ticks(TICK_MICROS, freq));
    loop {
        let now = cpu::counter();
        let (vms, prompt, line) = shell.services_view();
        let wake = services.poll(vms, prompt, line, now).min(shell.poll(now));
        let reading = shell.reading();
        if let Some(deadline) = wake.deadline(cpu::counter()) {
            // The services always name a time, so there is a deadline.
            let deadline = deadline.unwrap_or_else(|| cpu::counter().saturating_add(freq));
            timer::wait_until(deadline, || (reading && console::input_waiting()) || ioreq::attention());
        }
    }
}

/// The work that goes on whatever the shell is doing.
struct Services {
    /// Guest output printed (at once when there is some) and partial lines
    /// shown; devices with work left over served.
    tick: Every,
}

impl Services {
    fn new(tick: u64) -> Self {
        Services { tick: Every::new(tick) }
    }

    /// Guest output goes above the shell's `prompt` and partly typed `line`.
    fn poll(&mut self, vms: &mut Toolstack, prompt: &str, line: &str, now: u64) -> Wake {
        for note in crate::drivers::virtio_blk::take_notices() {
            log::warn!("{note}");
        }
        // Disk turns without an IO worker, answers waiting for room in the
        // completion ring, devices whose budget ran out (cheap when none).
        ioreq::poll_pending();
        if self.tick.due(now) || ioreq::output_pending() {
            vms.poll_console(prompt, line);
        }
        // VMs that reset themselves (it asks the hypervisor every 250 ms).
        vms.watch(prompt, line);
        self.tick.wake()
    }
}
