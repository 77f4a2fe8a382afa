//! Test guest `mmio`: accesses to the IPA window 0x0B00_0000..0x0B00_1000,
//! which the hypervisor forwards to dom0's "MMIO test device": 32 64-bit
//! read/write registers at 0x00..0x100 (stride 8; a write of size s at
//! offset o stores bytes o..o+s little-endian), a read-only magic register
//! at 0x100 (0x1234_5678_9abc_def0), nothing behind 0x100..0x1000 (aborts).
//! Every access is one load or store with a register base and no writeback
//! (`hv_mmio`, or the inline asm below), so the hypervisor gets a syndrome.
//! Checks: `magic`, `sizes`, `sign-extension`, `xzr`, `outside`, `load-pair`, `bench`.
//! Bare QEMU has no device there: the first read aborts, `magic` FAILs and
//! the rest is skipped.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    extern crate alloc;

    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::arch::asm;

    use hv_mmio::{read32, read64, read8, write32, write64, write8};
    use testkit::arch::cpu;
    use testkit::arch::exception::{probe_read, probe_read_pair};
    use testkit::esr::Fault;
    use testkit::{check, println, Env};

    testkit::guest!("mmio", main);

    const BASE: usize = 0x0b00_0000;
    const WINDOW_SIZE: usize = 0x1000;
    /// The 32 read/write registers occupy 0x00..0x100.
    const REGS_SIZE: usize = 0x100;
    const MAGIC_OFF: usize = 0x100;
    const MAGIC: u64 = 0x1234_5678_9abc_def0;
    /// Inside the window, past the device's registers.
    const OUTSIDE_OFF: usize = 0x200;
    /// What a destination register holds before a load, so a load that
    /// writes only part of it shows.
    const GARBAGE: u64 = 0x5a5a_5a5a_5a5a_5a5a;

    // hv-mmio has no 16-bit accessors; these are the same shape.
    /// # Safety
    /// `addr` must be a mapped device register.
    unsafe fn read16(addr: usize) -> u16 {
        let v: u64;
        // SAFETY: per the caller's contract; one LDRH, register base.
        unsafe {
            asm!("ldrh {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, preserves_flags))
        };
        v as u16
    }

    /// # Safety
    /// `addr` must be a mapped device register.
    unsafe fn write16(addr: usize, value: u16) {
        // SAFETY: per the caller's contract; one STRH, register base.
        unsafe {
            asm!("strh {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value as u64, options(nostack, preserves_flags))
        };
    }

    /// A load of `size` bytes at `BASE + off`, zero-extended.
    fn rd(off: usize, size: u8) -> u64 {
        assert!(off + size as usize <= WINDOW_SIZE && off.is_multiple_of(size as usize));
        let a = BASE + off;
        // SAFETY: inside the device window, naturally aligned.
        unsafe {
            match size {
                1 => read8(a) as u64,
                2 => read16(a) as u64,
                4 => read32(a) as u64,
                _ => read64(a),
            }
        }
    }

    /// A store of the low `size` bytes of `value` at `BASE + off`.
    fn wr(off: usize, size: u8, value: u64) {
        assert!(off + size as usize <= REGS_SIZE && off.is_multiple_of(size as usize));
        let a = BASE + off;
        // SAFETY: one of the device's read/write registers, naturally aligned.
        unsafe {
            match size {
                1 => write8(a, value as u8),
                2 => write16(a, value as u16),
                4 => write32(a, value as u32),
                _ => write64(a, value),
            }
        }
    }

    /// What the registers should hold, byte by byte.
    struct Model([u8; REGS_SIZE]);

    impl Model {
        fn write(&mut self, off: usize, size: u8, value: u64) {
            self.0[off..off + size as usize].copy_from_slice(&value.to_le_bytes()[..size as usize]);
        }
        fn read(&self, off: usize, size: u8) -> u64 {
            let mut b = [0u8; 8];
            b[..size as usize].copy_from_slice(&self.0[off..off + size as usize]);
            u64::from_le_bytes(b)
        }
    }

    #[derive(Clone, Copy)]
    enum Op {
        W(usize, u8, u64),
        R(usize, u8),
    }
    use Op::{R, W};

    fn op_name(size: u8) -> &'static str {
        match size {
            1 => "8",
            2 => "16",
            4 => "32",
            _ => "64",
        }
    }

    /// Runs `ops` on the device and the model; every read must match.
    /// `Ok(reads)`, or the mismatches (at most 4 described).
    fn run(model: &mut Model, ops: &[Op], reads: &mut u32, bad: &mut Vec<String>) {
        for op in ops {
            match *op {
                W(off, size, value) => {
                    wr(off, size, value);
                    model.write(off, size, value);
                }
                R(off, size) => {
                    *reads += 1;
                    let (got, want) = (rd(off, size), model.read(off, size));
                    if got != want {
                        bad.push(format!(
                            "read{}({off:#x}) = {got:#x} (want {want:#x})",
                            op_name(size)
                        ));
                    }
                }
            }
        }
    }

    fn magic() -> bool {
        let probed = match probe_read((BASE + MAGIC_OFF) as u64) {
            Ok(v) => v,
            Err(c) => {
                check!(
                    "magic",
                    false,
                    "read64 {:#x} aborted: {}: no MMIO test device (bare QEMU? the hypervisor must forward {BASE:#x}..{:#x} to dom0); other checks skipped",
                    BASE + MAGIC_OFF,
                    Fault(c.esr),
                    BASE + WINDOW_SIZE
                );
                return false;
            }
        };
        let (r64, lo, hi) = (rd(MAGIC_OFF, 8), rd(MAGIC_OFF, 4), rd(MAGIC_OFF + 4, 4));
        let pass =
            probed == MAGIC && r64 == MAGIC && lo == MAGIC & 0xffff_ffff && hi == MAGIC >> 32;
        check!(
            "magic",
            pass,
            "read64(0x100) = {r64:#x} (first read {probed:#x}), read32(0x100) = {lo:#x}, read32(0x104) = {hi:#x} (want {MAGIC:#x}, {:#x}, {:#x})",
            MAGIC & 0xffff_ffff,
            MAGIC >> 32
        );
        true
    }

    fn sizes() {
        let mut model = Model([0; REGS_SIZE]);
        let (mut reads, mut bad) = (0u32, Vec::new());
        // Every register holds its own value, and they read back apart.
        let all: Vec<Op> = (0..REGS_SIZE / 8)
            .map(|i| {
                W(
                    i * 8,
                    8,
                    0xa5a5_0000_0000_0000 | (i as u64) << 32 | (!(i as u64) & 0xffff_ffff),
                )
            })
            .collect();
        run(&mut model, &all, &mut reads, &mut bad);
        let all: Vec<Op> = (0..REGS_SIZE / 8).map(|i| R(i * 8, 8)).collect();
        run(&mut model, &all, &mut reads, &mut bad);
        #[rustfmt::skip]
        let ops = [
            // Register 0: each size written, each size read back.
            W(0x00, 8, 0x0123_4567_89ab_cdef), R(0x00, 8), R(0x00, 4), R(0x04, 4), R(0x00, 2), R(0x06, 2), R(0x00, 1), R(0x07, 1),
            W(0x00, 4, 0xdead_beef), R(0x00, 8), R(0x00, 4), R(0x04, 4),
            W(0x04, 4, 0x7654_3210), R(0x00, 8),
            W(0x02, 2, 0x5aa5), R(0x00, 8), R(0x02, 2), R(0x00, 4),
            W(0x06, 2, 0xc33c), R(0x00, 8), R(0x04, 4),
            W(0x00, 1, 0x11), W(0x05, 1, 0xee), R(0x00, 8), R(0x00, 1), R(0x05, 1), R(0x04, 2), R(0x04, 4),
            // A 32-bit register in a 64-bit slot: the upper half stays.
            W(0x08, 8, 0), W(0x08, 4, 0xcafe_f00d), R(0x08, 4), R(0x08, 8),
            W(0x08, 8, u64::MAX), W(0x08, 4, 0x1234_5678), R(0x08, 4), R(0x08, 8), R(0x0c, 4),
            // Sub-word reads of a 64-bit value.
            W(0x10, 8, 0x1122_3344_5566_7788), R(0x10, 1), R(0x12, 2), R(0x14, 4), R(0x17, 1), R(0x10, 8),
            // The neighbours were left alone.
            R(0x00, 8), R(0x08, 8), R(0x10, 8), R(0x18, 8), R(0xf8, 8),
        ];
        run(&mut model, &ops, &mut reads, &mut bad);
        if bad.is_empty() {
            check!(
                "sizes",
                true,
                "{reads} reads of 32 registers match (writes and reads of 1/2/4/8 bytes; read64(0x0) = {:#x}, read64(0x8) = {:#x} after write32 0x12345678 over all-ones, read8(0x10) = {:#x} read16(0x12) = {:#x} read32(0x14) = {:#x})",
                model.read(0, 8),
                model.read(8, 8),
                model.read(0x10, 1),
                model.read(0x12, 2),
                model.read(0x14, 4)
            );
        } else {
            let shown: Vec<&str> = bad.iter().take(4).map(String::as_str).collect();
            check!(
                "sizes",
                false,
                "{} of {reads} reads wrong: {}",
                bad.len(),
                shown.join("; ")
            );
        }
    }

    macro_rules! load {
        ($insn:literal, $addr:expr) => {{
            let mut v = GARBAGE;
            // SAFETY: one load from the device's registers, register base.
            unsafe { asm!(concat!($insn, ", [{a}]"), a = in(reg) $addr, v = inout(reg) v, options(nostack, preserves_flags)) };
            v
        }};
    }

    fn sign_extension() {
        wr(0x18, 8, 0);
        wr(0x18, 1, 0x80);
        wr(0x19, 1, 0x7f);
        wr(0x1a, 2, 0x8001);
        wr(0x1c, 4, 0x8000_0000);
        let whole = rd(0x18, 8);
        let a = BASE + 0x18;
        let mut cases: Vec<(&str, u64, u64)> = Vec::new();
        cases.push((
            "ldrsb x 0x80",
            load!("ldrsb {v:x}", a),
            0xffff_ffff_ffff_ff80,
        ));
        cases.push((
            "ldrsb w 0x80",
            load!("ldrsb {v:w}", a),
            0x0000_0000_ffff_ff80,
        ));
        cases.push(("ldrsb x 0x7f", load!("ldrsb {v:x}", a + 1), 0x7f));
        cases.push((
            "ldrsh x 0x8001",
            load!("ldrsh {v:x}", a + 2),
            0xffff_ffff_ffff_8001,
        ));
        cases.push((
            "ldrsh w 0x8001",
            load!("ldrsh {v:w}", a + 2),
            0x0000_0000_ffff_8001,
        ));
        cases.push((
            "ldrsw x 0x80000000",
            load!("ldrsw {v:x}", a + 4),
            0xffff_ffff_8000_0000,
        ));
        cases.push(("ldrb w 0x80", load!("ldrb {v:w}", a), 0x80));
        cases.push(("ldrh w 0x8001", load!("ldrh {v:w}", a + 2), 0x8001));
        cases.push(("ldr w 0x80000000", load!("ldr {v:w}", a + 4), 0x8000_0000));
        wr(0x1c, 4, 0x7fff_ffff);
        cases.push((
            "ldrsw x 0x7fffffff",
            load!("ldrsw {v:x}", a + 4),
            0x7fff_ffff,
        ));
        let bad: Vec<String> = cases
            .iter()
            .filter(|c| c.1 != c.2)
            .map(|(n, got, want)| format!("{n} -> {got:#x} (want {want:#x})"))
            .collect();
        let whole_ok = whole == 0x8000_0000_8001_7f80;
        if bad.is_empty() && whole_ok {
            let shown: Vec<String> = cases
                .iter()
                .map(|(n, got, _)| format!("{n} -> {got:#x}"))
                .collect();
            check!("sign-extension", true, "{}", shown.join(", "));
        } else {
            check!(
                "sign-extension",
                false,
                "{} of {} loads wrong: {}; read64(0x18) = {whole:#x} (want 0x8000000080017f80)",
                bad.len(),
                cases.len(),
                bad.join("; ")
            );
        }
    }

    macro_rules! store_zero {
        ($name:ident, $insn:literal) => {
            fn $name(addr: usize) {
                // SAFETY: one store to a read/write register of the device
                // (`xzr` only passes addresses inside register 4), register base.
                unsafe { asm!(concat!($insn, ", [{a}]"), a = in(reg) addr, options(nostack, preserves_flags)) };
            }
        };
    }
    store_zero!(str_xzr, "str xzr");
    store_zero!(str_wzr, "str wzr");
    store_zero!(strh_wzr, "strh wzr");
    store_zero!(strb_wzr, "strb wzr");

    fn xzr() {
        let a = BASE + 0x20;
        let mut cases: Vec<(&str, u64, u64)> = Vec::new();
        let mut store = |name: &'static str, off: usize, want: u64, f: fn(usize)| {
            wr(0x20, 8, u64::MAX);
            f(a + off);
            cases.push((name, rd(0x20, 8), want));
        };
        store("str xzr", 0, 0, str_xzr);
        store("str wzr", 0, 0xffff_ffff_0000_0000, str_wzr);
        store("strh wzr +2", 2, 0xffff_ffff_0000_ffff, strh_wzr);
        store("strb wzr +7", 7, 0x00ff_ffff_ffff_ffff, strb_wzr);
        // A load into xzr is discarded; it must not land in SP.
        wr(0x20, 8, 0x0bad_0bad_0bad_0bad);
        let (sp0, sp1): (u64, u64);
        // SAFETY: one load from register 4 into xzr; SP is only read.
        unsafe {
            asm!("mov {s0}, sp", "ldr xzr, [{a}]", "ldr wzr, [{a}]", "mov {s1}, sp",
                 a = in(reg) a, s0 = out(reg) sp0, s1 = out(reg) sp1, options(nostack, preserves_flags))
        };
        cases.push(("ldr xzr/wzr keeps sp", sp1, sp0));
        let bad: Vec<String> = cases
            .iter()
            .filter(|c| c.1 != c.2)
            .map(|(n, got, want)| format!("{n}: {got:#x} (want {want:#x})"))
            .collect();
        if bad.is_empty() {
            let shown: Vec<String> = cases[..4]
                .iter()
                .map(|(n, got, _)| format!("{n} -> read64 {got:#018x}"))
                .collect();
            check!(
                "xzr",
                true,
                "{}; ldr xzr/wzr left sp alone",
                shown.join(", ")
            );
        } else {
            check!("xzr", false, "{}", bad.join("; "));
        }
    }

    fn outside() {
        let addr = (BASE + OUTSIDE_OFF) as u64;
        match probe_read(addr) {
            Err(c) => check!(
                "outside",
                true,
                "read64 {addr:#x} (past the registers, inside the window): {}",
                Fault(c.esr)
            ),
            Ok(v) => check!(
                "outside",
                false,
                "read64 {addr:#x} returned {v:#x} (want a synchronous external abort)"
            ),
        }
    }

    /// A load pair has no syndrome (ISV = 0): the hypervisor cannot forward
    /// it and must answer with an abort, not guess.
    fn load_pair() {
        let addr = BASE as u64;
        match probe_read_pair(addr) {
            Err(c) => check!("load-pair", true, "ldp at {addr:#x}: {} (no syndrome to emulate)", Fault(c.esr)),
            Ok(v) => check!("load-pair", false, "ldp at {addr:#x} returned {v:#x?} (want an abort)"),
        }
    }

    fn bench(env: &'static Env) {
        let n = match env.cmdline().get_u64("mmio.bench") {
            None => 1000,
            Some(Ok(n)) if (1..=100_000_000).contains(&n) => n,
            Some(Ok(n)) => return check!("bench", false, "mmio.bench={n}: want 1..100000000"),
            Some(Err(text)) => return check!("bench", false, "mmio.bench={text}: not a number"),
        };
        let a = BASE + MAGIC_OFF;
        let mut wrong = 0u64;
        let start = cpu::counter();
        for _ in 0..n {
            // SAFETY: the magic register.
            wrong += (unsafe { read64(a) } != MAGIC) as u64;
        }
        let ticks = cpu::counter() - start;
        let hz = cpu::counter_hz().max(1) as u128;
        let total_ns = ticks as u128 * 1_000_000_000 / hz;
        let ns = total_ns / n as u128;
        println!(
            "RESULT mmio: forwarded-read-ns={ns} reads={n} us={}",
            total_ns / 1000
        );
        check!(
            "bench",
            wrong == 0,
            "{n} forwarded read64s of {a:#x} in {} us, {ns} ns each, {wrong} not the magic",
            total_ns / 1000
        );
    }

    fn main(env: &'static Env) {
        if !magic() {
            return;
        }
        sizes();
        sign_extension();
        xzr();
        outside();
        load_pair();
        bench(env);
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
