//! Test guest `timer`: the virtual timer (PPI 27) ticking at `timer.hz`
//! (default 1000) for `timer.ms` (default 500) delivers the expected number
//! of interrupts, within 10 %. Then the timer PPI's pending state as the GIC
//! shows it (GICR_ISPENDR0 / GICD_ISPENDR0): pending exactly while the timer
//! is enabled, its condition met and not masked, with interrupts masked at
//! the CPU so nothing takes it meanwhile; and once the timer is disabled, no
//! interrupt arrives when the CPU unmasks them.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::{cpu, gic, timer};
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
        pending_state();
    }

    /// The timer PPI's bit in this vCPU's private pending register.
    fn pending() -> bool {
        gic::private_pending() & (1 << timer::intid()) != 0
    }

    fn pending_state() {
        const ENABLE: u64 = 1;
        const IMASK: u64 = 2;
        timer::count_only();
        cpu::disable_irqs();
        // Condition met at once; give the interrupt time to reach the GIC.
        timer::program(cpu::counter(), ENABLE);
        cpu::delay_us(2000);
        let firing = pending();
        timer::program(cpu::counter(), ENABLE | IMASK);
        let masked = pending();
        timer::program(cpu::counter(), ENABLE);
        cpu::delay_us(2000);
        let unmasked = pending();
        timer::program(cpu::counter() + cpu::counter_hz() * 3600, ENABLE);
        let not_yet = pending();
        timer::program(cpu::counter(), 0);
        let disabled = pending();
        check!(
            "pending-state",
            firing && !masked && unmasked && !not_yet && !disabled,
            "pending: firing {firing} (want true), masked {masked} (false), unmasked again {unmasked} (true), deadline in an hour {not_yet} (false), disabled {disabled} (false)"
        );
        // Enabled and fired, then disabled while interrupts were masked:
        // unmasking them must deliver nothing.
        timer::program(cpu::counter(), ENABLE);
        cpu::delay_us(2000);
        timer::program(cpu::counter(), 0);
        let disabled = pending();
        cpu::enable_irqs();
        cpu::delay_us(20_000);
        let taken = timer::ticks();
        check!(
            "disabled-raises-nothing",
            taken == 0 && !disabled,
            "{taken} timer interrupts taken in 20 ms after the timer was disabled with interrupts masked (want 0); pending after disabling: {disabled} (want false)"
        );
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
