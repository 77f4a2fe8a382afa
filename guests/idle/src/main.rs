//! Test guest `idle`: sits in WFI with the virtual timer at 10 Hz for
//! `idle.seconds` (default 2) and reports how many ticks it saw
//! (`RESULT idle: ticks=<n> ...`); the check wants them within 10 %.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::{cpu, timer};
    use testkit::report::within_percent;
    use testkit::{check, println, Env};

    testkit::guest!("idle", main);

    const HZ: u64 = 10;

    fn main(env: &'static Env) {
        let seconds = env.cmdline().get_u64("idle.seconds").and_then(Result::ok).unwrap_or(2).clamp(1, 3600);
        let start = cpu::counter();
        timer::start_periodic(HZ);
        while cpu::elapsed_us(start) < seconds * 1_000_000 {
            cpu::wfi();
        }
        let ticks = timer::stop();
        let elapsed = cpu::elapsed_us(start);
        let expected = elapsed * HZ / 1_000_000;
        println!("RESULT idle: ticks={ticks} us={elapsed}");
        check!("ticks", within_percent(ticks, expected, 10), "{ticks} ticks at {HZ} Hz in {elapsed} us (want {expected} +-10 %)");
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
