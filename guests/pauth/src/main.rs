//! Test guest `pauth`: its pointer-authentication keys are its own. It
//! sets the five keys (APIA, APIB, APDA, APDB, APGA, each 128 bits) to
//! values made from `pauth.seed=<n>` (default 1), then for `pauth.ms=<n>`
//! (default 2000) reads them back and signs a fixed value with PACGA (the
//! generic key) over and over. Two of these VMs with different seeds, pinned
//! to one physical CPU, take turns on it: with keys shared between VMs,
//! each would read the other's. Checks: `pauth` (the CPU shows FEAT_PAuth
//! with the generic key: needs QEMU `-cpu max`), `keys-kept` (no read-back
//! differs, no signature changes, and the guest was descheduled at least
//! once meanwhile, seen as a gap of a millisecond or more in its loop, or
//! the check proves nothing).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use core::arch::asm;

    use testkit::arch::cpu;
    use testkit::{check, println, Env};

    testkit::guest!("pauth", main);

    /// Reads the ten key halves (APIAKeyLo_EL1 .. APGAKeyHi_EL1).
    fn read_keys() -> [u64; 10] {
        let k: [u64; 10];
        // SAFETY: reading this vCPU's key registers (HCR_EL2.APK lets EL1
        // do so) has no side effects; the caller checked FEAT_PAuth.
        unsafe {
            let (a, b, c, d, e, f, g, h, i, j): (u64, u64, u64, u64, u64, u64, u64, u64, u64, u64);
            asm!(
                "mrs {0}, s3_0_c2_c1_0", "mrs {1}, s3_0_c2_c1_1", "mrs {2}, s3_0_c2_c1_2", "mrs {3}, s3_0_c2_c1_3",
                "mrs {4}, s3_0_c2_c2_0", "mrs {5}, s3_0_c2_c2_1", "mrs {6}, s3_0_c2_c2_2", "mrs {7}, s3_0_c2_c2_3",
                "mrs {8}, s3_0_c2_c3_0", "mrs {9}, s3_0_c2_c3_1",
                out(reg) a, out(reg) b, out(reg) c, out(reg) d, out(reg) e,
                out(reg) f, out(reg) g, out(reg) h, out(reg) i, out(reg) j,
                options(nomem, nostack)
            );
            k = [a, b, c, d, e, f, g, h, i, j];
        }
        k
    }

    fn write_keys(k: &[u64; 10]) {
        // SAFETY: setting this vCPU's own keys; nothing in this image signs
        // pointers (it is built without branch protection), so no live
        // signature depends on the old keys.
        unsafe {
            asm!(
                "msr s3_0_c2_c1_0, {0}", "msr s3_0_c2_c1_1, {1}", "msr s3_0_c2_c1_2, {2}", "msr s3_0_c2_c1_3, {3}",
                "msr s3_0_c2_c2_0, {4}", "msr s3_0_c2_c2_1, {5}", "msr s3_0_c2_c2_2, {6}", "msr s3_0_c2_c2_3, {7}",
                "msr s3_0_c2_c3_0, {8}", "msr s3_0_c2_c3_1, {9}", "isb",
                in(reg) k[0], in(reg) k[1], in(reg) k[2], in(reg) k[3], in(reg) k[4],
                in(reg) k[5], in(reg) k[6], in(reg) k[7], in(reg) k[8], in(reg) k[9],
                options(nomem, nostack)
            );
        }
    }

    /// PACGA x0, x1, x2: the generic key's signature of `value` with
    /// `modifier` (top 32 bits).
    fn pacga(value: u64, modifier: u64) -> u64 {
        let out: u64;
        // SAFETY: PACGA only computes into x0 (FEAT_PAuth with GPA/GPI/GPA3,
        // checked by the caller); encoded by hand for assemblers without
        // the pauth extension. Not `pure`: it reads the key registers, so it
        // must stay after the writes that set them.
        unsafe { asm!(".inst 0x9ac23020", in("x1") value, in("x2") modifier, lateout("x0") out, options(nomem, nostack)) };
        out
    }

    fn id_aa64isar(n: u8) -> u64 {
        let v: u64;
        // SAFETY: reading an ID register (trapped and answered by the
        // hypervisor, or the CPU's own) has no side effects.
        unsafe {
            match n {
                1 => asm!("mrs {}, s3_0_c0_c6_1", out(reg) v, options(nomem, nostack)),
                _ => asm!("mrs {}, s3_0_c0_c6_2", out(reg) v, options(nomem, nostack)),
            }
        }
        v
    }

    /// A splitmix64 step: distinct, well-mixed keys from a small seed.
    fn mix(x: &mut u64) -> u64 {
        *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn main(env: &'static Env) {
        let cmd = env.cmdline();
        let seed = cmd.get_u64("pauth.seed").and_then(Result::ok).unwrap_or(1);
        let ms = cmd.get_u64("pauth.ms").and_then(Result::ok).unwrap_or(2000).clamp(100, 60_000);
        let (isar1, isar2) = (id_aa64isar(1), id_aa64isar(2));
        // ISAR1: APA [7:4], API [11:8], GPA [27:24], GPI [31:28]; ISAR2: GPA3 [11:8], APA3 [15:12].
        let address = (isar1 >> 4) & 0xff != 0 || (isar2 >> 12) & 0xf != 0;
        let generic = (isar1 >> 24) & 0xff != 0 || (isar2 >> 8) & 0xf != 0;
        check!("pauth", address && generic, "ID_AA64ISAR1 {isar1:#x} ISAR2 {isar2:#x}: address keys {address}, generic key {generic} (QEMU needs -cpu max)");
        if !(address && generic) {
            return;
        }
        let mut x = seed.wrapping_mul(0x1000_0001);
        let mut keys = [0u64; 10];
        for k in &mut keys {
            *k = mix(&mut x);
        }
        write_keys(&keys);
        let signature = pacga(0x1234_5678_9abc_def0, seed << 32);
        println!("NOTE pauth: seed {seed}: APGAKey {:#018x}{:016x}, PACGA {signature:#x}", keys[9], keys[8]);

        let hz = cpu::counter_hz();
        let gap = (hz / 1000).max(1); // a millisecond
        let start = cpu::counter();
        let end = start + ms * hz / 1000;
        let (mut rounds, mut gaps, mut bad_keys, mut bad_signatures) = (0u64, 0u64, 0u64, 0u64);
        let mut first_bad = None;
        let mut last = start;
        loop {
            let now = cpu::counter();
            if now >= end {
                break;
            }
            if now - last >= gap {
                gaps += 1;
            }
            last = now;
            rounds += 1;
            let seen = read_keys();
            if seen != keys {
                bad_keys += 1;
                first_bad.get_or_insert(seen);
            }
            if pacga(0x1234_5678_9abc_def0, seed << 32) != signature {
                bad_signatures += 1;
            }
        }
        let mut detail = alloc::format!(
            "{rounds} reads of the 5 keys and PACGA signatures over {ms} ms, descheduled {gaps} times; {bad_keys} key reads and {bad_signatures} signatures differed"
        );
        if let Some(seen) = first_bad {
            detail.push_str(&alloc::format!("; first wrong APGAKey {:#018x}{:016x}", seen[9], seen[8]));
        }
        check!("keys-kept", bad_keys == 0 && bad_signatures == 0 && gaps > 0, "{detail}");
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
