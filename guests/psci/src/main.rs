//! Test guest `psci`: PSCI 1.1 as the guest sees it: versions, features,
//! CPU_ON with entry and context id, AFFINITY_INFO through a secondary's
//! life, and the error codes for repeated, malformed and unknown calls.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use testkit::arch::cpu::{self, MAX_CPUS};
    use testkit::arch::psci::{self, *};
    use testkit::arch::smp;
    use testkit::{check, wait_until, Env};

    testkit::guest!("psci", main);

    /// What each secondary saw: its MPIDR and x0 (u64::MAX: not yet).
    static SEEN_MPIDR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
    static SEEN_X0: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_CPUS];
    static RELEASE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

    const SECOND: u64 = 1_000_000;

    fn secondary(x0: u64) {
        let me = cpu::index();
        SEEN_MPIDR[me].store(cpu::mpidr(), Ordering::SeqCst);
        SEEN_X0[me].store(x0, Ordering::SeqCst);
        while !RELEASE[me].load(Ordering::SeqCst) {
            core::hint::spin_loop();
        }
        // Returning makes the testkit call CPU_OFF.
    }

    fn show(r: Result<i64, testkit::arch::exception::Caught>) -> (i64, &'static str) {
        match r {
            Ok(v) => (v, ""),
            Err(_) => (i64::MIN, " (hvc UNDEFINED)"),
        }
    }

    fn main(env: &'static Env) {
        let (v, note) = show(psci::call(PSCI_VERSION, 0, 0, 0));
        check!("version", v == 0x10001, "{v:#x}{note} (want 0x10001 = 1.1)");

        let (v, note) = show(psci::call(PSCI_FEATURES, CPU_ON as u64, 0, 0));
        check!("features-cpu-on", v >= 0, "{v}{note}");

        // SMCCC 1.0 has no SMCCC_VERSION: NOT_SUPPORTED means 1.0. The
        // hypervisor implements 1.1; `expect.smccc=1.0` accepts QEMU's PSCI.
        let want_1_0 = env.cmdline().get("expect.smccc") == Some("1.0");
        let (v, note) = show(psci::call(SMCCC_VERSION, 0, 0, 0));
        let ok = if want_1_0 { v == NOT_SUPPORTED } else { v >= 0x10001 };
        let want = if want_1_0 { "-1 = SMCCC 1.0 (expect.smccc=1.0)" } else { ">= 0x10001 = 1.1" };
        check!("smccc-version", ok, "{v:#x}{note} (want {want})");

        let (v, note) = show(psci::call(MIGRATE_INFO_TYPE, 0, 0, 0));
        check!("migrate-info-type", v == 2, "{v}{note} (want 2: no Trusted OS)");

        let (v, note) = show(psci::call(0x8400_00ff, 0, 0, 0));
        check!("unknown-function", v == NOT_SUPPORTED, "0x840000ff -> {v}{note} (want -1)");

        let bad = 0xff_ff00_ffff;
        let (v, note) = show(psci::call(CPU_ON, bad, smp::entry_point(), 0));
        check!("cpu-on-bad-mpidr", v == INVALID_PARAMETERS, "MPIDR {bad:#x} -> {v}{note} (want -2)");

        let cpus = &env.platform.cpus;
        check!("secondaries", cpus.len() >= 2, "{} vCPUs in the device tree (need >= 2)", cpus.len());
        for (i, c) in cpus.iter().enumerate().skip(1).take(MAX_CPUS - 1) {
            one_secondary(i, c.mpidr);
        }
    }

    fn one_secondary(i: usize, mpidr: u64) {
        let name = |what: &str| alloc::format!("cpu{i}-{what}");
        let ctx = smp::context_id(i, 0xc0_ffee + i as u64);
        RELEASE[i].store(false, Ordering::SeqCst);
        let (v, note) = show(smp::cpu_on(i, mpidr, ctx, secondary));
        check!(&name("cpu-on"), v == SUCCESS, "MPIDR {mpidr:#x} context {ctx:#x} -> {v}{note}");
        if v != SUCCESS {
            return;
        }
        let started = wait_until(SECOND, || SEEN_X0[i].load(Ordering::SeqCst) != u64::MAX);
        let seen_mpidr = SEEN_MPIDR[i].load(Ordering::SeqCst);
        let seen_x0 = SEEN_X0[i].load(Ordering::SeqCst);
        check!(
            &name("entry"),
            started && seen_mpidr == mpidr && seen_x0 == ctx,
            "reports MPIDR {seen_mpidr:#x} x0 {seen_x0:#x} (want {mpidr:#x}, {ctx:#x})"
        );
        let (v, note) = show(psci::call(AFFINITY_INFO, mpidr, 0, 0));
        check!(&name("affinity-on"), v == AFFINITY_ON, "{v}{note} (want 0 = ON)");
        let (v, note) = show(psci::call(CPU_ON, mpidr, smp::entry_point(), ctx));
        check!(&name("already-on"), v == ALREADY_ON, "{v}{note} (want -4)");
        RELEASE[i].store(true, Ordering::SeqCst);
        let mut last = i64::MIN;
        let off = wait_until(SECOND, || {
            last = psci::call(AFFINITY_INFO, mpidr, 0, 0).unwrap_or(i64::MIN);
            last == AFFINITY_OFF
        });
        check!(&name("affinity-off"), off, "{last} after CPU_OFF (want 1 = OFF)");
        // And it can be started again.
        SEEN_X0[i].store(u64::MAX, Ordering::SeqCst);
        RELEASE[i].store(true, Ordering::SeqCst);
        let ctx2 = smp::context_id(i, 0xbeef);
        let (v, _) = show(smp::cpu_on(i, mpidr, ctx2, secondary));
        let again = v == SUCCESS && wait_until(SECOND, || SEEN_X0[i].load(Ordering::SeqCst) == ctx2);
        let off2 = again
            && wait_until(SECOND, || psci::call(AFFINITY_INFO, mpidr, 0, 0) == Ok(AFFINITY_OFF));
        check!(&name("restart"), again && off2, "CPU_ON after CPU_OFF -> {v}, ran: {again}, off again: {off2}");
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
