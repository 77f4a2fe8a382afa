//! Test guest `bench`: the six micro-benchmarks of the interrupt and exit
//! paths (issue 13), each timed on the virtual counter. Under QEMU's
//! `-icount shift=0` virtual time advances one nanosecond per instruction,
//! so the figures, converted from counter ticks to nanoseconds with
//! CNTFRQ_EL0, are instructions per operation. Needs 2 vCPUs.
//!
//! | key | operation | how |
//! |---|---|---|
//! | `hypercall` | null hypercall round trip | `hvc #0` with `Version`, N times, minus an empty loop |
//! | `gicd-read` | trapped GIC distributor read | GICD_TYPER, N times, minus an empty loop |
//! | `eoi` | EOI of a handled interrupt | the EOI write of each SGI of `ipi`, bracketed by counter reads, minus two back-to-back reads |
//! | `ipi` | virtual IPI | vCPU 0 reads the counter and sends SGI 1 to vCPU 1 (waiting in WFI); vCPU 1's handler reads the counter first thing; the difference, minus two back-to-back reads |
//! | `timer` | virtual timer latency | CNTV_CVAL = now + 10 ms, WFI; the handler reads the counter first thing; the excess over CVAL |
//! | `uart-read` | guest UART status read | UARTFR of the console PL011, N times, minus an empty loop (dom0 emulates a guest's PL011 when its toolstack made the VM, and publishes UARTFR's value for the hypervisor to answer with: what a driver reads before every byte) |
//! | `uart-fwd` | guest UART read forwarded to dom0 and back | UARTRIS of the same PL011 (always a request to dom0), N times, minus an empty loop |
//!
//! Bootargs: `bench.n=N` (iterations of each loop, default 2000),
//! `bench.timers=N` (10 ms timers, default 20), `bench.ops=a+b+...` (only
//! these keys; default all), `bench.timer-wait=spin` (vCPU 0 spins
//! until its timer fires instead of waiting in WFI), `bench.icount=1` (the run is under
//! `-icount shift=0`: check that a calibration loop of known length reads
//! as its own instruction count, within 2 %), `bench.pause-ms=N` (wait N ms
//! in WFI before the first operation, after printing `NOTE bench: pausing`:
//! under `-icount shift=0,sleep=on` that is wall-clock time for a tracer to
//! switch QEMU's instruction log on, see scripts/trace-bench.sh),
//! `bench.settle-ms=N` (wait N ms in WFI before each operation, default
//! 20: the line printed before it goes through dom0's console, on another
//! CPU, and under -icount what that CPU executes during the loop would
//! count as the operation's time; 0 turns it off).
//!
//! Prints `RESULT bench: KEY=NS` for each operation, then one TEST line per
//! operation (it completed; FAIL if an SGI, a timer or the hypervisor did not answer).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    extern crate alloc;

    use core::arch::asm;
    use core::hint::black_box;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use testkit::arch::exception::guarded_hvc;
    use testkit::arch::{cpu, gic, smp};
    use testkit::hv_abi::hypercall::Function;
    use testkit::{check, println, wait_until, Env};

    testkit::guest!("bench", main);

    const SGI: u32 = 1;
    const UARTFR: u64 = 0x18;
    const UARTRIS: u64 = 0x3c;
    const GICD_TYPER: u64 = 0x4;

    /// vCPU 1: SGIs handled, the counter at the last one's handler entry,
    /// and a sequence number it publishes each time it goes back to WFI.
    static RECEIVED: AtomicU64 = AtomicU64::new(0);
    static HANDLED_AT: AtomicU64 = AtomicU64::new(0);
    static WAITING: AtomicU64 = AtomicU64::new(0);
    static READY: AtomicBool = AtomicBool::new(false);
    static STOP: AtomicBool = AtomicBool::new(false);
    /// vCPU 0's virtual timer: expiries handled, the counter at the last one.
    static FIRED: AtomicU64 = AtomicU64::new(0);
    static FIRED_AT: AtomicU64 = AtomicU64::new(0);

    /// Counter ticks to nanoseconds (instructions under -icount shift=0).
    fn ns(ticks: u128) -> u128 {
        ticks * 1_000_000_000 / cpu::counter_hz().max(1) as u128
    }

    /// Counter ticks `n` calls of `f` take.
    fn ticks(n: u64, f: &mut dyn FnMut()) -> u128 {
        let start = cpu::counter();
        for _ in 0..n {
            f();
        }
        (cpu::counter() - start) as u128
    }

    /// Nanoseconds per call of `f`, the empty loop's own cost subtracted.
    fn per_op(n: u64, f: &mut dyn FnMut()) -> u128 {
        let base = ticks(n, &mut || black_box(()));
        ns(ticks(n, f).saturating_sub(base)) / n as u128
    }

    /// Ticks between two back-to-back [`cpu::counter`] reads, summed over `n`.
    fn counter_pairs(n: u64) -> u128 {
        (0..n)
            .map(|_| {
                let a = cpu::counter();
                (cpu::counter() - a) as u128
            })
            .sum()
    }

    fn on_sgi(_intid: u32) {
        HANDLED_AT.store(cpu::counter(), Ordering::SeqCst);
        RECEIVED.fetch_add(1, Ordering::SeqCst);
    }

    fn on_timer(_intid: u32) {
        FIRED_AT.store(cpu::counter(), Ordering::SeqCst);
        set_vtimer_ctl(0b10); // IMASK, disabled: the line drops
        FIRED.fetch_add(1, Ordering::SeqCst);
    }

    fn set_vtimer_ctl(value: u64) {
        // SAFETY: enables/disables/masks this vCPU's virtual timer only.
        unsafe { asm!("msr cntv_ctl_el0, {}", "isb", in(reg) value, options(nomem, nostack)) };
    }

    fn set_vtimer_cval(value: u64) {
        // SAFETY: programs this vCPU's virtual timer compare value only.
        unsafe { asm!("msr cntv_cval_el0, {}", "isb", in(reg) value, options(nomem, nostack)) };
    }

    fn secondary(_context: u64) {
        gic::enable(SGI);
        cpu::enable_irqs();
        READY.store(true, Ordering::SeqCst);
        while !STOP.load(Ordering::SeqCst) {
            WAITING.fetch_add(1, Ordering::SeqCst);
            cpu::wfi();
        }
        cpu::disable_irqs();
    }

    /// Waits (YIELD: under QEMU's single-threaded TCG the other CPU runs)
    /// until `done`, for at most 10 s of virtual time.
    fn wait(done: impl Fn() -> bool) -> bool {
        let deadline = cpu::counter() + cpu::counter_hz() * 10;
        while !done() {
            if cpu::counter() > deadline {
                return false;
            }
            // SAFETY: YIELD is a hint; it changes no register or memory.
            unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
        }
        true
    }

    /// A loop of exactly `2 * iters + 1` instructions.
    fn calibration_loop(iters: u64) {
        // SAFETY: only x-register arithmetic and a branch.
        unsafe {
            asm!("1: subs {i}, {i}, #1", "b.ne 1b", i = inout(reg) iters => _, options(nomem, nostack))
        };
    }

    fn calibrate(env: &Env) {
        const ITERS: u64 = 1_000_000;
        let hz = cpu::counter_hz();
        if env.cmdline().get_u64("bench.icount") != Some(Ok(1)) {
            return println!("RESULT bench: cntfrq={hz}");
        }
        let best = (0..3)
            .map(|_| ticks(1, &mut || calibration_loop(ITERS)))
            .min()
            .unwrap_or(0);
        let measured = ns(best);
        let insns = 2 * ITERS as u128 + 1;
        println!("RESULT bench: cntfrq={hz} calibration-ns={measured} calibration-insns={insns}");
        let off = measured.abs_diff(insns) * 100;
        check!(
            "icount",
            off <= insns * 2,
            "{insns} instructions read as {measured} ns ({best} ticks at CNTFRQ {hz} Hz; want within 2 %)"
        );
    }

    fn hypercall(n: u64) -> Result<u128, &'static str> {
        guarded_hvc([Function::Version as u64, 0, 0, 0])
            .map_err(|_| "hvc is UNDEFINED (no EL2)")?;
        Ok(per_op(n, &mut || {
            // SAFETY: HVC #0 `Version`: the hypervisor's ABI changes x0..x3 only.
            unsafe {
                asm!("hvc #0", inout("x0") Function::Version as u64 => _, out("x1") _, out("x2") _, out("x3") _, options(nostack))
            }
        }))
    }

    fn read32(addr: u64) -> u32 {
        // SAFETY: a GIC or PL011 register the device tree names, mapped as
        // Device memory; GICD_TYPER, UARTFR and UARTRIS reads have no side effects.
        unsafe { hv_mmio::read32(addr as usize) }
    }

    /// vCPU 0 sends `n` SGIs to vCPU 1, each once vCPU 1 is back in WFI.
    /// Returns (IPI ns, EOI ns) per SGI.
    fn ipi(n: u64) -> Result<(u128, u128), alloc::string::String> {
        if !READY.load(Ordering::SeqCst) {
            return Err("vCPU 1 is not up".into());
        }
        let mut latency = 0u128;
        gic::time_eoi(true);
        let mut laps = 0;
        for k in 1..=n {
            // After each SGI vCPU 1 counts a lap on its way back to WFI:
            // wait for that, so every SGI finds it waiting.
            if !wait(|| WAITING.load(Ordering::SeqCst) > laps) {
                return Err(alloc::format!(
                    "vCPU 1 did not return to WFI before SGI {k}"
                ));
            }
            laps = WAITING.load(Ordering::SeqCst);
            let base = RECEIVED.load(Ordering::SeqCst);
            let sent = cpu::counter();
            gic::send_sgi(SGI, 1).map_err(|e| alloc::format!("SGI {k}: {e}"))?;
            if !wait(|| RECEIVED.load(Ordering::SeqCst) > base) {
                return Err(alloc::format!("SGI {k} of {n} not handled within 10 s"));
            }
            latency += (HANDLED_AT.load(Ordering::SeqCst) - sent) as u128;
        }
        // The last EOI may still be on its way.
        let done = wait(|| gic::eoi_ticks(1).1 >= n);
        gic::time_eoi(false);
        let (eoi_ticks, eois) = gic::eoi_ticks(1);
        if !done {
            return Err(alloc::format!("{eois} EOIs timed of {n}"));
        }
        let pairs = counter_pairs(n);
        let ipi = ns(latency.saturating_sub(pairs)) / n as u128;
        let eoi = ns((eoi_ticks as u128).saturating_sub(pairs)) / n as u128;
        Ok((ipi, eoi))
    }

    /// `n` virtual timers 10 ms ahead on this vCPU; the mean excess of the
    /// handler's first counter read over the compare value.
    fn timer(env: &Env, n: u64) -> Result<u128, alloc::string::String> {
        let intid = env.platform.timer.virt.intid;
        gic::set_handler(intid, on_timer);
        gic::enable(intid);
        let period = cpu::counter_hz() / 100;
        let spin = env.cmdline().get("bench.timer-wait") == Some("spin");
        let mut excess = 0u128;
        let base = FIRED.load(Ordering::SeqCst);
        for k in base + 1..=base + n {
            let cval = cpu::counter() + period;
            set_vtimer_cval(cval);
            set_vtimer_ctl(1);
            let deadline = cval + cpu::counter_hz() * 2;
            while FIRED.load(Ordering::SeqCst) < k {
                if cpu::counter() > deadline {
                    set_vtimer_ctl(0b10);
                    return Err(alloc::format!(
                        "timer {k} of {n} (INTID {intid}) not handled 2 s after its deadline"
                    ));
                }
                if spin {
                    core::hint::spin_loop();
                } else {
                    cpu::wfi();
                }
            }
            excess += (FIRED_AT.load(Ordering::SeqCst) - cval) as u128;
        }
        Ok(ns(excess) / n as u128)
    }

    /// Never inlined, never removed (the asm is opaque to the compiler),
    /// different from each other: a tracer (scripts/trace-bench.sh) takes
    /// an operation's measurement to lie between a call of this function
    /// and one of [`bench_window_close`].
    /// Both also execute the instruction-count marker (HINT #0x7e,
    /// unallocated, so a NOP), at which tools/insn-count writes what each
    /// CPU has executed (scripts/bench.sh --scale).
    #[inline(never)]
    fn bench_window_open() {
        // SAFETY: NOP and a hint that executes as one.
        unsafe { asm!("nop", "hint #0x7e", options(nomem, nostack, preserves_flags)) };
    }

    #[inline(never)]
    fn bench_window_close() {
        // SAFETY: NOPs and a hint that executes as one.
        unsafe { asm!("nop", "nop", "hint #0x7e", options(nomem, nostack, preserves_flags)) };
    }

    /// `f` between the two window marks.
    /// Runs one measurement: after `settle_ms` in WFI (see the module
    /// comment), between the tracer's marks.
    fn traced<T>(env: &Env, settle_ms: u64, f: impl FnOnce() -> T) -> T {
        if settle_ms > 0 {
            pause(env, settle_ms);
        }
        bench_window_open();
        let r = f();
        bench_window_close();
        r
    }

    /// Waits `ms` in WFI on the virtual timer (`on_timer` handles it).
    fn pause(env: &Env, ms: u64) {
        let intid = env.platform.timer.virt.intid;
        gic::set_handler(intid, on_timer);
        gic::enable(intid);
        let before = FIRED.load(Ordering::SeqCst);
        set_vtimer_cval(cpu::counter() + cpu::counter_hz() * ms / 1000);
        set_vtimer_ctl(1);
        while FIRED.load(Ordering::SeqCst) == before {
            cpu::wfi();
        }
    }

    fn main(env: &'static Env) {
        let cmd = env.cmdline();
        let n = cmd
            .get_u64("bench.n")
            .and_then(Result::ok)
            .unwrap_or(2000)
            .clamp(1, 10_000_000);
        let timers = cmd
            .get_u64("bench.timers")
            .and_then(Result::ok)
            .unwrap_or(20)
            .clamp(1, 10_000);
        let settle = cmd
            .get_u64("bench.settle-ms")
            .and_then(Result::ok)
            .unwrap_or(20)
            .min(1000);
        let ops = cmd.get("bench.ops").unwrap_or("all");
        let want = |key: &str| ops == "all" || ops.split('+').any(|o| o == key);
        let cpus = &env.platform.cpus;
        check!("vcpus", cpus.len() >= 2, "{} vCPUs (need 2)", cpus.len());
        gic::set_handler(SGI, on_sgi);
        if want("ipi") || want("eoi") {
            let c = &cpus[1.min(cpus.len() - 1)];
            let r = smp::cpu_on(1, c.mpidr, smp::context_id(1, 0), secondary);
            let up = r == Ok(0) && wait_until(1_000_000, || READY.load(Ordering::SeqCst));
            check!("vcpu1", up, "CPU_ON {r:?}");
        }
        calibrate(env);
        if let Some(Ok(ms)) = cmd.get_u64("bench.pause-ms") {
            println!("NOTE bench: pausing {ms} ms");
            pause(env, ms.min(60_000));
        }
        let result = |key: &str, r: Result<u128, alloc::string::String>| match r {
            Ok(v) => {
                println!("RESULT bench: {key}={v}");
                check!(key, true, "{v} ns per operation");
            }
            Err(e) => check!(key, false, "{e}"),
        };
        if want("hypercall") {
            result("hypercall", traced(env, settle, || hypercall(n)).map_err(Into::into));
        }
        if want("gicd-read") {
            let typer = env.platform.gic.gicd.base.as_u64() + GICD_TYPER;
            result(
                "gicd-read",
                Ok(traced(env, settle, || {
                    per_op(n, &mut || {
                        black_box(read32(typer));
                    })
                })),
            );
        }
        if want("ipi") || want("eoi") {
            match traced(env, settle, || ipi(n)) {
                Ok((i, e)) => {
                    result("ipi", Ok(i));
                    result("eoi", Ok(e));
                }
                Err(e) => {
                    result("ipi", Err(e.clone()));
                    result("eoi", Err(e));
                }
            }
        }
        if want("timer") {
            result("timer", traced(env, settle, || timer(env, timers)));
        }
        for (key, offset) in [("uart-read", UARTFR), ("uart-fwd", UARTRIS)] {
            if want(key) {
                let reg = env.platform.console.base.as_u64() + offset;
                result(
                    key,
                    Ok(traced(env, settle, || {
                        per_op(n, &mut || {
                            black_box(read32(reg));
                        })
                    })),
                );
            }
        }
        STOP.store(true, Ordering::SeqCst);
        if READY.load(Ordering::SeqCst) {
            let _ = gic::send_sgi(SGI, 1); // wake it from WFI
            wait_until(1_000_000, || smp::online() == 1);
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
