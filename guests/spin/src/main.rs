//! Test guest `spin`: CPU-bound. Counts loop iterations in 20 windows of
//! 100 ms (`spin.windows=N`: N of them, up to 1200) and prints them
//! (`RESULT spin: iterations=<total> ...`; each window too when there are
//! at most 20) for the harness to compare between VMs; a longer run is a
//! busy neighbour for another VM. With `spin.masked=1` it spins with
//! DAIF masked, to show it cannot keep other VMs off the CPU.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::cpu;
    use testkit::{check, println, Env};

    testkit::guest!("spin", main);

    const DEFAULT_WINDOWS: usize = 20;
    const MAX_WINDOWS: usize = 1200;
    const WINDOW_US: u64 = 100_000;

    fn main(env: &'static Env) {
        let masked = env.cmdline().flag("spin.masked");
        let windows = env.cmdline().get_u64("spin.windows").and_then(Result::ok).map_or(DEFAULT_WINDOWS, |n| n.clamp(1, MAX_WINDOWS as u64) as usize);
        if masked {
            cpu::disable_irqs();
        }
        let ticks_per_window = cpu::counter_hz() * WINDOW_US / 1_000_000;
        let mut all = [0u64; MAX_WINDOWS];
        let counts = &mut all[..windows];
        let start = cpu::counter();
        for (i, count) in counts.iter_mut().enumerate() {
            let end = start + (i as u64 + 1) * ticks_per_window;
            let mut n = 0u64;
            while cpu::counter() < end {
                for _ in 0..256 {
                    n = core::hint::black_box(n + 1);
                }
            }
            *count = n;
        }
        let elapsed = cpu::elapsed_us(start);
        if masked {
            cpu::enable_irqs();
        }
        let counts = &all[..windows];
        let total: u64 = counts.iter().sum();
        let min = counts.iter().copied().min().unwrap_or(0);
        let max = counts.iter().copied().max().unwrap_or(0);
        if windows <= DEFAULT_WINDOWS {
            for (i, c) in counts.iter().enumerate() {
                println!("SPIN spin: window {i}: {c}");
            }
        }
        println!("RESULT spin: iterations={total} windows={windows} min={min} max={max} masked={}", masked as u8);
        check!(
            "spun",
            min > 0 && elapsed >= windows as u64 * WINDOW_US,
            "{total} iterations in {elapsed} us, every window > 0 (min {min}, max {max}), IRQs {}",
            if masked { "masked" } else { "unmasked" }
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
