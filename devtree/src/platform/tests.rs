//! Host tests: real QEMU and Raspberry Pi trees, hand-built broken trees, truncation and fuzzing.

use std::path::PathBuf;

use super::*;

static VIRT_GICV3: &[u8] = include_bytes!("../../tests/fixtures/virt-gicv3.dtb");
static VIRT_GICV2: &[u8] = include_bytes!("../../tests/fixtures/virt-gicv2.dtb");

// ---- a tiny FDT builder ---------------------------------------------------

/// A node for [`build`]: name, properties, children.
#[derive(Clone)]
struct N {
    name: String,
    props: Vec<(String, Vec<u8>)>,
    kids: Vec<N>,
}

fn n(name: &str) -> N {
    N { name: name.into(), props: Vec::new(), kids: Vec::new() }
}

impl N {
    /// Sets (adds or replaces) a property.
    fn p(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.props.retain(|(k, _)| k != name);
        self.props.push((name.into(), value.as_ref().to_vec()));
        self
    }
    fn without(mut self, name: &str) -> Self {
        self.props.retain(|(k, _)| k != name);
        self.kids.retain(|k| k.name != name);
        self
    }
    fn c(mut self, kid: N) -> Self {
        self.kids.push(kid);
        self
    }
    /// Replaces child `name` by `f(child)`.
    fn edit(mut self, name: &str, f: impl FnOnce(N) -> N) -> Self {
        let i = self.kids.iter().position(|k| k.name == name).expect("no such child");
        self.kids[i] = f(self.kids[i].clone());
        self
    }
}

/// A NUL-terminated string.
fn s(x: &str) -> Vec<u8> {
    sl(&[x])
}

/// A string list.
fn sl(xs: &[&str]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.bytes().chain([0])).collect()
}

/// Big-endian cells.
fn c(xs: &[u32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_be_bytes()).collect()
}

fn push32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn emit(node: &N, strings: &mut Vec<u8>, out: &mut Vec<u8>, nops: bool) {
    push32(out, 1);
    out.extend(node.name.bytes().chain([0]));
    out.resize(out.len().next_multiple_of(4), 0);
    for (name, value) in &node.props {
        if nops {
            push32(out, 4);
        }
        let needle: Vec<u8> = name.bytes().chain([0]).collect();
        let off = strings.windows(needle.len()).position(|w| w == needle).unwrap_or_else(|| {
            strings.extend_from_slice(&needle);
            strings.len() - needle.len()
        });
        push32(out, 3);
        push32(out, value.len() as u32);
        push32(out, off as u32);
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    for kid in &node.kids {
        emit(kid, strings, out, nops);
    }
    push32(out, 2);
}

/// A valid v17 blob for `root`, with reservations, optionally sprinkled with FDT_NOPs.
fn build_with(root: &N, memreserve: &[(u64, u64)], nops: bool) -> Vec<u8> {
    let (mut strings, mut structure) = (Vec::new(), Vec::new());
    emit(root, &mut strings, &mut structure, nops);
    push32(&mut structure, 9);
    let mut rsv = Vec::new();
    for &(a, sz) in memreserve.iter().chain([&(0, 0)]) {
        rsv.extend(a.to_be_bytes().into_iter().chain(sz.to_be_bytes()));
    }
    let off_struct = 40 + rsv.len();
    let off_strings = off_struct + structure.len();
    let total = off_strings + strings.len();
    let mut out = Vec::new();
    for v in
        [0xd00dfeed, total, off_struct, off_strings, 40, 17, 16, 0, strings.len(), structure.len()]
    {
        push32(&mut out, v as u32);
    }
    out.extend(rsv.into_iter().chain(structure).chain(strings));
    out
}

fn build(root: &N) -> Vec<u8> {
    build_with(root, &[], false)
}

fn cpu(i: u32) -> N {
    n(&format!("cpu@{i}"))
        .p("device_type", s("cpu"))
        .p("reg", c(&[i]))
        .p("enable-method", s("psci"))
}

/// A small valid machine: GICv2, PL011, 256 MiB at 0x40000000, two PSCI CPUs.
fn base() -> N {
    n("")
        .p("#address-cells", c(&[2]))
        .p("#size-cells", c(&[2]))
        .p("interrupt-parent", c(&[1]))
        .p("model", s("test,board"))
        .p("compatible", s("test,board-compat"))
        .c(n("memory@40000000")
            .p("device_type", s("memory"))
            .p("reg", c(&[0, 0x4000_0000, 0, 0x1000_0000])))
        .c(n("intc@8000000")
            .p("compatible", s("arm,gic-400"))
            .p("interrupt-controller", [])
            .p("#interrupt-cells", c(&[3]))
            .p("phandle", c(&[1]))
            .p("interrupts", c(&[1, 9, 4]))
            .p("reg", c(&[0, 0x0800_0000, 0, 0x1000, 0, 0x0801_0000, 0, 0x2000])))
        .c(n("timer")
            .p("compatible", s("arm,armv8-timer"))
            .p("interrupts", c(&[1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8])))
        .c(n("psci").p("compatible", sl(&["arm,psci-1.0", "arm,psci-0.2"])).p("method", s("smc")))
        .c(n("cpus").p("#address-cells", c(&[1])).p("#size-cells", c(&[0])).c(cpu(0)).c(cpu(1)))
        .c(n("pl011@9000000")
            .p("compatible", sl(&["arm,pl011", "arm,primecell"]))
            .p("reg", c(&[0, 0x0900_0000, 0, 0x1000]))
            .p("interrupts", c(&[0, 1, 4])))
        .c(n("chosen").p("stdout-path", s("/pl011@9000000")).p("bootargs", s("console=ttyAMA0")))
}

fn parse(root: &N) -> Result<Platform, PlatformError> {
    Platform::from_fdt(&build(root))
}

fn err(root: &N) -> PlatformError {
    parse(root).expect_err("tree should be rejected")
}

fn region(base: u64, size: u64) -> MemRegion {
    MemRegion { base: PhysAddr::new(base), size }
}

fn level(intid: u32) -> Irq {
    Irq { intid, level_triggered: true }
}

/// Reads a fixture named by env `var` (else `default`, if it exists); `None` = skip.
fn env_fixture(var: &str, default: Option<PathBuf>) -> Option<Vec<u8>> {
    let path = std::env::var_os(var).map(PathBuf::from).or(default.filter(|p| p.exists()));
    match path {
        Some(p) => Some(std::fs::read(&p).unwrap_or_else(|e| panic!("{var}={}: {e}", p.display()))),
        None if std::env::var("HV_REQUIRE_FIXTURES").as_deref() == Ok("1") => {
            panic!("{var} not set but HV_REQUIRE_FIXTURES=1")
        }
        None => {
            println!("skipped: {var} not set");
            None
        }
    }
}

fn pi4_qemu() -> Option<Vec<u8>> {
    env_fixture("HV_PI4_DTB", None)
}

/// Debian's unmodified bcm2711-rpi-4-b.dtb: env `HV_PI4_DEBIAN_DTB`, else the kernel package unpacked in `.cache`.
fn pi4_debian() -> Option<Vec<u8>> {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../.cache/kernel/linux-image-6.1.0-56-arm64/usr/lib/linux-image-6.1.0-56-arm64/broadcom/bcm2711-rpi-4-b.dtb",
    );
    env_fixture("HV_PI4_DEBIAN_DTB", Some(default))
}

// ---- real trees --------------------------------------------------------------

#[test]
fn virt_gicv3_fixture_describes_qemu_virt() {
    let p = Platform::from_fdt(VIRT_GICV3).unwrap();
    assert_eq!(p.model, "linux,dummy-virt");
    assert_eq!(p.memory, [region(0x4000_0000, 1 << 30)]);
    assert_eq!(p.ram_size(), 1 << 30);
    assert_eq!(p.reserved, []);
    assert_eq!(p.cpus.len(), 4);
    for (i, cpu) in p.cpus.iter().enumerate() {
        assert_eq!(cpu.mpidr, i as u64);
        assert_eq!(cpu.enable_method, Some(EnableMethod::Psci));
        assert_eq!(cpu.path, format!("/cpus/cpu@{i}"));
    }
    assert_eq!(p.gic.version, GicVersion::V3);
    assert_eq!(p.gic.path, "/intc@8000000");
    assert_eq!(p.gic.gicd, region(0x0800_0000, 0x1_0000));
    assert_eq!(p.gic.gicr, [region(0x080a_0000, 0xf6_0000)]);
    assert_eq!((p.gic.gicc, p.gic.gich, p.gic.gicv), (None, None, None));
    assert_eq!(p.gic.maintenance_irq, Some(level(25)));
    let timer = Timer {
        secure_phys: level(29),
        nonsecure_phys: level(30),
        virt: level(27),
        hyp_phys: Some(level(26)),
    };
    assert_eq!(p.timer, timer);
    let psci = p.psci.unwrap();
    assert_eq!(
        (psci.conduit, psci.version_0_2_or_later, psci.cpu_on),
        (PsciConduit::Smc, true, 0xC400_0003)
    );
    assert_eq!(psci.path, "/psci");
    let console = Uart {
        kind: UartKind::Pl011,
        base: PhysAddr::new(0x0900_0000),
        size: 0x1000,
        path: "/pl011@9000000".into(),
        irq: Some(level(33)),
    };
    assert_eq!(p.console, console);
    assert_eq!((p.bootargs.as_str(), p.initrd), ("", None));
}

#[test]
fn virt_gicv2_fixture_has_all_four_gicv2_frames() {
    let p = Platform::from_fdt(VIRT_GICV2).unwrap();
    assert_eq!(p.memory, [region(0x4000_0000, 512 << 20)]);
    assert_eq!(p.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(), [0, 1]);
    let gic = &p.gic;
    assert_eq!(gic.version, GicVersion::V2);
    assert_eq!(gic.gicd, region(0x0800_0000, 0x1_0000));
    assert_eq!(gic.gicc, Some(region(0x0801_0000, 0x1_0000)));
    assert_eq!(gic.gich, Some(region(0x0803_0000, 0x1_0000)));
    assert_eq!(gic.gicv, Some(region(0x0804_0000, 0x1_0000)));
    assert!(gic.gicr.is_empty());
    // GICv2 PPI flags carry a CPU mask in bits 8..15 (0x304): still level.
    assert_eq!(p.timer.nonsecure_phys, level(30));
    assert_eq!(p.console.base, PhysAddr::new(0x0900_0000));
}

#[test]
fn pi4_qemu_tree_has_mini_uart_console_translated_gic_and_spin_tables() {
    let Some(blob) = pi4_qemu() else { return };
    let p = Platform::from_fdt(&blob).unwrap();
    assert_eq!(p.model, "Raspberry Pi 4 Model B");
    assert_eq!(p.memory, [region(0, 0x3c00_0000)]);
    // /memreserve/ covers the spin tables; /reserved-memory has only a
    // dynamic CMA pool (no reg) and a disabled, empty nvram@0.
    assert_eq!(p.reserved, [region(0, 0x1000)]);
    // stdout-path = "serial1:115200n8" → /soc/serial@7e215040, bus 0x7e.. → 0xfe..
    let console = Uart {
        kind: UartKind::Bcm2835Aux,
        base: PhysAddr::new(0xfe21_5040),
        size: 0x40,
        path: "/soc/serial@7e215040".into(),
        irq: Some(level(32 + 93)),
    };
    assert_eq!(p.console, console);
    let gic = &p.gic;
    assert_eq!(
        (gic.version, gic.path.as_str()),
        (GicVersion::V2, "/soc/interrupt-controller@40041000")
    );
    assert_eq!(gic.gicd, region(0xff84_1000, 0x1000));
    assert_eq!(gic.gicc, Some(region(0xff84_2000, 0x2000)));
    assert_eq!(gic.gich, Some(region(0xff84_4000, 0x2000)));
    assert_eq!(gic.gicv, Some(region(0xff84_6000, 0x2000)));
    assert_eq!(gic.maintenance_irq, Some(level(25)));
    // Flags 0xf08: level, active low.
    assert_eq!(p.timer.hyp_phys, Some(level(26)));
    let releases: Vec<_> = p.cpus.iter().map(|c| (c.mpidr, c.enable_method)).collect();
    let spin = |a| Some(EnableMethod::SpinTable { release_addr: PhysAddr::new(a) });
    assert_eq!(releases, [(0, spin(0xd8)), (1, spin(0xe0)), (2, spin(0xe8)), (3, spin(0xf0))]);
    assert_eq!(p.psci, None);
    assert_eq!((p.bootargs.as_str(), p.initrd), ("", None));
}

#[test]
fn pi4_debian_tree_with_unfilled_memory_is_no_memory() {
    let Some(blob) = pi4_debian() else { return };
    assert_eq!(Platform::from_fdt(&blob).unwrap_err().kind, ErrorKind::NoMemory);
}

// ---- hand-built trees --------------------------------------------------------

#[test]
fn builder_base_tree_parses() {
    let p = parse(&base()).unwrap();
    assert_eq!(p.model, "test,board");
    assert_eq!(p.bootargs, "console=ttyAMA0");
    assert_eq!(p.gic.gicc, Some(region(0x0801_0000, 0x2000)));
    assert_eq!(p.timer.virt, level(27));
    assert_eq!(p.console.irq, Some(level(33)));
}

#[test]
fn nop_tokens_anywhere_are_tolerated() {
    assert_eq!(Platform::from_fdt(&build_with(&base(), &[], true)), parse(&base()));
}

#[test]
fn model_falls_back_to_first_compatible_then_unknown() {
    assert_eq!(parse(&base().without("model")).unwrap().model, "test,board-compat");
    assert_eq!(parse(&base().without("model").without("compatible")).unwrap().model, "unknown");
}

#[test]
fn memory_from_several_nodes_is_sorted_and_skips_empty_entries() {
    let tree = base()
        .p("#size-cells", c(&[1]))
        .edit("memory@40000000", |m| {
            m.p("reg", c(&[1, 0, 0x1000, 0, 0x4000_0000, 0, 0, 0x5000_0000, 0]))
        })
        .edit("intc@8000000", |g| g.p("reg", c(&[0, 0x0800_0000, 0x1000, 0, 0x0801_0000, 0x2000])))
        .edit("pl011@9000000", |u| u.p("reg", c(&[0, 0x0900_0000, 0x1000])))
        .c(n("memory@0").p("device_type", s("memory")).p("reg", c(&[0, 0, 0x10_0000])))
        .c(n("memory@ff")
            .p("device_type", s("memory"))
            .p("status", s("disabled"))
            .p("reg", c(&[0, 0xff, 1])));
    let p = parse(&tree).unwrap();
    assert_eq!(p.memory, [region(0, 0x10_0000), region(1 << 32, 0x1000)]);
    assert_eq!(p.ram_size(), 0x10_1000);
}

#[test]
fn ram_size_saturates() {
    let mut p = parse(&base()).unwrap();
    p.memory = vec![region(0, u64::MAX), region(0, 5)];
    assert_eq!(p.ram_size(), u64::MAX);
}

#[test]
fn memory_end_overflowing_is_overflow() {
    let tree =
        base().edit("memory@40000000", |m| m.p("reg", c(&[0xffff_ffff, 0xffff_f000, 0, 0x2000])));
    assert_eq!(err(&tree).kind, ErrorKind::Overflow);
}

#[test]
fn reserved_combines_memreserve_and_reserved_memory_children() {
    let tree = base().c(n("reserved-memory")
        .p("#address-cells", c(&[2]))
        .p("#size-cells", c(&[2]))
        .p("ranges", [])
        .c(n("fw@48000000").p("reg", c(&[0, 0x4800_0000, 0, 0x10_0000])).p("no-map", []))
        .c(n("pool").p("size", c(&[0, 0x100_0000])))
        .c(n("off@49000000").p("reg", c(&[0, 0x4900_0000, 0, 0x1000])).p("status", s("disabled"))));
    let p = Platform::from_fdt(&build_with(&tree, &[(0x4100_0000, 0x2000), (0x1000, 0)], false))
        .unwrap();
    assert_eq!(p.reserved, [region(0x4100_0000, 0x2000), region(0x4800_0000, 0x10_0000)]);
}

#[test]
fn missing_memory_node_is_no_memory() {
    let e = err(&base().without("memory@40000000"));
    assert_eq!(e.kind, ErrorKind::NoMemory);
    assert_eq!(
        e.to_string(),
        r#"device tree: no memory: no device_type = "memory" node with a non-empty reg"#
    );
    let empty = base().edit("memory@40000000", |m| m.p("reg", c(&[0, 0x4000_0000, 0, 0])));
    assert_eq!(err(&empty).kind, ErrorKind::NoMemory);
}

#[test]
fn stdout_path_alias_with_options_resolves_through_aliases() {
    let tree = base()
        .c(n("aliases").p("serial0", s("/pl011@9000000")))
        .edit("chosen", |ch| ch.p("stdout-path", s("serial0:115200n8")));
    assert_eq!(parse(&tree).unwrap().console.path, "/pl011@9000000");
}

#[test]
fn stdout_path_alias_missing_is_no_uart_naming_the_alias() {
    let tree = base()
        .c(n("aliases").p("serial0", s("/pl011@9000000")))
        .edit("chosen", |ch| ch.p("stdout-path", s("serial9:115200n8")));
    let e = err(&tree);
    assert!(matches!(e.kind, ErrorKind::NoUart(_)));
    assert_eq!(
        e.to_string(),
        r#"device tree: /chosen: property "stdout-path": no UART found (alias serial9 not in /aliases)"#
    );
}

#[test]
fn self_referencing_alias_does_not_loop() {
    let tree = base()
        .c(n("aliases").p("serial0", s("serial0")))
        .edit("chosen", |ch| ch.p("stdout-path", s("serial0")));
    assert!(matches!(err(&tree).kind, ErrorKind::NoUart(_)));
}

#[test]
fn stdout_path_to_missing_or_disabled_node_is_no_uart() {
    let missing = base().edit("chosen", |ch| ch.p("stdout-path", s("/nowhere@0")));
    assert!(err(&missing).to_string().contains("/nowhere@0 not found"));
    let disabled = base().edit("pl011@9000000", |u| u.p("status", s("disabled")));
    assert!(err(&disabled).to_string().contains("/pl011@9000000 is disabled"));
}

#[test]
fn stdout_falls_back_to_linux_stdout_path_then_first_enabled_pl011() {
    let second = n("pl011@9001000")
        .p("compatible", s("arm,pl011"))
        .p("reg", c(&[0, 0x0900_1000, 0, 0x1000]));
    let linux = base()
        .c(second.clone())
        .edit("chosen", |ch| ch.without("stdout-path").p("linux,stdout-path", s("/pl011@9001000")));
    assert_eq!(parse(&linux).unwrap().console.base, PhysAddr::new(0x0900_1000));
    let first_enabled = base()
        .edit("pl011@9000000", |u| u.p("status", s("disabled")))
        .c(second.p("status", s("okay")))
        .without("chosen");
    let p = parse(&first_enabled).unwrap();
    assert_eq!((p.console.base, p.console.irq), (PhysAddr::new(0x0900_1000), None));
}

#[test]
fn no_uart_at_all_is_no_uart() {
    let e = err(&base().without("pl011@9000000").edit("chosen", |ch| ch.without("stdout-path")));
    assert_eq!(e.kind, ErrorKind::NoUart("no stdout-path and no enabled arm,pl011 node".into()));
}

#[test]
fn unknown_uart_compatible_names_the_node() {
    let e = err(&base().edit("pl011@9000000", |u| u.p("compatible", s("ns16550a"))));
    assert_eq!(e.kind, ErrorKind::UnknownUart("ns16550a".into()));
    assert_eq!(
        e.to_string(),
        r#"device tree: /pl011@9000000: property "compatible": unknown UART "ns16550a""#
    );
}

#[test]
fn unknown_gic_compatible_is_unknown_gic() {
    let e = err(&base().edit("intc@8000000", |g| g.p("compatible", s("foo,bar"))));
    assert_eq!(e.kind, ErrorKind::UnknownGic("foo,bar".into()));
    assert_eq!(
        e.to_string(),
        r#"device tree: /intc@8000000: property "compatible": unknown GIC "foo,bar""#
    );
}

#[test]
fn no_interrupt_controller_is_no_gic() {
    assert_eq!(err(&base().without("intc@8000000")).kind, ErrorKind::NoGic);
}

#[test]
fn disabled_gic_is_skipped_for_the_next_enabled_one() {
    let tree = base()
        .edit("intc@8000000", |g| g.p("status", s("disabled")))
        .c(n("intc@2c001000")
            .p("compatible", s("arm,cortex-a15-gic"))
            .p("interrupt-controller", [])
            .p("#interrupt-cells", c(&[3]))
            .p("phandle", c(&[2]))
            .p("reg", c(&[0, 0x2c00_1000, 0, 0x1000, 0, 0x2c00_2000, 0, 0x2000])))
        .p("interrupt-parent", c(&[2]));
    let p = parse(&tree).unwrap();
    assert_eq!((p.gic.path.as_str(), p.gic.maintenance_irq), ("/intc@2c001000", None));
}

#[test]
fn gicv2_without_gicc_is_bad_value() {
    let e = err(&base().edit("intc@8000000", |g| g.p("reg", c(&[0, 0x0800_0000, 0, 0x1000]))));
    assert!(matches!(e.kind, ErrorKind::BadValue(_)));
    assert_eq!((e.node.as_deref(), e.property), (Some("/intc@8000000"), Some("reg")));
}

#[test]
fn gicv3_redistributor_regions_then_cpu_interface_frames() {
    let regs = [
        0x0800_0000,
        0x1_0000,
        0x080a_0000,
        0x20_0000,
        0x0900_0000,
        0x10_0000,
        0x0a00_0000,
        0x2000,
        0x0a01_0000,
        0x2000,
        0x0a02_0000,
        0x2000,
    ];
    let cells: Vec<u32> = regs.iter().flat_map(|&v| [0, v]).collect();
    let tree = base().edit("intc@8000000", |g| {
        g.p("compatible", s("arm,gic-v3")).p("#redistributor-regions", c(&[2])).p("reg", c(&cells))
    });
    let gic = parse(&tree).unwrap().gic;
    assert_eq!(gic.version, GicVersion::V3);
    assert_eq!(gic.gicr, [region(0x080a_0000, 0x20_0000), region(0x0900_0000, 0x10_0000)]);
    assert_eq!(gic.gicc, Some(region(0x0a00_0000, 0x2000)));
    assert_eq!(gic.gicv, Some(region(0x0a02_0000, 0x2000)));
    let short = tree.edit("intc@8000000", |g| g.p("#redistributor-regions", c(&[9])));
    assert!(matches!(err(&short).kind, ErrorKind::BadValue(_)));
}

#[test]
fn bus_without_ranges_is_untranslatable() {
    let tree = base().without("pl011@9000000").c(n("bus@0")
        .p("#address-cells", c(&[1]))
        .p("#size-cells", c(&[1]))
        .c(n("serial@1000").p("compatible", s("arm,pl011")).p("reg", c(&[0x1000, 0x100]))));
    let e = err(&tree.edit("chosen", |ch| ch.p("stdout-path", s("/bus/serial@1000"))));
    assert_eq!(e.kind, ErrorKind::Untranslatable("bus /bus@0 has no \"ranges\"".into()));
    assert_eq!((e.node.as_deref(), e.property), (Some("/bus@0/serial@1000"), Some("reg")));
}

#[test]
fn uart_under_bus_with_ranges_gets_translated_address() {
    // Two bus levels, like the Pi: 0x7e.. on /soc → 0xfe.. on the root; plus
    // an inner bus with a 2-cell child address.
    let tree = base().without("pl011@9000000").c(n("soc")
        .p("#address-cells", c(&[1]))
        .p("#size-cells", c(&[1]))
        .p(
            "ranges",
            c(&[0x7c00_0000, 0, 0xfc00_0000, 0x100_0000, 0x7e00_0000, 0, 0xfe00_0000, 0x180_0000]),
        )
        .c(n("inner")
            .p("#address-cells", c(&[2]))
            .p("#size-cells", c(&[1]))
            .p("ranges", c(&[0, 0x7e20_0000, 0x7e20_0000, 0x2000]))
            .c(n("serial@7e201000")
                .p("compatible", s("arm,pl011"))
                .p("reg", c(&[0, 0x7e20_1000, 0x200]))
                .p("interrupts", c(&[0, 121, 4])))));
    let tree = tree.edit("chosen", |ch| ch.p("stdout-path", s("/soc/inner/serial@7e201000")));
    let console = parse(&tree).unwrap().console;
    assert_eq!((console.base, console.size), (PhysAddr::new(0xfe20_1000), 0x200));
    assert_eq!(console.irq, Some(level(153)));
    // An address outside every range is an error too.
    let outside = tree.edit("soc", |b| {
        b.edit("inner", |i| i.p("ranges", c(&[0, 0x7f00_0000, 0x7f00_0000, 0x1000])))
    });
    assert!(matches!(err(&outside).kind, ErrorKind::Untranslatable(_)));
}

#[test]
fn reg_not_a_multiple_of_cells_is_bad_length() {
    let e = err(&base().edit("pl011@9000000", |u| u.p("reg", c(&[0, 0x0900_0000, 0]))));
    assert_eq!(e.kind, ErrorKind::BadLength { len: 12, entry: 16 });
    assert_eq!(
        e.to_string(),
        r#"device tree: /pl011@9000000: property "reg": bad length 12: not a non-zero multiple of 16 bytes"#
    );
    let ranges = base().c(n("bus").p("ranges", c(&[1, 2, 3])));
    let ranges = ranges.edit("pl011@9000000", |u| u.p("reg", c(&[0, 1])));
    assert!(matches!(err(&ranges).kind, ErrorKind::BadLength { .. }));
}

#[test]
fn interrupt_specifier_errors_are_bad_value_or_length() {
    let short = base().edit("timer", |t| t.p("interrupts", c(&[1, 13])));
    assert_eq!(err(&short).kind, ErrorKind::BadLength { len: 8, entry: 12 });
    let few = base().edit("timer", |t| t.p("interrupts", c(&[1, 13, 4])));
    assert!(matches!(err(&few).kind, ErrorKind::BadValue(_)));
    let bad_type = base().edit("timer", |t| t.p("interrupts", c(&[2, 13, 4, 1, 14, 4, 1, 11, 4])));
    assert!(matches!(err(&bad_type).kind, ErrorKind::BadValue(_)));
    let bad_ppi = base().edit("timer", |t| t.p("interrupts", c(&[1, 16, 4, 1, 14, 4, 1, 11, 4])));
    assert!(matches!(err(&bad_ppi).kind, ErrorKind::BadValue(_)));
    assert_eq!(err(&base().without("timer")).kind, ErrorKind::NoTimer);
}

#[test]
fn first_cpu_may_lack_enable_method_but_later_ones_may_not() {
    let boot = base().edit("cpus", |cs| cs.edit("cpu@0", |c0| c0.without("enable-method")));
    assert_eq!(parse(&boot).unwrap().cpus[0].enable_method, None);
    let e = err(&base().edit("cpus", |cs| cs.edit("cpu@1", |c1| c1.without("enable-method"))));
    assert_eq!((e.kind, e.property), (ErrorKind::Missing, Some("enable-method")));
    let odd = base()
        .edit("cpus", |cs| cs.edit("cpu@1", |c1| c1.p("enable-method", s("brcm,bcm2836-smp"))));
    assert_eq!(err(&odd).kind, ErrorKind::Unsupported("brcm,bcm2836-smp".into()));
}

#[test]
fn spin_table_cpu_without_release_addr_is_missing() {
    let spin = |c: N| c.p("enable-method", s("spin-table"));
    let tree = base().edit("cpus", |cs| cs.edit("cpu@1", spin));
    let e = err(&tree);
    assert_eq!(e.kind, ErrorKind::Missing);
    assert_eq!(e.to_string(), r#"device tree: /cpus/cpu@1: property "cpu-release-addr": missing"#);
    let one_cell =
        tree.clone().edit("cpus", |cs| cs.edit("cpu@1", |c1| c1.p("cpu-release-addr", c(&[0xe0]))));
    let release = PhysAddr::new(0xe0);
    assert_eq!(
        parse(&one_cell).unwrap().cpus[1].enable_method,
        Some(EnableMethod::SpinTable { release_addr: release })
    );
    let three =
        tree.edit("cpus", |cs| cs.edit("cpu@1", |c1| c1.p("cpu-release-addr", c(&[0, 0, 0xe0]))));
    assert!(matches!(err(&three).kind, ErrorKind::BadLength { .. }));
}

#[test]
fn cpus_use_two_cell_mpidr_and_skip_non_cpu_and_disabled_nodes() {
    let tree = base().edit("cpus", |cs| {
        cs.p("#address-cells", c(&[2]))
            .without("cpu@0")
            .without("cpu@1")
            .c(n("cpu-map").c(n("cluster0")))
            .c(cpu(0).p("reg", c(&[0, 0])))
            .c(cpu(0x100).p("reg", c(&[0x1, 0x100])))
            .c(cpu(2).p("reg", c(&[0, 2])).p("status", s("disabled")))
    });
    let mpidrs: Vec<u64> = parse(&tree).unwrap().cpus.iter().map(|c| c.mpidr).collect();
    assert_eq!(mpidrs, [0, 0x1_0000_0100]);
    let none = base().edit("cpus", |cs| cs.without("cpu@0").without("cpu@1"));
    assert_eq!(err(&none).kind, ErrorKind::NoCpus);
}

#[test]
fn psci_before_0_2_uses_cpu_on_property_and_hvc_is_recognised() {
    let old = base().edit("psci", |p| {
        p.p("compatible", s("arm,psci")).p("method", s("hvc")).p("cpu_on", c(&[0x9500_0001]))
    });
    let psci = parse(&old).unwrap().psci.unwrap();
    assert_eq!(
        (psci.conduit, psci.version_0_2_or_later, psci.cpu_on),
        (PsciConduit::Hvc, false, 0x9500_0001)
    );
    let no_cpu_on = old.edit("psci", |p| p.without("cpu_on"));
    assert_eq!(err(&no_cpu_on).property, Some("cpu_on"));
    let bad_method = base().edit("psci", |p| p.p("method", s("svc")));
    assert_eq!(err(&bad_method).kind, ErrorKind::Unsupported("svc".into()));
    let cpus_need_psci = base().without("psci");
    assert_eq!(err(&cpus_need_psci).property, Some("enable-method"));
}

#[test]
fn initrd_accepts_32_and_64_bit_cells_and_rejects_end_before_start() {
    let with = |start: Vec<u8>, end: Vec<u8>| {
        base().edit("chosen", |ch| ch.p("linux,initrd-start", start).p("linux,initrd-end", end))
    };
    let p = parse(&with(c(&[0x4800_0000]), c(&[0, 0x4810_0000]))).unwrap();
    assert_eq!(p.initrd, Some(region(0x4800_0000, 0x10_0000)));
    let p = parse(&with(c(&[1, 0]), c(&[1, 0x1000]))).unwrap();
    assert_eq!(p.initrd, Some(region(1 << 32, 0x1000)));
    let e = err(&with(c(&[0x4810_0000]), c(&[0x4800_0000])));
    assert!(matches!(e.kind, ErrorKind::BadValue(_)));
    assert_eq!((e.node.as_deref(), e.property), (Some("/chosen"), Some("linux,initrd-end")));
    let half = base().edit("chosen", |ch| ch.p("linux,initrd-start", c(&[0x4800_0000])));
    assert_eq!(err(&half).kind, ErrorKind::Missing);
    assert!(matches!(err(&with(c(&[1, 2, 3]), c(&[4]))).kind, ErrorKind::BadLength { .. }));
}

// ---- broken blobs --------------------------------------------------------------

fn fixtures() -> Vec<Vec<u8>> {
    let mut all = vec![VIRT_GICV3.to_vec(), VIRT_GICV2.to_vec(), build(&base())];
    all.extend(pi4_qemu());
    all.extend(pi4_debian());
    all
}

#[test]
fn truncated_blobs_are_errors_never_panics() {
    for blob in fixtures() {
        for len in (0..=200).chain((201..blob.len()).step_by(97)) {
            assert!(Platform::from_fdt(&blob[..len]).is_err(), "length {len} accepted");
        }
    }
    let e = Platform::from_fdt(&VIRT_GICV3[..100]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Truncated { totalsize: 8110, have: 100 });
    assert_eq!(e.to_string(), "device tree: truncated: header says 8110 bytes, blob has 100");
    assert_eq!(
        Platform::from_fdt(&VIRT_GICV3[..20]).unwrap_err().kind,
        ErrorKind::TooShort { have: 20 }
    );
}

fn patched(offset: usize, value: u32) -> Vec<u8> {
    let mut blob = VIRT_GICV3.to_vec();
    blob[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    blob
}

#[test]
fn bad_magic_is_reported_with_its_value() {
    let e = Platform::from_fdt(&patched(0, 0x1234_5678)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadMagic(0x1234_5678));
    assert_eq!(e.to_string(), "device tree: bad header: magic 0x12345678 (expected 0xd00dfeed)");
}

#[test]
fn totalsize_larger_than_blob_is_truncated() {
    let e = Platform::from_fdt(&patched(4, 8111)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Truncated { totalsize: 8111, have: 8110 });
}

#[test]
fn bad_header_fields_are_bad_header() {
    let field = |e: PlatformError| match e.kind {
        ErrorKind::BadHeader { field, .. } => field,
        other => panic!("{other:?}"),
    };
    let cases = [
        (4, 39, "totalsize"),
        (8, 0x10_0000, "off_dt_struct"),
        (8, 0x41, "off_dt_struct"),
        (12, 0xffff_fff0, "off_dt_strings"),
        (16, 0x10_0000, "off_mem_rsvmap"),
        (16, 0x2c, "off_mem_rsvmap"),
        (20, 15, "version"),
        (24, 18, "last_comp_version"),
        (32, 0xffff_ffff, "off_dt_strings"),
        (36, 0x7fff_ffff, "off_dt_struct"),
    ];
    for (offset, value, expected) in cases {
        assert_eq!(
            field(Platform::from_fdt(&patched(offset, value)).unwrap_err()),
            expected,
            "{offset} {value:#x}"
        );
    }
}

#[test]
fn version_16_header_without_struct_size_is_accepted() {
    let mut blob = patched(20, 16);
    blob[36..40].fill(0);
    assert_eq!(Platform::from_fdt(&blob), Platform::from_fdt(VIRT_GICV3));
}

/// Offset of the first occurrence of `needle` in `blob`.
fn find(blob: &[u8], needle: &[u8]) -> usize {
    blob.windows(needle.len()).position(|w| w == needle).unwrap()
}

/// A blob with a hand-written structure block (`words`) and strings block.
fn raw_blob(words: &[u32], strings: &[u8]) -> Vec<u8> {
    let mut structure = Vec::new();
    words.iter().for_each(|&w| push32(&mut structure, w));
    let mut out = Vec::new();
    let (len, off_strings) = (structure.len(), 56 + structure.len());
    for v in [
        0xd00d_feed,
        off_strings + strings.len(),
        56,
        off_strings,
        40,
        17,
        16,
        0,
        strings.len(),
        len,
    ] {
        push32(&mut out, v as u32);
    }
    out.resize(56, 0);
    out.extend(structure.into_iter().chain(strings.iter().copied()));
    out
}

/// Node /a with child "b", then a property "x" of /a after it.
fn property_after_subnode() -> Vec<u8> {
    raw_blob(&[1, 0, 1, 0x6100_0000, 1, 0x6200_0000, 2, 3, 1, 0, 0x0100_0000, 2, 2, 9], b"x\0")
}

#[test]
fn malformed_structure_blocks_are_bad_structure() {
    let problem = |blob: &[u8]| match Platform::from_fdt(blob).unwrap_err().kind {
        ErrorKind::BadStructure { problem, .. } => problem,
        other => panic!("{other:?}"),
    };
    assert_eq!(problem(&property_after_subnode()), "property outside a node or after a subnode");
    assert_eq!(problem(&raw_blob(&[1, 0, 2, 1, 0, 2, 9], b"")), "more than one root node");
    assert_eq!(problem(&raw_blob(&[2, 9], b"")), "FDT_END_NODE without a node");
    assert_eq!(problem(&raw_blob(&[1, 0, 9], b"")), "FDT_END before the root node is closed");
    assert_eq!(problem(&raw_blob(&[1, 0, 2], b"")), "structure block ends without FDT_END");
    assert_eq!(problem(&raw_blob(&[7], b"")), "unknown token");
    assert_eq!(problem(&raw_blob(&[1, 0x6161_6161], b"")), "node name unterminated or not UTF-8");
    assert_eq!(
        problem(&raw_blob(&[1, 0xff00_0000, 2, 9], b"")),
        "node name unterminated or not UTF-8"
    );
    let bad_name = "property name offset outside strings block or not UTF-8";
    assert_eq!(problem(&raw_blob(&[1, 0, 3, 0, 7, 2, 9], b"x\0")), bad_name);
    assert_eq!(problem(&raw_blob(&[1, 0, 3, 0, 0, 2, 9], b"x")), bad_name);
    assert_eq!(
        problem(&raw_blob(&[1, 0, 3, 0x100, 0, 2, 9], b"x\0")),
        "property value runs past the block"
    );
    assert_eq!(
        problem(&raw_blob(&[1, 0, 3, 0xffff_fff0, 0, 2, 9], b"x\0")),
        "property value runs past the block"
    );
    assert_eq!(
        problem(&build(&base().c(n("x").p("#address-cells", [0, 1])))),
        "#address-cells or #size-cells is not one cell"
    );
    let deep = (0..40).fold(n("leaf"), |kid, i| n(&format!("n{i}")).c(kid));
    assert_eq!(problem(&build(&base().c(deep))), "nodes nested too deeply");
    // Reservation map without terminator.
    let mut rsv = build_with(&base(), &[(0x1000, 0x1000)], false);
    let off = rsv.len() as u32 - 8;
    rsv[16..20].copy_from_slice(&off.to_be_bytes());
    assert_eq!(problem(&rsv), "reservation map has no terminating entry");
    // A corrupted property name offset in a real tree.
    let mut b = build(&base());
    let at = find(&b, b"\0\0\0\x03\0\0\0\x04") + 8;
    b[at..at + 4].copy_from_slice(&0xffffu32.to_be_bytes());
    assert_eq!(problem(&b), bad_name);
}

#[test]
fn fdt_crate_alone_panics_on_blobs_that_from_fdt_rejects_or_repairs() {
    // A property after a subnode (a spec violation) and FDT_NOPs between
    // properties (spec-valid!): fdt 0.1.5's `skip_current_node` asserts.
    let late = property_after_subnode();
    let with_nops = build_with(&n("").c(n("a").p("y", [1]).p("z", [2]).c(n("b"))), &[], true);
    for blob in [&late, &with_nops] {
        let raw = std::panic::catch_unwind(|| {
            let fdt = fdt::Fdt::new(blob).unwrap();
            fdt.all_nodes().flat_map(|node| node.children().map(|c| c.name.len())).sum::<usize>()
        });
        assert!(raw.is_err(), "fdt crate no longer panics");
    }
    assert!(matches!(Platform::from_fdt(&late).unwrap_err().kind, ErrorKind::BadStructure { .. }));
    // The NOP tree is valid, so it passes the blob checks; it just has no memory.
    assert_eq!(Platform::from_fdt(&with_nops).unwrap_err().kind, ErrorKind::NoMemory);
}

/// Deterministic xorshift64 PRNG.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for blob in fixtures() {
        let mut ok = 0;
        for i in 0..3000 {
            let mut b = blob.clone();
            for _ in 0..1 + rng.next() % 4 {
                // Every 4th iteration aims at the header, the rest anywhere.
                let span = if i % 4 == 0 { 64 } else { b.len() };
                let at = (rng.next() % span as u64) as usize;
                b[at] ^= (rng.next() % 255 + 1) as u8;
            }
            ok += usize::from(Platform::from_fdt(&b).is_ok());
        }
        println!("{} bytes: {ok}/3000 mutants still parse", blob.len());
    }
}

#[test]
fn random_token_rewrites_never_panic() {
    // Overwrite aligned words with token values, small numbers or noise, to
    // hit the structure walker harder than byte flips do.
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for blob in fixtures() {
        for _ in 0..3000 {
            let mut b = blob.clone();
            for _ in 0..1 + rng.next() % 3 {
                let at = (rng.next() % (b.len() / 4) as u64) as usize * 4;
                let value = match rng.next() % 4 {
                    0 | 1 => (rng.next() % 11) as u32,
                    2 => u32::MAX - (rng.next() % 16) as u32,
                    _ => rng.next() as u32,
                };
                b[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            let _ = Platform::from_fdt(&b);
        }
    }
}
