//! Test guest `timer`: the virtual timer (PPI 27) ticking at `timer.hz`
//! (default 1000) for `timer.ms` (default 500) delivers the expected number
//! of interrupts, within 10 %.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::{cpu, timer};
    use testkit::report::within_percent;
    use testkit::{check, Env};

    testkit::guest!("timer", main);

    fn main(env: &'static Env) {
        let cmd = env.cmdline();
        let hz = cmd.get_u64("timer.hz").and_then(Result::ok).unwrap_or(1000).clamp(1, 10_000);
        let ms = cmd.get_u64("timer.ms").and_then(Result::ok).unwrap_or(500).clamp(10, 60_000);
        let start = cpu::counter();
        timer::start_periodic(hz);
        while cpu::elapsed_us(start) < ms * 1000 {
            cpu::wfi();
        }
        let ticks = timer::stop();
        let elapsed = cpu::elapsed_us(start);
        let expected = elapsed * hz / 1_000_000;
        check!(
            "virtual-timer",
            within_percent(ticks, expected, 10),
            "{ticks} interrupts at {hz} Hz in {}.{:03} s (want {expected} +-10 %, INTID {})",
            elapsed / 1_000_000,
            elapsed / 1000 % 1000,
            timer::intid()
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
