//! Test guest `ipi`: vCPU 0 sends SGI 1 to each secondary `ipi.count`
//! times (default 100; GICv3 ICC_SGI1R_EL1, GICv2 GICD_SGIR), one at a time,
//! and checks every one arrives.
//!
//! `ipi.bench=N`: then N more SGIs to vCPU 1 (which waits in WFI), each
//! sent once the previous one was handled, vCPU 0 waiting with YIELD (so
//! under QEMU's single-threaded TCG its wait costs next to nothing), and
//! prints `RESULT ipi: sgi-ns=...`: nanoseconds from one send to the next,
//! i.e. a virtual IPI's cost end to end (instructions under -icount shift=0).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use testkit::arch::cpu::{self, MAX_CPUS};
    use testkit::arch::{gic, smp};
    use testkit::{check, wait_until, Env};

    testkit::guest!("ipi", main);

    const SGI: u32 = 1;
    static RECEIVED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    static READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    static STOP: AtomicBool = AtomicBool::new(false);

    fn on_sgi(_intid: u32) {
        RECEIVED[cpu::index()].fetch_add(1, Ordering::SeqCst);
    }

    fn secondary(_context: u64) {
        gic::enable(SGI);
        cpu::enable_irqs();
        READY[cpu::index()].store(true, Ordering::SeqCst);
        while !STOP.load(Ordering::SeqCst) {
            cpu::wfi();
        }
        cpu::disable_irqs();
    }

    fn main(env: &'static Env) {
        let n = env.cmdline().get_u64("ipi.count").and_then(Result::ok).unwrap_or(100).clamp(1, 1_000_000);
        let cpus = &env.platform.cpus;
        check!("secondaries", cpus.len() >= 2, "{} vCPUs (need >= 2)", cpus.len());
        gic::set_handler(SGI, on_sgi);
        for (i, c) in cpus.iter().enumerate().skip(1).take(MAX_CPUS - 1) {
            let r = smp::cpu_on(i, c.mpidr, smp::context_id(i, 0), secondary);
            let up = r == Ok(0) && wait_until(1_000_000, || READY[i].load(Ordering::SeqCst));
            if !up {
                check!(&alloc::format!("cpu{i}-sgis"), false, "vCPU {i} did not start (CPU_ON {r:?})");
                continue;
            }
            let start = cpu::counter();
            let mut lost = None;
            for k in 1..=n {
                if let Err(e) = gic::send_sgi(SGI, i) {
                    lost = Some(alloc::format!("cannot send: {e}"));
                    break;
                }
                if !wait_until(100_000, || RECEIVED[i].load(Ordering::SeqCst) >= k) {
                    lost = Some(alloc::format!("SGI {k} not received within 100 ms"));
                    break;
                }
            }
            let got = RECEIVED[i].load(Ordering::SeqCst);
            check!(
                &alloc::format!("cpu{i}-sgis"),
                lost.is_none() && got == n,
                "{got} of {n} SGIs received by MPIDR {:#x} in {} us{}{}",
                c.mpidr,
                cpu::elapsed_us(start),
                if lost.is_some() { ": " } else { "" },
                lost.as_deref().unwrap_or("")
            );
        }
        if let Some(Ok(n)) = env.cmdline().get_u64("ipi.bench") {
            bench(n.clamp(1, 10_000_000));
        }
        STOP.store(true, Ordering::SeqCst);
        for i in 1..cpus.len().min(MAX_CPUS) {
            let _ = gic::send_sgi(SGI, i); // wake it from WFI
        }
        wait_until(1_000_000, || smp::online() == 1);
    }

    /// `ipi.bench=N` (see the module docs).
    fn bench(n: u64) {
        if !READY[1].load(Ordering::SeqCst) {
            return check!("bench", false, "vCPU 1 is not up");
        }
        let base = RECEIVED[1].load(Ordering::SeqCst);
        let start = cpu::counter();
        let deadline = start + cpu::counter_hz() * 10;
        for k in 1..=n {
            if gic::send_sgi(SGI, 1).is_err() {
                return check!("bench", false, "cannot send SGI {k}");
            }
            while RECEIVED[1].load(Ordering::SeqCst) < base + k {
                if cpu::counter() > deadline {
                    return check!("bench", false, "SGI {k} of {n} not handled within 10 s");
                }
                // SAFETY: YIELD is a hint; it changes no register or memory.
                unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
            }
        }
        let ticks = cpu::counter() - start;
        let ns = ticks as u128 * 1_000_000_000 / cpu::counter_hz().max(1) as u128 / n as u128;
        testkit::println!("RESULT ipi: sgi-ns={ns} sgis={n}");
        check!("bench", true, "{n} SGIs to vCPU 1, {ns} ns each");
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
