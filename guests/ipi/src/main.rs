//! Test guest `ipi`: vCPU 0 sends SGI 1 to each secondary `ipi.count`
//! times (default 100; GICv3 ICC_SGI1R_EL1, GICv2 GICD_SGIR), one at a time,
//! and checks every one arrives.
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
        STOP.store(true, Ordering::SeqCst);
        for i in 1..cpus.len().min(MAX_CPUS) {
            let _ = gic::send_sgi(SGI, i); // wake it from WFI
        }
        wait_until(1_000_000, || smp::online() == 1);
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
