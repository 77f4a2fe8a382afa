//! Test guest `spin`: CPU-bound. Counts loop iterations in 20 windows of
//! 100 ms and prints them (`RESULT spin: iterations=<total> ...`) for the
//! harness to compare between VMs. With `spin.masked=1` it spins with
//! DAIF masked, to show it cannot keep other VMs off the CPU.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::cpu;
    use testkit::{check, println, Env};

    testkit::guest!("spin", main);

    const WINDOWS: usize = 20;
    const WINDOW_US: u64 = 100_000;

    fn main(env: &'static Env) {
        let masked = env.cmdline().flag("spin.masked");
        if masked {
            cpu::disable_irqs();
        }
        let ticks_per_window = cpu::counter_hz() * WINDOW_US / 1_000_000;
        let mut counts = [0u64; WINDOWS];
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
        let total: u64 = counts.iter().sum();
        let min = counts.iter().copied().min().unwrap_or(0);
        let max = counts.iter().copied().max().unwrap_or(0);
        for (i, c) in counts.iter().enumerate() {
            println!("SPIN spin: window {i}: {c}");
        }
        println!("RESULT spin: iterations={total} windows={WINDOWS} min={min} max={max} masked={}", masked as u8);
        check!(
            "spun",
            min > 0 && elapsed >= WINDOWS as u64 * WINDOW_US,
            "{total} iterations in {elapsed} us, every window > 0 (min {min}, max {max}), IRQs {}",
            if masked { "masked" } else { "unmasked" }
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
