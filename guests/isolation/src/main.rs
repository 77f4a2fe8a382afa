//! Test guest `isolation`: every IPA outside the windows its device tree
//! advertises (RAM, device `reg`s, bus `ranges`) must abort, for reads
//! and for writes. Named probes first (around RAM, 0, 4 GiB, 128 TiB, the
//! GIC's gaps, past the UART), then every 2 MiB-aligned IPA below 4 GiB.
//! Named addresses inside an advertised window are skipped with a NOTE line.
//! Then the architecture's answer for the other two ways to touch such an
//! address: an instruction fetch from it (`fetch-hole`: a prefetch abort,
//! IFSC 0x10), and the guest's own MMU walking a table there
//! (`walk-hole-load`, `walk-hole-fetch`: an external abort on the walk,
//! FSC 0b0101LL with the stage-1 level, 2 here).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::cpu;
    use testkit::arch::exception::{probe_fetch, probe_read, probe_write, Caught};
    use testkit::arch::mmu::{executable_block, table_descriptor, with_l1_entry};
    use testkit::esr::{is_stage1_translation_fault, Fault};
    use testkit::hv_abi::hypercall::guest;
    use testkit::windows::Windows;
    use testkit::{check, println, Env};

    testkit::guest!("isolation", main);

    const POISON: u64 = 0xdead_beef_0000_0000;

    /// Both a read and a write of `addr` abort: `Ok((read, write))`.
    fn probe(addr: u64) -> Result<(Caught, Caught), &'static str> {
        let read = match probe_read(addr) {
            Ok(_) => return Err("read succeeded"),
            Err(c) => c,
        };
        match probe_write(addr, POISON | (addr & 0xffff_ffff)) {
            Ok(()) => Err("write succeeded"),
            Err(write) => Ok((read, write)),
        }
    }

    fn main(env: &'static Env) {
        let Some(windows) = Windows::from_fdt(env.blob) else {
            check!("windows", false, "cannot walk the device tree");
            return;
        };
        let pa_bits = cpu::pa_bits();
        let ram_end = env.platform.memory.iter().map(|r| r.base.as_u64() + r.size).max().unwrap_or(guest::RAM_BASE);
        let vcpus = env.platform.cpus.len() as u64;
        for w in &windows.list {
            println!("NOTE isolation: advertised {:#x}..{:#x} {}", w.base, w.base + w.size, w.node);
        }
        let named: [(&str, u64); 10] = [
            ("below-ram", guest::RAM_BASE - 8),
            ("past-ram", ram_end),
            ("zero", 0),
            ("4gib", 0x1_0000_0000),
            ("128tib", 0x8000_0000_0000),
            ("gicd-gap", guest::GICD_BASE + guest::GICD_SIZE),
            ("gicc-end", guest::GICC_BASE + guest::GICC_SIZE),
            ("gicr-base", guest::GICR_BASE),
            ("gicr-end", guest::GICR_BASE + vcpus * guest::GICR_STRIDE),
            ("uart-end", guest::UART_BASE + guest::UART_SIZE),
        ];
        for (name, addr) in named {
            if let Some(w) = windows.find(addr) {
                println!("NOTE isolation: {name} {addr:#x} skipped: inside advertised {}", w.node);
                continue;
            }
            let beyond = if addr >> pa_bits != 0 { " (beyond the CPU's PARange)" } else { "" };
            match probe(addr) {
                Ok((r, w)) => check!(name, true, "{addr:#x}{beyond}: read {}, write {}", Fault(r.esr), Fault(w.esr)),
                Err(what) => check!(name, false, "{addr:#x}{beyond}: {what}"),
            }
        }

        const STEP: u64 = 2 << 20;
        let start = cpu::counter();
        let (mut probes, mut stage1, mut leaks) = (0u32, 0u32, alloc::vec::Vec::new());
        for addr in windows.gaps_stepped(0, 1 << 32, STEP) {
            probes += 1;
            match probe(addr) {
                Ok((r, w)) => stage1 += (is_stage1_translation_fault(r.esr) || is_stage1_translation_fault(w.esr)) as u32,
                Err(what) => leaks.push((addr, what)),
            }
        }
        let us = cpu::elapsed_us(start);
        let mut detail = alloc::format!(
            "{probes} 2 MiB-aligned IPAs below 4 GiB outside advertised windows, {} aborted on read and write ({stage1} at stage 1) in {us} us",
            probes as usize - leaks.len()
        );
        for (addr, what) in leaks.iter().take(8) {
            detail.push_str(&alloc::format!("; {addr:#x} {what}"));
        }
        check!("walk-2mib", leaks.is_empty() && probes > 0, "{detail}");
        fetch_and_walk(&windows);
    }

    /// The GiB at 3 GiB, remapped for these checks.
    const HOLE_GIB: usize = 3;
    const HOLE: u64 = HOLE_GIB as u64 * (1 << 30);

    /// `caught` is an abort of class `ec` with fault status `fsc` at `far`.
    fn expect(name: &str, caught: Result<(), Caught>, ec: u8, fsc: u64, far: u64) {
        match caught {
            Ok(()) => check!(name, false, "{far:#x}: no exception"),
            Err(c) => check!(
                name,
                testkit::esr::Esr(c.esr).ec() == ec && c.esr & 0x3f == fsc && c.far == far,
                "{far:#x}: {} FAR {:#x} (want EC {ec:#x}, FSC {fsc:#x}, FAR {far:#x})",
                Fault(c.esr),
                c.far
            ),
        }
    }

    fn fetch_and_walk(windows: &Windows) {
        if let Some(w) = windows.find(HOLE).or_else(|| windows.find(HOLE + 0x1000)) {
            println!("NOTE isolation: fetch and walk checks skipped: {HOLE:#x} inside advertised {}", w.node);
            return;
        }
        const EC_IABT: u8 = 0x21;
        const EC_DABT: u8 = 0x25;
        // A fetch from the hole, mapped executable at stage 1.
        let fetch = with_l1_entry(HOLE_GIB, executable_block(HOLE), || probe_fetch(HOLE));
        expect("fetch-hole", fetch, EC_IABT, 0x10, HOLE);
        // The GiB's level-2 table in the hole: a load's walk reads its
        // descriptor there (level 2), and so does a fetch's.
        let load = with_l1_entry(HOLE_GIB, table_descriptor(HOLE), || probe_read(HOLE + 0x1000).map(drop));
        expect("walk-hole-load", load, EC_DABT, 0x16, HOLE + 0x1000);
        let fetch = with_l1_entry(HOLE_GIB, table_descriptor(HOLE), || probe_fetch(HOLE + 0x2000));
        expect("walk-hole-fetch", fetch, EC_IABT, 0x16, HOLE + 0x2000);
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
