//! Writer tests: hand-built trees read back through `Platform`, misuse errors, fixture round trips.

use std::path::PathBuf;
use std::process::Command;

use super::*;
use crate::addr::PhysAddr;
use crate::platform::{MemRegion, Platform};

static VIRT_GICV3: &[u8] = include_bytes!("../../tests/fixtures/virt-gicv3.dtb");
static VIRT_GICV2: &[u8] = include_bytes!("../../tests/fixtures/virt-gicv2.dtb");

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

type Listing = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// Every node path with its properties, and the reservations, of a blob.
fn listing(blob: &[u8]) -> (Listing, Vec<(u64, u64)>) {
    fn walk(n: &Node, path: &str, out: &mut Listing) {
        out.push((path.into(), n.props.clone()));
        for k in &n.children {
            let p = if path == "/" {
                format!("/{}", k.name)
            } else {
                format!("{path}/{}", k.name)
            };
            walk(k, &p, out);
        }
    }
    let fdt = Fdt::parse(blob).unwrap();
    let mut out = Vec::new();
    walk(&fdt.root, "/", &mut out);
    (out, fdt.memreserve)
}

fn small_machine() -> Node {
    Node::new("")
        .prop("#address-cells", cells_bytes(&[2]))
        .prop("#size-cells", cells_bytes(&[2]))
        .prop("interrupt-parent", cells_bytes(&[1]))
        .prop("model", string_list(&["writer,test"]))
        .child(
            Node::new("memory@40000000")
                .prop("device_type", string_list(&["memory"]))
                .prop("reg", cells_bytes(&[0, 0x4000_0000, 0, 0x1000_0000])),
        )
        .child(
            Node::new("intc@8000000")
                .prop("compatible", string_list(&["arm,gic-400"]))
                .prop("interrupt-controller", [])
                .prop("#interrupt-cells", cells_bytes(&[3]))
                .prop("phandle", cells_bytes(&[1]))
                .prop(
                    "reg",
                    cells_bytes(&[0, 0x0800_0000, 0, 0x1000, 0, 0x0801_0000, 0, 0x2000]),
                ),
        )
        .child(
            Node::new("timer")
                .prop("compatible", string_list(&["arm,armv8-timer"]))
                .prop("interrupts", cells_bytes(&[1, 13, 8, 1, 14, 8, 1, 11, 8])),
        )
        .child(
            Node::new("cpus")
                .prop("#address-cells", cells_bytes(&[1]))
                .prop("#size-cells", cells_bytes(&[0]))
                .child(
                    Node::new("cpu@0")
                        .prop("device_type", string_list(&["cpu"]))
                        .prop("reg", cells_bytes(&[0])),
                ),
        )
        .child(
            Node::new("pl011@9000000")
                .prop("compatible", string_list(&["arm,pl011", "arm,primecell"]))
                .prop("reg", cells_bytes(&[0, 0x0900_0000, 0, 0x1000]))
                .prop("interrupts", cells_bytes(&[0, 1, 4])),
        )
        .child(Node::new("chosen").prop("stdout-path", string_list(&["/pl011@9000000"])))
}

#[test]
fn written_tree_parses_back_as_a_platform() {
    let blob = small_machine().to_fdt(&[(0x4100_0000, 0x1000)]).unwrap();
    let p = Platform::from_fdt(&blob).unwrap();
    assert_eq!(p.model, "writer,test");
    assert_eq!(
        p.memory,
        [MemRegion {
            base: PhysAddr::new(0x4000_0000),
            size: 0x1000_0000
        }]
    );
    assert_eq!(
        p.reserved,
        [MemRegion {
            base: PhysAddr::new(0x4100_0000),
            size: 0x1000
        }]
    );
    assert_eq!(p.console.base, PhysAddr::new(0x0900_0000));
    assert_eq!(p.console.irq.map(|i| i.intid), Some(33));
    assert_eq!(p.cpus.len(), 1);
}

#[test]
fn header_is_v17_with_aligned_blocks_and_size() {
    let mut w = FdtWriter::new();
    w.boot_cpuid_phys(3);
    w.reserve(0x1000, 0x2000);
    w.reserve(0x9000, 0); // skipped: would terminate the map
    w.begin_node("").unwrap();
    w.property_string("x", "abcde").unwrap();
    w.end_node().unwrap();
    let blob = w.finish().unwrap();
    assert_eq!(be32(&blob, 0), 0xd00d_feed);
    assert_eq!(be32(&blob, 4) as usize, blob.len());
    assert_eq!(blob.len() % 8, 0);
    assert_eq!(
        (be32(&blob, 20), be32(&blob, 24), be32(&blob, 28)),
        (17, 16, 3)
    );
    let (off_struct, off_strings, off_rsv) = (be32(&blob, 8), be32(&blob, 12), be32(&blob, 16));
    assert_eq!(off_rsv % 8, 0);
    assert_eq!(off_struct % 4, 0);
    assert_eq!(off_struct, off_rsv + 32, "one entry plus the terminator");
    assert_eq!(off_strings, off_struct + be32(&blob, 36));
    let fdt = Fdt::parse(&blob).unwrap();
    assert_eq!(
        (fdt.memreserve, fdt.boot_cpuid_phys),
        (vec![(0x1000, 0x2000)], 3)
    );
}

#[test]
fn property_names_are_deduplicated_in_the_strings_block() {
    let mut w = FdtWriter::new();
    w.begin_node("").unwrap();
    for i in 0..5 {
        w.begin_node(&format!("n@{i}")).unwrap();
        w.property_u32("reg", i).unwrap();
        w.property_strings("compatible", &["a", "b"]).unwrap();
        w.end_node().unwrap();
    }
    w.end_node().unwrap();
    let blob = w.finish().unwrap();
    assert_eq!(be32(&blob, 32) as usize, "reg\0compatible\0".len());
    let (nodes, _) = listing(&blob);
    assert_eq!(nodes.len(), 6);
    assert_eq!(nodes[3].0, "/n@2");
    assert_eq!(
        nodes[3].1,
        [
            ("reg".into(), vec![0, 0, 0, 2]),
            ("compatible".into(), b"a\0b\0".to_vec())
        ]
    );
}

#[test]
fn unbalanced_nodes_and_misplaced_properties_are_errors() {
    let mut w = FdtWriter::new();
    assert_eq!(w.end_node(), Err(WriteError::EndWithoutBegin));
    assert_eq!(w.property_empty("x"), Err(WriteError::MisplacedProperty));
    assert_eq!(w.begin_node("root"), Err(WriteError::RootNamed));
    w.begin_node("").unwrap();
    w.begin_node("a").unwrap();
    assert_eq!(w.clone().finish(), Err(WriteError::UnclosedNodes(2)));
    w.end_node().unwrap();
    assert_eq!(w.property_empty("late"), Err(WriteError::MisplacedProperty));
    assert_eq!(w.begin_node("a/b"), Err(WriteError::BadName));
    assert_eq!(w.begin_node(""), Err(WriteError::BadName));
    w.end_node().unwrap();
    assert_eq!(w.end_node(), Err(WriteError::EndWithoutBegin));
    assert_eq!(w.begin_node(""), Err(WriteError::SecondRoot));
    assert_eq!(FdtWriter::new().finish(), Err(WriteError::NoRoot));
    let mut deep = FdtWriter::new();
    deep.begin_node("").unwrap();
    for i in 1..MAX_DEPTH {
        deep.begin_node(&format!("n{i}")).unwrap();
    }
    assert_eq!(deep.begin_node("x"), Err(WriteError::TooDeep(MAX_DEPTH)));
}

#[test]
fn size_limit_is_an_error_not_truncation() {
    let mut w = FdtWriter::new();
    w.begin_node("").unwrap();
    w.property("big", &vec![0; 4096]).unwrap();
    w.end_node().unwrap();
    let exact = w.clone().finish().unwrap().len();
    assert_eq!(w.size_estimate(), exact);
    assert_eq!(
        w.clone().finish_limited(exact - 1),
        Err(WriteError::TooLarge)
    );
    assert_eq!(w.finish_limited(exact).unwrap().len(), exact);
}

#[test]
fn nops_are_skipped_by_the_reader() {
    let mut w = FdtWriter::new();
    w.begin_node("").unwrap();
    w.nop();
    w.property_u32("a", 1).unwrap();
    w.nop();
    w.property_u32("b", 2).unwrap();
    w.end_node().unwrap();
    let blob = w.finish().unwrap();
    assert_eq!(
        Fdt::parse(&blob).unwrap().root,
        Node::new("")
            .prop("a", [0, 0, 0, 1])
            .prop("b", [0, 0, 0, 2])
    );
}

/// dtc's source output for a blob, if dtc is installed.
fn dtc(blob: &[u8], name: &str) -> Option<String> {
    let path = std::env::temp_dir().join(format!("hv-devtree-{}-{name}.dtb", std::process::id()));
    std::fs::write(&path, blob).unwrap();
    let out = Command::new("dtc")
        .args(["-I", "dtb", "-O", "dts"])
        .arg(&path)
        .output()
        .ok();
    let _ = std::fs::remove_file(&path);
    let out = out.filter(|o| o.status.success())?;
    Some(String::from_utf8(out.stdout).unwrap())
}

fn round_trip(original: &[u8], name: &str) {
    // Streamed through the writer node by node from the parsed tree.
    let fdt = Fdt::parse(original).unwrap();
    let blob = fdt.to_blob().unwrap();
    assert_eq!(
        listing(&blob),
        listing(original),
        "{name}: node/property lists differ"
    );
    assert_eq!(
        Fdt::parse(&blob).unwrap().boot_cpuid_phys,
        fdt.boot_cpuid_phys
    );
    assert_eq!(
        Platform::from_fdt(&blob),
        Platform::from_fdt(original),
        "{name}"
    );
    assert!(
        blob.len() <= original.len().next_multiple_of(8),
        "{name}: {} > {}",
        blob.len(),
        original.len()
    );
    match (
        dtc(original, &format!("{name}-in")),
        dtc(&blob, &format!("{name}-out")),
    ) {
        (Some(a), Some(b)) => assert_eq!(a, b, "{name}: dtc output differs"),
        _ => println!("dtc not available: skipped the dtc comparison"),
    }
}

#[test]
fn virt_gicv3_fixture_round_trips_node_for_node() {
    let (nodes, _) = listing(VIRT_GICV3);
    assert!(nodes.len() > 50, "{}", nodes.len());
    round_trip(VIRT_GICV3, "virt-gicv3");
}

#[test]
fn virt_gicv2_and_pi4_fixtures_round_trip() {
    round_trip(VIRT_GICV2, "virt-gicv2");
    let var = "HV_PI4_DTB";
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) => round_trip(&std::fs::read(p).unwrap(), "pi4"),
        None if std::env::var("HV_REQUIRE_FIXTURES").as_deref() == Ok("1") => {
            panic!("{var} not set but HV_REQUIRE_FIXTURES=1")
        }
        None => println!("skipped: {var} not set"),
    }
}
