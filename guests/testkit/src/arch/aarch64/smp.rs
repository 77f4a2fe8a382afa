//! Starting secondary vCPUs with PSCI CPU_ON. The context id passed to the
//! new vCPU carries its index in bits [2:0] (entry.S picks its stack with
//! them); the caller chooses the rest, so tests can check x0 arrives intact.

use core::sync::atomic::{AtomicU64, Ordering};

use super::cpu::{self, MAX_CPUS};
use super::{gic, psci};

/// What a secondary runs; it receives the context id it was started with.
/// When it returns, the vCPU calls PSCI CPU_OFF.
pub type Entry = fn(context: u64);

static ENTRIES: spin::Mutex<[Option<Entry>; MAX_CPUS]> = spin::Mutex::new([None; MAX_CPUS]);
/// Bit i: vCPU i is running testkit code.
static ONLINE: AtomicU64 = AtomicU64::new(1);

extern "C" {
    fn testkit_secondary_entry();
}

/// The physical entry point handed to CPU_ON.
pub fn entry_point() -> u64 {
    testkit_secondary_entry as *const () as usize as u64
}

/// The context id for vCPU `index` with the caller's `tag` in bits [63:8].
pub fn context_id(index: usize, tag: u64) -> u64 {
    (tag << 8) | (index % MAX_CPUS) as u64
}

/// CPU_ON the vCPU with `mpidr` as index `index` (1..MAX_CPUS) running `f`.
/// Returns the PSCI result (or the syndrome if `hvc` was UNDEFINED).
pub fn cpu_on(index: usize, mpidr: u64, context: u64, f: Entry) -> Result<i64, super::exception::Caught> {
    ENTRIES.lock()[index % MAX_CPUS] = Some(f);
    psci::call(psci::CPU_ON, mpidr, entry_point(), context)
}

/// Bitmask of vCPUs currently in testkit code.
pub fn online() -> u64 {
    ONLINE.load(Ordering::SeqCst)
}

#[no_mangle]
extern "C" fn testkit_secondary_main(context: u64) -> ! {
    let me = cpu::index();
    ONLINE.fetch_or(1 << me, Ordering::SeqCst);
    if gic::version().is_some() {
        if let Err(e) = gic::init_cpu() {
            crate::rt::report("secondary-gic", false, format_args!("vCPU {me}: {e}"));
        }
    }
    let f = ENTRIES.lock()[me];
    if let Some(f) = f {
        f(context);
    }
    ONLINE.fetch_and(!(1 << me), Ordering::SeqCst);
    psci::cpu_off()
}
