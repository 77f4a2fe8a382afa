//! Test guest `pvtime`: overcommit as a guest sees it. Wants 2 vCPUs that
//! share one physical CPU (`pin=` one CPU). Checks, in order:
//! `smccc-version` (1.1 or later), `arch-features` (SMCCC_ARCH_FEATURES
//! offers PV_TIME_FEATURES, not a firmware workaround), `pv-features`
//! (PV_TIME_FEATURES offers itself and PV_TIME_ST, nothing else; an unknown
//! standard hypervisor call is NOT_SUPPORTED), `st-ipa` (each vCPU's
//! structure, 64 bytes apart, outside RAM), `structure` (revision 0,
//! attributes 0), `read-only` (a store there aborts and changes nothing);
//! then, with vCPU 1 counting in a loop: `steal` (while vCPU 0 spins beside
//! it for `pvtime.ms` (default 400) ms, its stolen time grows by a quarter
//! to all of that) and, with `pvtime.wfe=1`, `wfe-yields` (while vCPU 0
//! spins on WFE instead, vCPU 1 counts at least 1.5 times as fast: the
//! hypervisor gives it the CPU). Prints `RESULT pvtime: ...` with the
//! figures. QEMU (10.0 included) never traps WFE to EL2 (`HCR_EL2.TWE` is
//! not modelled: its WFE only yields QEMU's own thread), so there
//! `wfe-yields` would fail whatever the hypervisor does: it is judged only
//! when asked for (hardware), and reported as a NOTE otherwise.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    extern crate alloc;

    use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

    use testkit::arch::exception::{guarded_hvc, probe_write};
    use testkit::arch::{cpu, smp};
    use testkit::hv_abi::hypercall::guest;
    use testkit::hv_abi::pvtime::{PV_TIME_FEATURES, PV_TIME_ST, STOLEN_TIME_OFFSET, STRIDE};
    use testkit::{check, println, wait_until, Env};

    testkit::guest!("pvtime", main);

    const SMCCC_VERSION: u32 = 0x8000_0000;
    const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;
    const NOT_SUPPORTED: i64 = -1;
    /// The standard hypervisor service call after PV_TIME_ST: not offered.
    const UNKNOWN_HV_CALL: u32 = 0xC500_0022;

    /// vCPU 1's loop count, published as it goes.
    static COUNT: AtomicU64 = AtomicU64::new(0);
    static STOP: AtomicBool = AtomicBool::new(false);
    /// vCPU 1's PV_TIME_ST answer (0: not asked yet).
    static ST1: AtomicI64 = AtomicI64::new(0);

    fn smccc(id: u32, a1: u64) -> Option<i64> {
        guarded_hvc([id as u64, a1, 0, 0]).ok().map(|r| r[0] as i64)
    }

    /// vCPU 1: asks for its structure, then counts until told to stop.
    fn counter(_context: u64) {
        ST1.store(smccc(PV_TIME_ST, 0).unwrap_or(NOT_SUPPORTED), Ordering::SeqCst);
        let mut n = 0u64;
        while !STOP.load(Ordering::Relaxed) {
            for _ in 0..64 {
                n = core::hint::black_box(n + 1);
            }
            COUNT.store(n, Ordering::Relaxed);
        }
    }

    /// The stolen time (ns) of the structure at `ipa` (VA == IPA).
    fn stolen_ns(ipa: u64) -> u64 {
        // SAFETY: `ipa` is the calling vCPU's stolen-time structure, which
        // the identity map covers (as Device: read with an aligned 64-bit
        // load); the hypervisor keeps it mapped for the VM's life.
        u64::from_le(unsafe { core::ptr::read_volatile((ipa + STOLEN_TIME_OFFSET) as *const u64) })
    }

    /// vCPU 1's count over `ms` milliseconds while vCPU 0 runs `spin`
    /// (which gets the end counter value), and vCPU 0's stolen time over
    /// them (ns), and the elapsed time (us).
    fn phase(ms: u64, st: u64, spin: fn(u64)) -> (u64, u64, u64) {
        let start = cpu::counter();
        let (count0, stolen0) = (COUNT.load(Ordering::Relaxed), stolen_ns(st));
        spin(start + cpu::counter_hz() * ms / 1000);
        let (count1, stolen1) = (COUNT.load(Ordering::Relaxed), stolen_ns(st));
        (count1 - count0, stolen1.saturating_sub(stolen0), cpu::elapsed_us(start))
    }

    fn busy_until(end: u64) {
        while cpu::counter() < end {
            core::hint::spin_loop();
        }
    }

    fn wfe_until(end: u64) {
        while cpu::counter() < end {
            cpu::wfe();
        }
    }

    fn main(env: &'static Env) {
        let version = smccc(SMCCC_VERSION, 0);
        check!("smccc-version", version.is_some_and(|v| v >= 0x1_0001), "{version:?} (want >= 0x10001)");
        let features = smccc(SMCCC_ARCH_FEATURES, PV_TIME_FEATURES as u64);
        let workaround = smccc(SMCCC_ARCH_FEATURES, SMCCC_ARCH_WORKAROUND_1 as u64);
        check!(
            "arch-features",
            features == Some(0) && workaround == Some(NOT_SUPPORTED),
            "PV_TIME_FEATURES {features:?} (want 0), WORKAROUND_1 {workaround:?} (want -1)"
        );
        let answers = [
            smccc(PV_TIME_FEATURES, PV_TIME_FEATURES as u64),
            smccc(PV_TIME_FEATURES, PV_TIME_ST as u64),
            smccc(PV_TIME_FEATURES, UNKNOWN_HV_CALL as u64),
            smccc(UNKNOWN_HV_CALL, 0),
        ];
        check!(
            "pv-features",
            answers == [Some(0), Some(0), Some(NOT_SUPPORTED), Some(NOT_SUPPORTED)],
            "FEATURES(FEATURES, ST, {UNKNOWN_HV_CALL:#x}), {UNKNOWN_HV_CALL:#x}(): {answers:?} (want 0, 0, -1, -1)"
        );
        let cpus = &env.platform.cpus;
        if cpus.len() < 2 {
            check!("secondaries", false, "{} vCPUs (need 2 sharing one CPU)", cpus.len());
            return;
        }
        let r = smp::cpu_on(1, cpus[1].mpidr, smp::context_id(1, 0), counter);
        let up = r == Ok(0) && wait_until(2_000_000, || ST1.load(Ordering::SeqCst) != 0);
        check!("secondaries", up, "vCPU 1 started (CPU_ON {r:?})");
        if !up {
            return;
        }
        let st0 = smccc(PV_TIME_ST, 0).unwrap_or(NOT_SUPPORTED);
        let st1 = ST1.load(Ordering::SeqCst);
        let in_ram = |ipa: i64| env.platform.memory.iter().any(|m| (m.base.as_u64()..m.base.as_u64() + m.size).contains(&(ipa as u64)));
        check!(
            "st-ipa",
            st0 == guest::PV_TIME_BASE as i64 && st1 == st0 + STRIDE as i64 && !in_ram(st0) && !in_ram(st1),
            "vCPU 0 {st0:#x}, vCPU 1 {st1:#x} (want {:#x} and 64 bytes on, outside RAM)",
            guest::PV_TIME_BASE
        );
        if st0 <= 0 {
            STOP.store(true, Ordering::SeqCst);
            return;
        }
        let st = st0 as u64;
        // SAFETY: as in `stolen_ns`; the first two words of the structure.
        let head = unsafe { core::ptr::read_volatile(st as *const u64) };
        let (revision, attributes) = (head as u32, (head >> 32) as u32);
        check!("structure", revision == 0 && attributes == 0, "revision {revision}, attributes {attributes} (want 0, 0)");
        let before = stolen_ns(st);
        let store = probe_write(st + STOLEN_TIME_OFFSET, 0xdead_beef);
        check!(
            "read-only",
            store.is_err() && stolen_ns(st) >= before,
            "store {} and the value {} (was {before})",
            if store.is_err() { "aborted" } else { "went through" },
            stolen_ns(st)
        );

        let ms = env.cmdline().get_u64("pvtime.ms").and_then(Result::ok).unwrap_or(400).clamp(50, 10_000);
        let (busy_count, busy_stolen, busy_us) = phase(ms, st, busy_until);
        let (wfe_count, wfe_stolen, wfe_us) = phase(ms, st, wfe_until);
        STOP.store(true, Ordering::SeqCst);
        let stolen_vs_elapsed = busy_stolen as f64 / (busy_us as f64 * 1000.0);
        let busy_rate = busy_count as f64 / busy_us.max(1) as f64;
        let wfe_rate = wfe_count as f64 / wfe_us.max(1) as f64;
        let ratio = wfe_rate / busy_rate.max(f64::MIN_POSITIVE);
        println!(
            "RESULT pvtime: busy-count={busy_count} busy-us={busy_us} busy-stolen-us={} wfe-count={wfe_count} wfe-us={wfe_us} wfe-stolen-us={} wfe-vs-busy={ratio:.2}",
            busy_stolen / 1000,
            wfe_stolen / 1000
        );
        check!(
            "steal",
            (0.25..=1.05).contains(&stolen_vs_elapsed),
            "{} us of {busy_us} us stolen while both spun ({:.0} %; want 25..105 %)",
            busy_stolen / 1000,
            stolen_vs_elapsed * 100.0
        );
        let detail = alloc::format!(
            "vCPU 1 counted {wfe_count} in {wfe_us} us beside WFE, {busy_count} in {busy_us} us beside a busy loop: {ratio:.2} times as fast"
        );
        if env.cmdline().flag("pvtime.wfe") {
            check!("wfe-yields", busy_count > 0 && ratio >= 1.5, "{detail} (want >= 1.5)");
        } else {
            println!("NOTE pvtime: wfe-yields not judged (pvtime.wfe=1 judges it; QEMU's WFE never traps to EL2): {detail}");
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
