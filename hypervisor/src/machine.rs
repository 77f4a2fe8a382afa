//! The machine the hypervisor runs on, as boot found it: the platform
//! description read from the device tree (RAM, GIC, console, CPUs) and
//! how many physical CPUs came online. Written once by `boot`, read by
//! everyone after.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::platform::Platform;

static PLATFORM: spin::Once<Platform> = spin::Once::new();
/// Physical CPUs online.
static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Records the platform (once, on the boot CPU) and returns it.
pub fn set_platform(platform: Platform) -> &'static Platform {
    PLATFORM.call_once(|| platform)
}

/// The platform (read once at boot).
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("the platform is read before any VM exists")
}

/// The platform, if boot has read it yet.
pub fn try_platform() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// The GIC maintenance interrupt's INTID.
pub fn maintenance_intid() -> Option<u32> {
    PLATFORM.get().and_then(|p| p.gic.maintenance_irq).map(|irq| irq.intid)
}

pub fn set_online_cpus(count: usize) {
    ONLINE.store(count, Ordering::Relaxed);
}

/// Physical CPUs online.
pub fn online_cpus() -> usize {
    ONLINE.load(Ordering::Relaxed)
}

/// The mask of online physical CPUs (bit i: CPU i).
pub fn online_mask() -> u64 {
    let online = online_cpus();
    if online >= 64 {
        u64::MAX
    } else {
        (1u64 << online) - 1
    }
}

/// Set when the machine is stopping (`runstate`): CPUs stop running vCPUs
/// and park.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn set_stopping() {
    STOPPING.store(true, Ordering::Release);
}

/// Is the machine stopping?
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}
