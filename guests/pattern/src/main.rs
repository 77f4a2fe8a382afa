//! Test guest `pattern`: fills all of its RAM it does not occupy (image,
//! device tree) with an address-derived pattern, then verifies it every
//! `pattern.interval-ms` (default 500) for `pattern.seconds` (default 10).
//! Runs next to `isolation`: any write that reaches it shows as a mismatch.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::cpu;
    use testkit::cmdline::Size;
    use testkit::{check, image_range, println, Env};

    testkit::guest!("pattern", main);

    const GIB: u64 = 1 << 30;

    fn pattern(addr: u64) -> u64 {
        (addr ^ 0x5a5a_a5a5_0f0f_f0f0).rotate_left(13)
    }

    /// RAM minus the image and the device tree, 8-byte aligned, in the
    /// first GiB (the only one the testkit maps as Normal memory).
    fn regions(env: &Env) -> alloc::vec::Vec<(u64, u64)> {
        let (img_lo, img_hi) = image_range();
        let dtb = (env.dtb, env.dtb + env.blob.len() as u64);
        let mut holes = [(img_lo & !0xfff, (img_hi + 0xfff) & !0xfff), (dtb.0 & !0xfff, (dtb.1 + 0xfff) & !0xfff)];
        holes.sort();
        let mut out = alloc::vec::Vec::new();
        for r in &env.platform.memory {
            let (lo, hi) = (r.base.as_u64(), (r.base.as_u64() + r.size).min(r.base.as_u64() / GIB * GIB + GIB));
            let mut at = lo;
            for &(h0, h1) in &holes {
                if h1 <= at || h0 >= hi {
                    continue;
                }
                if h0 > at {
                    out.push((at, h0));
                }
                at = at.max(h1);
            }
            if at < hi {
                out.push((at, hi));
            }
        }
        out
    }

    fn fill(rs: &[(u64, u64)]) {
        for &(lo, hi) in rs {
            let mut a = lo;
            while a < hi {
                // SAFETY: [lo, hi) is this VM's RAM outside the image and the
                // device tree (see `regions`), which nothing else uses.
                unsafe { core::ptr::write_volatile(a as *mut u64, pattern(a)) };
                a += 8;
            }
        }
    }

    /// The first mismatch (address, value) and the number of mismatches.
    fn verify(rs: &[(u64, u64)]) -> (Option<(u64, u64)>, u64) {
        let (mut first, mut bad) = (None, 0);
        for &(lo, hi) in rs {
            let mut a = lo;
            while a < hi {
                // SAFETY: as in `fill`.
                let v = unsafe { core::ptr::read_volatile(a as *const u64) };
                if v != pattern(a) {
                    bad += 1;
                    first.get_or_insert((a, v));
                }
                a += 8;
            }
        }
        (first, bad)
    }

    fn main(env: &'static Env) {
        let cmd = env.cmdline();
        let seconds = cmd.get_u64("pattern.seconds").and_then(Result::ok).unwrap_or(10).clamp(1, 3600);
        let interval = cmd.get_u64("pattern.interval-ms").and_then(Result::ok).unwrap_or(500).clamp(10, 60_000);
        let rs = regions(env);
        let bytes: u64 = rs.iter().map(|(a, b)| b - a).sum();
        let t = cpu::counter();
        fill(&rs);
        println!("NOTE pattern: filled {} in {} range(s) in {} us", Size(bytes), rs.len(), cpu::elapsed_us(t));
        check!("fill", bytes > 0, "{} of RAM patterned", Size(bytes));
        let start = cpu::counter();
        let (mut passes, mut total_bad, mut first) = (0u64, 0u64, None);
        loop {
            let (f, bad) = verify(&rs);
            passes += 1;
            total_bad += bad;
            if first.is_none() {
                first = f;
            }
            if cpu::elapsed_us(start) >= seconds * 1_000_000 {
                break;
            }
            cpu::delay_us(interval * 1000);
        }
        match first {
            None => check!("verify", true, "{passes} passes over {seconds} s, no mismatches"),
            Some((a, v)) => check!(
                "verify",
                false,
                "{total_bad} mismatching words in {passes} passes; first at {a:#x}: {v:#x} (want {:#x})",
                pattern(a)
            ),
        }
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
