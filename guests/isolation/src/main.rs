//! Test guest `isolation`: every IPA outside the windows its device tree
//! advertises (RAM, device `reg`s, bus `ranges`) must abort, for reads
//! and for writes. Named probes first (around RAM, 0, 4 GiB, 128 TiB, the
//! GIC's gaps, past the UART), then every 2 MiB-aligned IPA below 4 GiB.
//! Named addresses inside an advertised window are skipped with a NOTE line.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::arch::cpu;
    use testkit::arch::exception::{probe_read, probe_write, Caught};
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
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
