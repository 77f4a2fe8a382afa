//! Test guest `spin`: CPU-bound. Counts loop iterations in 20 windows of
//! 100 ms (`spin.windows=N`: N of them, up to 1200) and prints them
//! (`RESULT spin: iterations=<total> ...`; each window too when there are
//! at most 20) for the harness to compare between VMs; a longer run is a
//! busy neighbour for another VM. With `spin.masked=1` it spins with
//! DAIF masked, to show it cannot keep other VMs off the CPU. With
//! `spin.vcpus=N` its first N vCPUs (at most as many as it has) spin over
//! the same windows, started with CPU_ON; the totals are then summed over
//! them, and each vCPU's is printed (`RESULT spin: vcpu <i> iterations=`).
//! `NOTE spin: <N> vCPUs spinning` says all have started, `NOTE spin:
//! windows done` that vCPU 0's last window is over (a harness measuring
//! shares between VMs takes the span between them).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use testkit::arch::cpu::{self, MAX_CPUS};
    use testkit::arch::smp;
    use testkit::{check, println, wait_until, Env};

    testkit::guest!("spin", main);

    const DEFAULT_WINDOWS: usize = 20;
    const MAX_WINDOWS: usize = 1200;
    const WINDOW_US: u64 = 100_000;

    /// What the secondaries need: the common start, the windows, masking.
    static START: AtomicU64 = AtomicU64::new(0);
    static WINDOWS: AtomicU64 = AtomicU64::new(0);
    static MASKED: AtomicBool = AtomicBool::new(false);
    /// Each vCPU's total iterations and its emptiest window, once done.
    static TOTAL: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    static MIN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    static DONE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    static SPINNING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

    /// Spins through the windows from START, writing each window's count
    /// into `counts` (as many as it holds); records this vCPU's total and
    /// minimum.
    fn spin(counts: &mut [u64]) {
        let (start, windows, masked) =
            (START.load(Ordering::SeqCst), WINDOWS.load(Ordering::SeqCst), MASKED.load(Ordering::SeqCst));
        if masked {
            cpu::disable_irqs();
        }
        SPINNING[cpu::index()].store(true, Ordering::SeqCst);
        let ticks_per_window = cpu::counter_hz() * WINDOW_US / 1_000_000;
        let (mut total, mut min) = (0u64, u64::MAX);
        for i in 0..windows {
            let end = start + (i + 1) * ticks_per_window;
            let mut n = 0u64;
            while cpu::counter() < end {
                for _ in 0..256 {
                    n = core::hint::black_box(n + 1);
                }
            }
            if let Some(c) = counts.get_mut(i as usize) {
                *c = n;
            }
            total += n;
            min = min.min(n);
        }
        if masked {
            cpu::enable_irqs();
        }
        let me = cpu::index();
        TOTAL[me].store(total, Ordering::SeqCst);
        MIN[me].store(min, Ordering::SeqCst);
        DONE[me].store(true, Ordering::SeqCst);
    }

    fn secondary(_context: u64) {
        spin(&mut []);
    }

    fn main(env: &'static Env) {
        let masked = env.cmdline().flag("spin.masked");
        let windows = env.cmdline().get_u64("spin.windows").and_then(Result::ok).map_or(DEFAULT_WINDOWS, |n| n.clamp(1, MAX_WINDOWS as u64) as usize);
        let cpus = &env.platform.cpus;
        let vcpus = env.cmdline().get_u64("spin.vcpus").and_then(Result::ok).map_or(1, |n| n.clamp(1, cpus.len().min(MAX_CPUS) as u64) as usize);
        WINDOWS.store(windows as u64, Ordering::SeqCst);
        MASKED.store(masked, Ordering::SeqCst);
        START.store(cpu::counter(), Ordering::SeqCst);
        let start = START.load(Ordering::SeqCst);
        let mut started = 1;
        for (i, c) in cpus.iter().enumerate().take(vcpus).skip(1) {
            match smp::cpu_on(i, c.mpidr, smp::context_id(i, 0), secondary) {
                Ok(0) => started += 1,
                r => check!("cpu-on", false, "vCPU {i}: CPU_ON answered {r:?}"),
            }
        }
        let up = wait_until(10_000_000, || (1..vcpus).all(|i| SPINNING[i].load(Ordering::SeqCst)));
        if vcpus > 1 && up {
            println!("NOTE spin: {vcpus} vCPUs spinning");
        }
        let mut all = [0u64; MAX_WINDOWS];
        spin(&mut all[..windows]);
        if vcpus > 1 {
            println!("NOTE spin: windows done");
        }
        // The others end with the same window, give or take their last
        // time slice.
        let all_done = wait_until(10_000_000, || (0..vcpus).all(|i| DONE[i].load(Ordering::SeqCst)));
        let elapsed = cpu::elapsed_us(start);
        let counts = &all[..windows];
        let totals: [u64; MAX_CPUS] = core::array::from_fn(|i| TOTAL[i].load(Ordering::SeqCst));
        let total: u64 = totals.iter().sum();
        let min = counts.iter().copied().min().unwrap_or(0);
        let max = counts.iter().copied().max().unwrap_or(0);
        if windows <= DEFAULT_WINDOWS {
            for (i, c) in counts.iter().enumerate() {
                println!("SPIN spin: window {i}: {c}");
            }
        }
        if vcpus > 1 {
            for (i, t) in totals.iter().enumerate().take(vcpus) {
                println!("RESULT spin: vcpu {i} iterations={t} min-window={}", MIN[i].load(Ordering::SeqCst));
            }
        }
        println!("RESULT spin: iterations={total} windows={windows} min={min} max={max} masked={} vcpus={vcpus}", masked as u8);
        if vcpus == 1 {
            check!(
                "spun",
                min > 0 && elapsed >= windows as u64 * WINDOW_US,
                "{total} iterations in {elapsed} us, every window > 0 (min {min}, max {max}), IRQs {}",
                if masked { "masked" } else { "unmasked" }
            );
        } else {
            // Sharing their CPUs with others, a vCPU may miss a whole
            // window: each must have spun, not in every window.
            let idle = (0..vcpus).filter(|&i| totals[i] == 0).count();
            check!(
                "spun",
                started == vcpus && all_done && idle == 0 && elapsed >= windows as u64 * WINDOW_US,
                "{total} iterations on {vcpus} vCPUs ({started} started, {} done, {idle} without any) in {elapsed} us, IRQs {}",
                (0..vcpus).filter(|&i| DONE[i].load(Ordering::SeqCst)).count(),
                if masked { "masked" } else { "unmasked" }
            );
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
