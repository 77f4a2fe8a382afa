//! dom0 tree derivation on the QEMU virt (GICv3, GICv2) and Raspberry Pi 4 trees.

use std::path::PathBuf;

use super::*;
use crate::platform::{EnableMethod, Platform, PsciConduit};
use crate::writer::Fdt;

static VIRT_GICV3: &[u8] = include_bytes!("../../tests/fixtures/virt-gicv3.dtb");
static VIRT_GICV2: &[u8] = include_bytes!("../../tests/fixtures/virt-gicv2.dtb");

fn region(base: u64, size: u64) -> MemRegion {
    MemRegion {
        base: PhysAddr::new(base),
        size,
    }
}

fn pi4() -> Option<Vec<u8>> {
    let var = "HV_PI4_DTB";
    match std::env::var_os(var).map(PathBuf::from) {
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

/// The node at `path` of a blob, if present.
fn node(blob: &[u8], path: &str) -> Option<crate::writer::Node> {
    let mut at = Fdt::parse(blob).unwrap().root;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at = at.children.into_iter().find(|c| c.name == part)?;
    }
    Some(at)
}

/// Every node path of a blob.
fn paths(blob: &[u8]) -> Vec<String> {
    fn walk(n: &crate::writer::Node, path: String, out: &mut Vec<String>) {
        for k in &n.children {
            let p = format!("{}/{}", path.trim_end_matches('/'), k.name);
            walk(k, p.clone(), out);
            out.push(p);
        }
    }
    let mut out = Vec::new();
    walk(&Fdt::parse(blob).unwrap().root, "/".into(), &mut out);
    out
}

fn covers(windows: &[MemRegion], addr: u64) -> bool {
    windows
        .iter()
        .any(|w| w.base.as_u64() <= addr && addr < w.base.as_u64() + w.size)
}

fn overlaps(windows: &[MemRegion], r: MemRegion) -> bool {
    windows.iter().any(|w| {
        w.base.as_u64() < r.base.as_u64() + r.size && r.base.as_u64() < w.base.as_u64() + w.size
    })
}

const V3_GICD: MemRegion = MemRegion {
    base: PhysAddr::new(0x0800_0000),
    size: 0x1_0000,
};
const V3_GICR: MemRegion = MemRegion {
    base: PhysAddr::new(0x080a_0000),
    size: 2 * GICR_FRAME_PAIR,
};
const DOM0_MEM: [MemRegion; 1] = [MemRegion {
    base: PhysAddr::new(0x4800_0000),
    size: 256 << 20,
}];
const INITRD: MemRegion = MemRegion {
    base: PhysAddr::new(0x5000_0000),
    size: 0x40_0000,
};

fn virt_v3_cfg() -> Dom0Config<'static> {
    Dom0Config {
        vcpus: 2,
        memory: &DOM0_MEM,
        bootargs: "console=ttyAMA0 earlycon root=/dev/ram0",
        initrd: Some(INITRD),
        gic: GicView::V3 {
            gicd: V3_GICD,
            gicr: V3_GICR,
        },
    }
}

/// Assertions common to every derived tree.
fn check_common(d: &Dom0Tree, cfg: &Dom0Config, host: &Platform) -> Platform {
    assert!(d.blob.len() <= DOM0_FDT_MAX && d.blob.len().is_multiple_of(8));
    let p = Platform::from_fdt(&d.blob).unwrap();
    assert_eq!(p.memory, cfg.memory, "only dom0's memory");
    assert!(p.reserved.iter().all(|r| cfg
        .memory
        .iter()
        .any(|m| r.base >= m.base && r.base.as_u64() + r.size <= m.base.as_u64() + m.size)));
    assert_eq!(p.cpus.len(), cfg.vcpus);
    assert!(p
        .cpus
        .iter()
        .all(|c| c.enable_method == Some(EnableMethod::Psci)));
    assert_eq!(
        p.cpus,
        host.cpus[..cfg.vcpus]
            .iter()
            .map(|c| crate::platform::Cpu {
                enable_method: Some(EnableMethod::Psci),
                ..c.clone()
            })
            .collect::<Vec<_>>()
    );
    let psci = p.psci.clone().unwrap();
    assert_eq!(
        (psci.conduit, psci.version_0_2_or_later),
        (PsciConduit::Hvc, true)
    );
    assert_eq!(
        p.gic.maintenance_irq, None,
        "the maintenance IRQ is the hypervisor's"
    );
    match cfg.gic {
        GicView::V2 { gicd, gicc } => {
            assert_eq!(
                (p.gic.gicd, p.gic.gicc, p.gic.gich, p.gic.gicv),
                (gicd, Some(gicc), None, None)
            );
        }
        GicView::V3 { gicd, gicr } => {
            assert_eq!(
                (p.gic.gicd, p.gic.gicr.as_slice(), p.gic.gicc),
                (gicd, &[gicr][..], None)
            );
        }
    }
    assert_eq!(p.gic.path, host.gic.path);
    let gic_node = node(&d.blob, &p.gic.path).unwrap();
    assert!(gic_node.children.is_empty(), "no ITS / v2m frames");
    assert!(gic_node.get("phandle").is_some() && gic_node.get("interrupt-controller").is_some());
    assert_eq!(p.timer.hyp_phys, None);
    assert_eq!(
        (p.timer.secure_phys, p.timer.nonsecure_phys, p.timer.virt),
        (
            host.timer.secure_phys,
            host.timer.nonsecure_phys,
            host.timer.virt
        )
    );
    assert_eq!(p.bootargs, cfg.bootargs);
    assert_eq!(p.initrd, cfg.initrd);
    let hv = node(&d.blob, "/hypervisor").expect("/hypervisor");
    assert_eq!(hv.get("compatible"), Some(&b"rusthv,hypervisor\0"[..]));
    assert_eq!(p.console, host.console, "dom0 owns the console unchanged");
    assert!(!paths(&d.blob).iter().any(|p| p.ends_with("cpu-map")));
    // MMIO: page-aligned, sorted, disjoint; never RAM or GIC frames.
    for w in &d.passthrough_mmio {
        assert!(w.base.is_aligned(PAGE_SIZE) && w.size % PAGE_SIZE == 0 && w.size > 0);
    }
    for pair in d.passthrough_mmio.windows(2) {
        assert!(pair[0].base.as_u64() + pair[0].size < pair[1].base.as_u64());
    }
    for r in host.memory.iter().chain(cfg.memory) {
        assert!(
            !overlaps(&d.passthrough_mmio, *r),
            "RAM {r:?} passed through"
        );
    }
    let g = &host.gic;
    for r in [Some(g.gicd), g.gicc, g.gich, g.gicv]
        .into_iter()
        .flatten()
        .chain(g.gicr.iter().copied())
    {
        assert!(
            !overlaps(&d.passthrough_mmio, r),
            "GIC frame {r:?} passed through"
        );
    }
    assert!(covers(&d.passthrough_mmio, host.console.base.as_u64()));
    // SPIs: sorted, deduplicated, SPIs only.
    assert!(d.passthrough_spis.windows(2).all(|w| w[0] < w[1]));
    assert!(d.passthrough_spis.iter().all(|&s| (32..1020).contains(&s)));
    assert!(d
        .passthrough_spis
        .contains(&host.console.irq.unwrap().intid));
    p
}

#[test]
fn virt_gicv3_dom0_gets_two_psci_vcpus_its_memory_and_an_emulated_gicv3() {
    let cfg = virt_v3_cfg();
    let host = Platform::from_fdt(VIRT_GICV3).unwrap();
    let d = derive_dom0_tree(VIRT_GICV3, &cfg).unwrap();
    let p = check_common(&d, &cfg, &host);
    assert_eq!(p.memory, [region(0x4800_0000, 256 << 20)]);
    assert_eq!(p.cpus.iter().map(|c| c.mpidr).collect::<Vec<_>>(), [0, 1]);
    let gic = node(&d.blob, "/intc@8000000").unwrap();
    assert_eq!(gic.get("#redistributor-regions"), Some(&[0, 0, 0, 1][..]));
    assert!(!paths(&d.blob).iter().any(|p| p.contains("its@")));
    let pcie = node(&d.blob, "/pcie@10000000").unwrap();
    assert!(pcie.get("msi-map").is_none() && pcie.get("msi-parent").is_none());
    assert!(pcie.get("msi-map-mask").is_none());
    assert!(covers(&d.passthrough_mmio, 0x0900_0000));
    assert!(covers(&d.passthrough_mmio, 0x40_1000_0000), "PCIe ECAM");
    assert!(
        covers(&d.passthrough_mmio, 0x1000_0000),
        "PCIe 32-bit MMIO window"
    );
    assert!(d.passthrough_spis.contains(&33));
    assert!(d.passthrough_spis.iter().all(|&s| s >= 32));
    assert!(!d.passthrough_spis.contains(&25) && !d.passthrough_spis.contains(&26));
    assert_eq!(
        node(&d.blob, "/memory@48000000")
            .unwrap()
            .get("device_type"),
        Some(&b"memory\0"[..])
    );
    let fdt = Fdt::parse(&d.blob).unwrap();
    assert_eq!(fdt.boot_cpuid_phys, 0);
    println!(
        "virt-gicv3 dom0 blob {} bytes (host {}); mmio {:x?}; spis {:?}",
        d.blob.len(),
        VIRT_GICV3.len(),
        d.passthrough_mmio,
        d.passthrough_spis
    );
}

#[test]
fn virt_gicv2_dom0_sees_gicd_and_gicc_only_and_no_v2m() {
    let host = Platform::from_fdt(VIRT_GICV2).unwrap();
    let cfg = Dom0Config {
        vcpus: 1,
        memory: &DOM0_MEM,
        bootargs: "console=ttyAMA0",
        initrd: None,
        gic: GicView::V2 {
            gicd: host.gic.gicd,
            gicc: host.gic.gicc.unwrap(),
        },
    };
    let d = derive_dom0_tree(VIRT_GICV2, &cfg).unwrap();
    check_common(&d, &cfg, &host);
    assert!(!paths(&d.blob).iter().any(|p| p.contains("v2m")));
    let chosen = node(&d.blob, "/chosen").unwrap();
    assert!(chosen.get("linux,initrd-start").is_none() && chosen.get("linux,initrd-end").is_none());
    let pcie = node(&d.blob, "/pcie@10000000").unwrap();
    assert!(pcie.get("msi-parent").is_none() && pcie.get("msi-map").is_none());
    assert!(covers(&d.passthrough_mmio, 0x0900_0000) && d.passthrough_spis.contains(&33));
    println!(
        "virt-gicv2 dom0 blob {} bytes; spis {:?}",
        d.blob.len(),
        d.passthrough_spis
    );
}

#[test]
fn pi4_dom0_gets_psci_hvc_instead_of_spin_tables_and_keeps_the_mini_uart() {
    let Some(blob) = pi4() else { return };
    let host = Platform::from_fdt(&blob).unwrap();
    let mem = [region(0x100_0000, 256 << 20)];
    let cfg = Dom0Config {
        vcpus: 4,
        memory: &mem,
        bootargs: "console=ttyS1,115200",
        initrd: Some(region(0x1000_0000, 0x10_0000)),
        gic: GicView::V2 {
            gicd: host.gic.gicd,
            gicc: host.gic.gicc.unwrap(),
        },
    };
    let d = derive_dom0_tree(&blob, &cfg).unwrap();
    let p = check_common(&d, &cfg, &host);
    assert_eq!(p.console.base, PhysAddr::new(0xfe21_5040));
    assert_eq!(
        p.reserved,
        [],
        "spin-table memreserve and the CMA pool are gone"
    );
    assert!(node(&d.blob, "/reserved-memory").is_none());
    let cpus = node(&d.blob, "/cpus").unwrap();
    assert!(cpus.get("enable-method").is_none());
    assert!(cpus
        .children
        .iter()
        .all(|c| c.get("cpu-release-addr").is_none()));
    // The GIC sits on /soc (bus 0x40000000 → CPU 0xff800000): reg is written back in bus addresses.
    let gic = node(&d.blob, "/soc/interrupt-controller@40041000").unwrap();
    assert_eq!(
        gic.get("reg"),
        Some(&crate::writer::cells_bytes(&[0x4004_1000, 0x1000, 0x4004_2000, 0x2000])[..])
    );
    assert!(covers(&d.passthrough_mmio, 0xfe21_5000));
    assert!(d.passthrough_spis.contains(&125));
    // hdmi@7ef00700 routes to the l2-intc, which itself sends SPI 96+32 to the GIC.
    assert!(d.passthrough_spis.contains(&(96 + 32)));
    assert!(!covers(&d.passthrough_mmio, 0xff84_1000) && !covers(&d.passthrough_mmio, 0xff84_4000));
    println!(
        "pi4 dom0 blob {} bytes (host {}); {} mmio windows; spis {:?}",
        d.blob.len(),
        blob.len(),
        d.passthrough_mmio.len(),
        d.passthrough_spis
    );
}

#[test]
fn pi4_lists_nodes_routed_to_other_interrupt_controllers() {
    let Some(blob) = pi4() else { return };
    let checked = blob::check(&blob).unwrap();
    let fdt = fdt::Fdt::new(&checked.canonical).unwrap();
    let tree = Tree::new(&fdt);
    let gic = find_gic(&tree).unwrap();
    let mut elsewhere = Vec::new();
    for i in 0..tree.nodes.len() {
        let routed =
            tree.prop(i, "interrupts").is_some() || tree.prop(i, "interrupts-extended").is_some();
        if let (true, Some(parent)) = (routed, interrupt_parent(&tree, i)) {
            if parent != gic || tree.prop(i, "interrupts-extended").is_some() {
                elsewhere.push(format!("{} -> {}", tree.path(i), tree.path(parent)));
            }
        }
    }
    println!("routed elsewhere: {elsewhere:#?}");
    assert!(elsewhere
        .iter()
        .any(|e| e.starts_with("/soc/hdmi@7ef00700 -> /soc/interrupt-controller@7ef00100")));
}

#[test]
fn vcpus_zero_or_more_than_the_host_has_is_an_error() {
    for vcpus in [0, 5] {
        let cfg = Dom0Config {
            vcpus,
            ..virt_v3_cfg()
        };
        let e = derive_dom0_tree(VIRT_GICV3, &cfg).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::BadValue(_)), "{vcpus}: {e}");
        assert_eq!(e.node.as_deref(), Some("/cpus"));
    }
    let all = Dom0Config {
        vcpus: 4,
        gic: GicView::V3 {
            gicd: V3_GICD,
            gicr: region(0x080a_0000, 4 * GICR_FRAME_PAIR),
        },
        ..virt_v3_cfg()
    };
    assert_eq!(
        Platform::from_fdt(&derive_dom0_tree(VIRT_GICV3, &all).unwrap().blob)
            .unwrap()
            .cpus
            .len(),
        4
    );
}

#[test]
fn gic_view_of_the_wrong_version_or_too_small_gicr_is_an_error() {
    let v2 = Dom0Config {
        gic: GicView::V2 {
            gicd: V3_GICD,
            gicc: region(0x0801_0000, 0x2000),
        },
        ..virt_v3_cfg()
    };
    assert!(derive_dom0_tree(VIRT_GICV3, &v2).is_err());
    let small = Dom0Config {
        gic: GicView::V3 {
            gicd: V3_GICD,
            gicr: region(0x080a_0000, GICR_FRAME_PAIR),
        },
        ..virt_v3_cfg()
    };
    assert!(derive_dom0_tree(VIRT_GICV3, &small).is_err());
    let no_mem = Dom0Config {
        memory: &[],
        ..virt_v3_cfg()
    };
    assert!(derive_dom0_tree(VIRT_GICV3, &no_mem).is_err());
}

#[test]
fn broken_host_blobs_are_errors_never_panics() {
    let cfg = virt_v3_cfg();
    assert_eq!(
        derive_dom0_tree(&VIRT_GICV3[..100], &cfg).unwrap_err().kind,
        ErrorKind::Truncated {
            totalsize: 8110,
            have: 100
        }
    );
    assert!(matches!(
        derive_dom0_tree(&[0; 64], &cfg).unwrap_err().kind,
        ErrorKind::BadMagic(0)
    ));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut b = VIRT_GICV3.to_vec();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % b.len() as u64) as usize;
            b[at] ^= (x >> 32) as u8 | 1;
        }
        if let Ok(d) = derive_dom0_tree(&b, &cfg) {
            let _ = Platform::from_fdt(&d.blob);
        }
    }
}

#[test]
fn reserved_memory_inside_dom0_memory_is_kept_and_the_rest_dropped() {
    use crate::writer::{cells_bytes as c, string_list as s, Node};
    let mut fdt = Fdt::parse(VIRT_GICV3).unwrap();
    fdt.root = fdt.root.child(
        Node::new("reserved-memory")
            .prop("#address-cells", c(&[2]))
            .prop("#size-cells", c(&[2]))
            .prop("ranges", [])
            .child(
                Node::new("in@48100000")
                    .prop("reg", c(&[0, 0x4810_0000, 0, 0x1000]))
                    .prop("no-map", []),
            )
            .child(Node::new("straddle@57fff000").prop("reg", c(&[0, 0x57ff_f000, 0, 0x2000])))
            .child(Node::new("out@40000000").prop("reg", c(&[0, 0x4000_0000, 0, 0x1000])))
            .child(
                Node::new("linux,cma")
                    .prop("compatible", s(&["shared-dma-pool"]))
                    .prop("size", c(&[0, 0x400_0000])),
            ),
    );
    fdt.memreserve = vec![(0x4820_0000, 0x1000), (0x4000_0000, 0x1000)];
    let host = fdt.to_blob().unwrap();
    let d = derive_dom0_tree(&host, &virt_v3_cfg()).unwrap();
    let p = Platform::from_fdt(&d.blob).unwrap();
    assert_eq!(
        p.reserved,
        [region(0x4810_0000, 0x1000), region(0x4820_0000, 0x1000)]
    );
    let rm = node(&d.blob, "/reserved-memory").unwrap();
    assert_eq!(
        rm.children
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["in@48100000"]
    );
    assert!(!covers(&d.passthrough_mmio, 0x4810_0000));
}

#[test]
fn everything_else_passes_through_unchanged() {
    let d = derive_dom0_tree(VIRT_GICV3, &virt_v3_cfg()).unwrap();
    let host = Fdt::parse(VIRT_GICV3).unwrap();
    for path in [
        "/pl011@9000000",
        "/fw-cfg@9020000",
        "/virtio_mmio@a000000",
        "/flash@0",
        "/pmu",
        "/gpio-keys/poweroff",
    ] {
        assert_eq!(node(&d.blob, path), node(VIRT_GICV3, path), "{path}");
    }
    assert_eq!(
        node(&d.blob, "/").unwrap().get("compatible"),
        host.root.get("compatible")
    );
}

#[test]
fn memory_reg_is_each_region_in_the_root_cells_and_refuses_what_does_not_fit() {
    let memory = [region(0x4000_0000, 0x1000_0000), region(0x1_0000_0000, 0x2000)];
    let two_two = memory_reg(&memory, 2, 2).unwrap();
    assert_eq!(
        two_two,
        cells_bytes(&[0, 0x4000_0000, 0, 0x1000_0000, 1, 0, 0, 0x2000])
    );
    assert_eq!(memory_reg(&memory[..1], 1, 1).unwrap(), cells_bytes(&[0x4000_0000, 0x1000_0000]));
    // The second base needs two cells.
    assert!(memory_reg(&memory, 1, 1).is_err());
    // A region whose end overflows.
    assert!(memory_reg(&[region(u64::MAX - 0xfff, 0x2000)], 2, 2).is_err());
}

#[test]
fn memreserve_keeps_only_entries_wholly_inside_dom0_memory() {
    let memory = [region(0x4000_0000, 0x100_0000), region(0x5000_0000, 0x1000)];
    let entries = [
        (0x4000_0000, 0x1000),     // inside the first region
        (0x40ff_f000, 0x1000),     // ends exactly at its end
        (0x40ff_f000, 0x2000),     // runs past it
        (0x4fff_f000, 0x2000),     // straddles the gap into the second
        (0x5000_0000, 0x1000),     // the whole second region
        (0x3fff_f000, 0x1000),     // just below
        (u64::MAX - 0xfff, 0x2000), // overflows
    ];
    assert_eq!(
        memreserve_inside(&entries, &memory),
        [(0x4000_0000, 0x1000), (0x40ff_f000, 0x1000), (0x5000_0000, 0x1000)]
    );
    assert!(inside_memory(&memory, &region(0x4000_0000, 0x100_0000)));
    assert!(!inside_memory(&memory, &region(0x4000_0000, 0x100_0001)));
}

#[test]
fn regions_overlap_only_when_they_share_a_byte() {
    let a = region(0x1000, 0x1000);
    assert!(super::overlaps(&a, &region(0x1fff, 1)));
    assert!(super::overlaps(&a, &region(0x0, 0x1001)));
    assert!(!super::overlaps(&a, &region(0x2000, 0x1000)));
    assert!(!super::overlaps(&a, &region(0x0, 0x1000)));
    // Saturating ends: a window reaching the top of the address space.
    assert!(super::overlaps(&region(u64::MAX - 0xfff, 0x2000), &region(u64::MAX - 1, 1)));
}
