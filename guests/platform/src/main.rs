//! Test guest `platform`: the device tree it was given describes the VM it
//! was configured as (`expect.memory=64M expect.vcpus=2 [expect.gic=2|3]` in
//! the bootargs) and the guest platform layout (`hv_abi::hypercall::guest`).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use testkit::hv_abi::hypercall::guest;
    use testkit::hv_devtree::platform::{EnableMethod, GicVersion, PsciConduit, UartKind};
    use testkit::arch::cpu;
    use testkit::cmdline::Size;
    use testkit::{check, Env};

    testkit::guest!("platform", main);

    fn main(env: &'static Env) {
        let p = &env.platform;
        let cmd = env.cmdline();

        let ram: u64 = p.memory.iter().map(|r| r.size).sum();
        let base = p.memory.first().map(|r| r.base.as_u64());
        match cmd.get_u64("expect.memory") {
            Some(Ok(want)) => check!(
                "memory",
                ram == want && base == Some(guest::RAM_BASE) && p.memory.len() == 1,
                "{} in {} region(s) at {:#x} (want {} at {:#x})",
                Size(ram),
                p.memory.len(),
                base.unwrap_or(0),
                Size(want),
                guest::RAM_BASE
            ),
            Some(Err(bad)) => check!("memory", false, "malformed expect.memory={bad}"),
            None => check!("memory", false, "no expect.memory= in bootargs (tree says {})", Size(ram)),
        }
        let in_ram = p.memory.iter().any(|r| env.dtb >= r.base.as_u64() && env.dtb - r.base.as_u64() < r.size);
        check!("dtb-in-ram", in_ram, "device tree at {:#x}", env.dtb);

        let n = p.cpus.len() as u64;
        match cmd.get_u64("expect.vcpus") {
            Some(Ok(want)) => check!("vcpus", n == want, "{n} (want {want})"),
            Some(Err(bad)) => check!("vcpus", false, "malformed expect.vcpus={bad}"),
            None => check!("vcpus", false, "no expect.vcpus= in bootargs (tree says {n})"),
        }
        let boot = p.cpus.first().map(|c| c.mpidr);
        check!("boot-cpu", boot == Some(cpu::mpidr()), "MPIDR {:#x}, tree's first CPU {:#x}", cpu::mpidr(), boot.unwrap_or(u64::MAX));
        let all_psci = p.cpus.iter().skip(1).all(|c| c.enable_method == Some(EnableMethod::Psci));
        check!("enable-method", all_psci, "secondaries start with PSCI");

        let g = &p.gic;
        let gicd_ok = g.gicd.base.as_u64() == guest::GICD_BASE;
        let (layout_ok, what) = match g.version {
            GicVersion::V2 => {
                let c = g.gicc.map(|c| c.base.as_u64());
                (c == Some(guest::GICC_BASE), alloc::format!("GICC {:#x}", c.unwrap_or(0)))
            }
            GicVersion::V3 => {
                let r = g.gicr.first().map(|r| (r.base.as_u64(), r.size));
                let (rb, rs) = r.unwrap_or((0, 0));
                (rb == guest::GICR_BASE && rs >= guest::GICR_STRIDE * n, alloc::format!("GICR {rb:#x} size {rs:#x}"))
            }
        };
        let version = match g.version {
            GicVersion::V2 => 2,
            GicVersion::V3 => 3,
        };
        let version_ok = match cmd.get_u64("expect.gic") {
            Some(Ok(want)) => want == version,
            Some(Err(_)) => false,
            None => true,
        };
        check!(
            "gic",
            gicd_ok && layout_ok && version_ok,
            "v{version} GICD {:#x} {what}{}",
            g.gicd.base.as_u64(),
            if version_ok { "" } else { " (expect.gic differs)" }
        );

        let u = &p.console;
        check!(
            "uart",
            u.kind == UartKind::Pl011 && u.base.as_u64() == guest::UART_BASE,
            "{:?} at {:#x} ({})",
            u.kind,
            u.base.as_u64(),
            u.path
        );

        match &p.psci {
            Some(psci) => check!(
                "psci",
                psci.conduit == PsciConduit::Hvc && psci.version_0_2_or_later,
                "method {:?}, 0.2+ IDs: {}",
                psci.conduit,
                psci.version_0_2_or_later
            ),
            None => check!("psci", false, "no PSCI node"),
        }

        let t = &p.timer;
        let want = guest::TIMER_PPIS.map(|ppi| ppi + 16);
        let got = [t.secure_phys.intid, t.nonsecure_phys.intid, t.virt.intid, t.hyp_phys.map_or(0, |i| i.intid)];
        check!(
            "timer",
            got[..3] == want[..3] && (got[3] == 0 || got[3] == want[3]),
            "INTIDs secure {} non-secure {} virtual {} hyp {} (want {:?})",
            got[0],
            got[1],
            got[2],
            got[3],
            want
        );
        check!("counter", cpu::counter_hz() > 0, "CNTFRQ_EL0 {} Hz", cpu::counter_hz());
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
