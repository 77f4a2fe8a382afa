//! How the toolstack shows VMs: the `list` table and the `info VM` report,
//! from `VmInfo` records (and the VM's configuration, when the bundle has it).
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hv_abi::hypercall::{Error, StopReason, VmInfo, VmState, EXIT_REASONS, MAX_VCPUS, MAX_VMS};
use hv_vmconfig::{Loaded, Size};

/// The `list` header; rows line up under it.
pub fn list_header() -> String {
    format!("{:>4} {:<31} {:<8} {:>5} {:>8} {:>10}", "ID", "NAME", "STATE", "VCPUS", "MEM(MiB)", "CPU(s)")
}

/// One `list` row.
pub fn list_row(info: &VmInfo) -> String {
    format!(
        "{:>4} {:<31} {:<8} {:>5} {:>8} {:>10}",
        info.id,
        info.name(),
        state_name(info.state),
        info.vcpus,
        info.memory >> 20,
        cpu_time(info.cpu_time_ns)
    )
}

/// Why `VmCreate` refused a VM of `vcpus` vCPUs and `memory` bytes, in
/// terms of the limit it ran into. `free` is the hypervisor's free memory
/// in bytes (`MemInfo`, asked after the refusal), if known.
pub fn create_refused(vcpus: u32, memory: u64, e: Error, free: Option<u64>) -> String {
    let mib = |bytes: u64| bytes >> 20;
    match (e, free) {
        (Error::NoMemory, Some(free)) if free >= memory => format!(
            "out of memory: {} MiB asked, {} MiB free in the hypervisor, but not enough of it in whole 2 MiB blocks \
             with room for the VM's tables",
            mib(memory),
            mib(free)
        ),
        (Error::NoMemory, Some(free)) => {
            format!("out of memory: {} MiB asked, {} MiB free in the hypervisor", mib(memory), mib(free))
        }
        (Error::NoMemory, None) => format!("out of memory: {} MiB asked", mib(memory)),
        (Error::Busy, _) => format!("the hypervisor holds at most {} guest VMs, and has that many", MAX_VMS - 1),
        (Error::InvalidParameter, _) if vcpus > MAX_VCPUS => format!("{vcpus} vCPUs: at most {MAX_VCPUS} per VM"),
        (e, _) => format!("VmCreate failed: {}", e.description()),
    }
}

/// `VmInfo::state` as a word.
pub fn state_name(state: u32) -> String {
    match VmState::from_u32(state) {
        Some(VmState::Created) => "created".into(),
        Some(VmState::Running) => "running".into(),
        Some(VmState::Paused) => "paused".into(),
        Some(VmState::Stopped) => "stopped".into(),
        None => format!("state{state}"),
    }
}

/// Nanoseconds as seconds with milliseconds: `12.345`.
pub fn cpu_time(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000_000, (ns / 1_000_000) % 1000)
}

/// Why it stopped, or `None` if it has not.
pub fn stop_reason(info: &VmInfo) -> Option<String> {
    match StopReason::from_u32(info.stop_reason) {
        Some(StopReason::None) => None,
        Some(StopReason::SystemOff) => Some("system off (PSCI SYSTEM_OFF)".into()),
        Some(StopReason::SystemReset) => Some("system reset (PSCI SYSTEM_RESET)".into()),
        Some(StopReason::Crashed) => Some(format!(
            "crashed (syndrome {:#010x}, address {:#x})",
            info.stop_syndrome, info.stop_address
        )),
        None => Some(format!("unknown ({})", info.stop_reason)),
    }
}

/// The `info VM` report, one string per line.
pub fn info_lines(info: &VmInfo, config: Option<&Loaded>) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!("vm {}: {}", info.id, info.name()));
    out.push(format!("  state: {}", state_name(info.state)));
    if let Some(reason) = stop_reason(info) {
        out.push(format!("  stop reason: {reason}"));
    }
    out.push(format!("  vcpus: {}, memory: {} MiB, weight: {}", info.vcpus, info.memory >> 20, info.weight));
    out.push(format!("  cpu time: {} s", cpu_time(info.cpu_time_ns)));
    let exits: Vec<String> = EXIT_REASONS.iter().zip(info.exits).map(|(name, n)| format!("{name} {n}")).collect();
    let total: u64 = info.exits.iter().fold(0u64, |a, &n| a.saturating_add(n));
    out.push(format!("  exits: {total} ({})", exits.join(", ")));
    if info.log_dropped > 0 {
        out.push(format!("  log lines dropped by the rate limit: {}", info.log_dropped));
    }
    match config {
        Some(l) => {
            let c = &l.config;
            out.push(format!("  config: {}", l.file));
            out.push(format!("    kernel: {}", c.kernel));
            out.push(format!("    initrd: {}", c.initrd.as_deref().unwrap_or("-")));
            out.push(format!("    cmdline: \"{}\"", c.cmdline));
            out.push(format!("    vcpus: {}, memory: {}, weight: {}", c.vcpus, Size(c.memory), c.weight));
            let pin = if c.pin.is_empty() {
                String::from("any")
            } else {
                c.pin.iter().map(|p| format!("{p}")).collect::<Vec<_>>().join(",")
            };
            out.push(format!("    pin: {pin}, autostart: {}, on_fault: {}", if c.autostart { "yes" } else { "no" }, c.on_fault.as_str()));
        }
        None => out.push(String::from("  config: none in the bundle")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: u32, name: &str) -> VmInfo {
        let mut info = VmInfo::zeroed();
        info.id = id;
        info.name[..name.len()].copy_from_slice(name.as_bytes());
        info.name_len = name.len() as u32;
        info.state = VmState::Running as u32;
        info.vcpus = 2;
        info.memory = 64 << 20;
        info.weight = 256;
        info.cpu_time_ns = 12_345_678_901;
        info
    }

    #[test]
    fn list_rows_line_up_under_the_header() {
        let header = list_header();
        let row = list_row(&vm(3, "hello"));
        assert_eq!(header, "  ID NAME                            STATE    VCPUS MEM(MiB)     CPU(s)");
        assert_eq!(row, "   3 hello                           running      2       64     12.345");
        assert_eq!(header.len(), row.len());
    }

    #[test]
    fn cpu_time_is_seconds_dot_millis() {
        assert_eq!(cpu_time(0), "0.000");
        assert_eq!(cpu_time(1_005_000_000), "1.005");
        assert_eq!(cpu_time(999_999), "0.000");
    }

    #[test]
    fn states_and_stop_reasons_have_names() {
        assert_eq!(state_name(VmState::Paused as u32), "paused");
        assert_eq!(state_name(9), "state9");
        let mut info = vm(1, "a");
        assert_eq!(stop_reason(&info), None);
        info.stop_reason = StopReason::Crashed as u32;
        info.stop_syndrome = 0x9600_0004;
        info.stop_address = 0x4008_0000;
        assert_eq!(stop_reason(&info).unwrap(), "crashed (syndrome 0x96000004, address 0x40080000)");
        info.stop_reason = StopReason::SystemOff as u32;
        assert_eq!(stop_reason(&info).unwrap(), "system off (PSCI SYSTEM_OFF)");
    }

    #[test]
    fn info_shows_state_exits_and_config() {
        let mut info = vm(2, "hello");
        info.exits = [1, 2, 3, 4, 5, 6, 7, 8];
        info.state = VmState::Stopped as u32;
        info.stop_reason = StopReason::SystemReset as u32;
        let mut cfg = hv_vmconfig::VmConfig::new("hello", "vms/hello/hello.img");
        cfg.pin = alloc::vec![0, 2];
        let loaded = Loaded { file: "vms/hello.toml".into(), config: cfg };
        let lines = info_lines(&info, Some(&loaded));
        assert_eq!(
            lines,
            [
                "vm 2: hello",
                "  state: stopped",
                "  stop reason: system reset (PSCI SYSTEM_RESET)",
                "  vcpus: 2, memory: 64 MiB, weight: 256",
                "  cpu time: 12.345 s",
                "  exits: 36 (hvc 1, smc 2, mmio 3, wfi 4, sysreg 5, irq 6, abort 7, other 8)",
                "  config: vms/hello.toml",
                "    kernel: vms/hello/hello.img",
                "    initrd: -",
                "    cmdline: \"\"",
                "    vcpus: 1, memory: 128M, weight: 256",
                "    pin: 0,2, autostart: no, on_fault: abort",
            ]
        );
        assert_eq!(info_lines(&vm(1, "x"), None).last().unwrap(), "  config: none in the bundle");
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::*;

    #[test]
    fn out_of_memory_says_what_was_asked_and_what_is_free() {
        assert_eq!(
            create_refused(1, 64 << 20, Error::NoMemory, Some(40 << 20)),
            "out of memory: 64 MiB asked, 40 MiB free in the hypervisor"
        );
        assert_eq!(create_refused(1, 64 << 20, Error::NoMemory, None), "out of memory: 64 MiB asked");
        // Enough pages, but not in the shape guest RAM needs.
        assert!(create_refused(1, 64 << 20, Error::NoMemory, Some(65 << 20)).contains("not enough of it in whole 2 MiB blocks"));
    }

    #[test]
    fn the_vm_table_and_vcpu_limits_are_named() {
        assert_eq!(create_refused(1, 2 << 20, Error::Busy, None), "the hypervisor holds at most 63 guest VMs, and has that many");
        assert_eq!(create_refused(9, 2 << 20, Error::InvalidParameter, None), "9 vCPUs: at most 8 per VM");
        assert_eq!(create_refused(2, 2 << 20, Error::InvalidParameter, None), "VmCreate failed: invalid parameter");
    }
}
