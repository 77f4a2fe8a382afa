//! Derives the device tree the hypervisor hands to dom0 from the host's.
//!
//! Dom0 is the privileged host VM: it owns (and gets 1:1 mappings of) the
//! real devices, but runs on a subset of the CPUs and a fixed slice of RAM,
//! talks to an emulated GIC and starts its secondary vCPUs through the
//! hypervisor's PSCI. [`derive_dom0_tree`] copies the host tree and applies
//! the rules listed on it; they are what the hypervisor promises dom0.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::platform::blob::{self, be32};
use crate::platform::parse::find_gic;
use crate::platform::translate::{entries, reg, translate};
use crate::platform::tree::{cells, Tree};
use crate::platform::{ErrorKind, MemRegion, PlatformError};
use crate::writer::{cells_bytes, node_name, string_list, FdtWriter, WriteError};

/// Largest derived blob (the hypervisor reserves this much for it).
pub const DOM0_FDT_MAX: usize = 1 << 20;

/// One GICv3 redistributor frame pair (RD_base + SGI_base), per vCPU.
pub const GICR_FRAME_PAIR: u64 = hv_arm::gic::gicr::STRIDE as u64;

/// The GIC dom0 sees (CPU physical addresses, identity-mapped into dom0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicView {
    /// GICv2: the distributor is emulated at its host address; the CPU
    /// interface dom0 sees at `gicc` (the host GICC address) is the host's
    /// GICV frame mapped there.
    V2 {
        /// Emulated distributor.
        gicd: MemRegion,
        /// CPU interface (the host GICV frame mapped at the host GICC address).
        gicc: MemRegion,
    },
    /// GICv3: distributor and redistributors both emulated; `gicr` covers
    /// one 128 KiB (0x20000) frame pair per vCPU.
    V3 {
        /// Emulated distributor.
        gicd: MemRegion,
        /// Emulated redistributors, [`GICR_FRAME_PAIR`] bytes per vCPU.
        gicr: MemRegion,
    },
}

/// What dom0 gets.
#[derive(Debug, Clone, Copy)]
pub struct Dom0Config<'a> {
    /// Dom0 keeps the first `vcpus` enabled CPU nodes (tree order), which it runs on 1:1.
    pub vcpus: usize,
    /// Dom0's RAM, identity mapped (IPA = PA).
    pub memory: &'a [MemRegion],
    /// The kernel command line.
    pub bootargs: &'a str,
    /// The boot bundle, mapped read-only into dom0.
    pub initrd: Option<MemRegion>,
    /// The emulated GIC.
    pub gic: GicView,
}

/// The derived tree and what the hypervisor must map and route for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dom0Tree {
    /// The blob (v17, size a multiple of 8, at most [`DOM0_FDT_MAX`] bytes).
    pub blob: Vec<u8>,
    /// MMIO windows of every device passed through (translated CPU physical
    /// addresses, page-aligned outward, merged, sorted): the hypervisor maps
    /// them 1:1 as device memory in dom0's stage-2.
    pub passthrough_mmio: Vec<MemRegion>,
    /// SPI INTIDs (32..1019) of passed-through devices, sorted, deduplicated:
    /// the hypervisor routes them to dom0.
    pub passthrough_spis: Vec<u32>,
}

/// One node of the tree being derived (same index as in the host [`Tree`];
/// nodes the derivation adds come after the host's).
struct Out {
    name: String,
    parent: Option<usize>,
    props: Vec<(String, Vec<u8>)>,
    keep: bool,
}

impl Out {
    fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.props.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.props.push((name.into(), value)),
        }
    }
    fn remove(&mut self, name: &str) {
        self.props.retain(|(k, _)| k != name);
    }
}

fn bad(why: &'static str) -> PlatformError {
    PlatformError::new(ErrorKind::BadValue(why))
}

/// Derives dom0's device tree from the host tree `host`.
///
/// The host blob is validated in full first (never panics on malformed
/// input). The output is the host tree with every node and property copied
/// in order, except:
///
/// - **memory**: every `device_type = "memory"` node is removed; one
///   `/memory@<first base, hex>` with `device_type = "memory"` and `reg` =
///   `cfg.memory` (in the root's `#address-cells`/`#size-cells`) takes the
///   first one's place (or is appended to the root).
/// - **`/memreserve/` and `/reserved-memory`**: only entries / children
///   whose every `reg` entry lies entirely inside one of `cfg.memory`'s
///   regions are kept. Children without `reg` (dynamic pools such as
///   `linux,cma` with `size`/`alloc-ranges`) or with an untranslatable `reg`
///   are dropped, since dom0's memory is small and fixed. The node is removed
///   if no child is left.
/// - **`/cpus`**: the first `cfg.vcpus` enabled `device_type = "cpu"`
///   children are kept, each with `enable-method = "psci"` and without
///   `cpu-release-addr`; every other cpu node is removed, as are `/cpus`'s
///   own `enable-method` and its `cpu-map` child (it names removed CPUs by
///   phandle). `vcpus` of 0 or more than the host's enabled CPUs is an error.
///   The header's `boot_cpuid_phys` is the first kept CPU's `reg`.
/// - **PSCI**: the first node compatible with `arm,psci*` (or a new
///   `/psci`) becomes `compatible = "arm,psci-1.0", "arm,psci-0.2",
///   "arm,psci"`, `method = "hvc"`, keeping only its `phandle`; function-ID
///   properties are gone. Further PSCI nodes are removed.
/// - **GIC** (the node [`crate::platform::Platform`] picks): `reg` is
///   replaced per `cfg.gic` (translated back to the GIC's bus addresses; v2:
///   GICD + GICC; v3: GICD + one GICR region, with `#redistributor-regions =
///   <1>` and no `redistributor-stride`); its `interrupts` (the maintenance
///   interrupt) is removed; its child nodes (GICv2m frames, ITSes) are
///   removed, and any `msi-parent` / `msi-map` (+ `msi-map-mask`) anywhere
///   that references a removed or unknown node is removed too. Other GIC
///   properties (phandle, compatible, `#interrupt-cells`,
///   `interrupt-controller`, `#address-cells`/`#size-cells`, `ranges`) stay.
///   A `GicView` of the other GIC version, or a v3 `gicr` smaller than
///   `vcpus` frame pairs, is an error.
/// - **timer** (`arm,armv8-timer`): `interrupts` keeps only its first three
///   specifiers (secure phys, non-secure phys, virtual); the fourth (EL2
///   physical timer) is the hypervisor's.
/// - **`/chosen`** (created if absent): `bootargs = cfg.bootargs`;
///   `linux,initrd-start`/`-end` are set from `cfg.initrd` as 64-bit values,
///   or removed. `stdout-path` (dom0 owns the console UART), `kaslr-seed`
///   and `rng-seed` are kept.
/// - **`/hypervisor`**: `compatible = "rusthv,hypervisor"` (replacing any
///   existing `/hypervisor` node's properties), so dom0 knows it is a guest.
///
/// Everything else passes through unchanged. Then:
///
/// - `passthrough_mmio` holds the translated `reg` windows of every kept
///   node that is enabled (with all its ancestors), is not under `/cpus`,
///   not memory, not under `/reserved-memory`, not the GIC, and whose parent
///   is the root or has `ranges` (other `reg`s are not CPU addresses; such
///   nodes, and nodes whose `reg` cannot be translated, are skipped
///   silently: fail closed). A `device_type = "pci"` host bridge also
///   contributes its `ranges` windows (BARs live there). Windows that would
///   overlap host RAM or any host GIC frame are dropped (never map those to
///   dom0). The windows are page-aligned outward, sorted and merged.
/// - `passthrough_spis` holds every SPI (INTID 32..1019) that a kept,
///   enabled node sends to the GIC: through `interrupts` when its interrupt
///   parent (own `interrupt-parent`, else the devicetree parent, repeated
///   until a node with `#interrupt-cells`, as the spec and Linux do) is the
///   GIC; through `interrupts-extended` entries naming the GIC; and through
///   `interrupt-map` entries whose parent is the GIC (PCI INTx). Nodes
///   routed to another interrupt controller pass through without SPI
///   routing. PPIs and SGIs are never routed; malformed specifiers are skipped.
///
/// The blob is a v17 FDT at most [`DOM0_FDT_MAX`] bytes (an error, not a
/// truncation, beyond that) whose size is a multiple of 8.
pub fn derive_dom0_tree(host: &[u8], cfg: &Dom0Config) -> Result<Dom0Tree, PlatformError> {
    let checked = blob::check(host)?;
    let fdt = checked.fdt()?;
    let tree = Tree::new(&fdt);
    let mut out = copy_host_nodes(&tree);
    let gic = find_gic(&tree)?;

    let memory_nodes = replace_memory(&tree, cfg.memory, &mut out)?;
    let memreserve = memreserve_inside(&checked.memreserve, cfg.memory);
    let reserved_memory = keep_reserved_memory_inside(&tree, cfg.memory, &mut out);
    let (cpus, boot_cpuid) = keep_dom0_cpus(&tree, cfg.vcpus, &mut out)?;
    psci_through_hvc(&tree, &mut out);
    emulated_gic(&tree, gic, cfg, &mut out)?;
    timer_without_el2_interrupt(&tree, &mut out);
    chosen(&tree, cfg, &mut out)?;
    hypervisor_node(&tree, &mut out);

    let alive = Alive::new(&tree, &out);
    drop_dangling_msi_references(&tree, &alive, &mut out);
    let not_passed = NotPassedThrough { cpus, gic, reserved_memory, memory_nodes: &memory_nodes };
    let passthrough_mmio = passthrough_mmio(&tree, &alive, &not_passed);
    let passthrough_spis = passthrough_spis(&tree, &alive, gic);

    let blob = write_blob(&out, &memreserve, boot_cpuid)?;
    Ok(Dom0Tree {
        blob,
        passthrough_mmio,
        passthrough_spis,
    })
}

/// The starting point: every host node and property, in order, all kept.
fn copy_host_nodes(tree: &Tree<'_>) -> Vec<Out> {
    tree.nodes
        .iter()
        .map(|n| Out {
            name: node_name(&n.path).into(),
            parent: n.parent,
            props: n
                .props
                .iter()
                .map(|p| (p.name.into(), p.value.to_vec()))
                .collect(),
            keep: true,
        })
        .collect()
}

/// Whether all of `r` lies inside one of dom0's memory regions.
fn inside_memory(memory: &[MemRegion], r: &MemRegion) -> bool {
    r.end().is_some_and(|end| {
        memory
            .iter()
            .any(|m| r.base >= m.base && m.end().is_some_and(|me| end <= me))
    })
}

/// `memory` as a `reg` value in `#address-cells` = `ac`, `#size-cells` = `sc`.
fn memory_reg(memory: &[MemRegion], ac: usize, sc: usize) -> Result<Vec<u8>, PlatformError> {
    let mut value = Vec::new();
    for r in memory {
        r.end()
            .ok_or(PlatformError::new(ErrorKind::Overflow).at("/memory"))?;
        value.extend(encode(r.base.as_u64(), ac).ok_or(bad(
            "dom0 memory base does not fit the root's #address-cells",
        ))?);
        value.extend(
            encode(r.size, sc)
                .ok_or(bad("dom0 memory size does not fit the root's #size-cells"))?,
        );
    }
    Ok(value)
}

/// Removes the host's memory nodes and puts one for dom0's memory in the
/// first one's place (or at the end of the root). Returns the host's
/// memory nodes.
fn replace_memory(tree: &Tree<'_>, memory: &[MemRegion], out: &mut Vec<Out>) -> Result<Vec<usize>, PlatformError> {
    let first_mem = memory.first().ok_or(bad("dom0 has no memory").at("/memory"))?;
    let (root_ac, root_sc) = tree.cells(0);
    let mem_reg = memory_reg(memory, root_ac, root_sc)?;
    let memory_nodes: Vec<usize> = (0..tree.nodes.len())
        .filter(|&i| tree.strings(i, "device_type").next() == Some("memory"))
        .collect();
    memory_nodes.iter().for_each(|&i| out[i].keep = false);
    let node = Out {
        name: format!("memory@{:x}", first_mem.base.as_u64()),
        parent: Some(0),
        props: alloc::vec![
            ("device_type".into(), string_list(&["memory"])),
            ("reg".into(), mem_reg)
        ],
        keep: true,
    };
    match memory_nodes
        .iter()
        .find(|&&i| tree.node(i).and_then(|n| n.parent) == Some(0))
    {
        Some(&slot) => out[slot] = node,
        None => out.push(node),
    }
    Ok(memory_nodes)
}

/// The `/memreserve/` entries that lie inside dom0's memory.
fn memreserve_inside(memreserve: &[(u64, u64)], memory: &[MemRegion]) -> Vec<(u64, u64)> {
    memreserve
        .iter()
        .copied()
        .filter(|&(a, s)| MemRegion::checked(PhysAddr::new(a), s).is_some_and(|r| inside_memory(memory, &r)))
        .collect()
}

/// Keeps the `/reserved-memory` children whose every `reg` entry lies inside
/// dom0's memory (and the node itself only if one is left). Returns the node.
fn keep_reserved_memory_inside(tree: &Tree<'_>, memory: &[MemRegion], out: &mut [Out]) -> Option<usize> {
    let rm = tree.find("/reserved-memory")?;
    let mut any = false;
    for child in tree.children(rm) {
        let keep = tree.prop(child, "reg").is_some()
            && reg(tree, child).is_ok_and(|regs| regs.iter().all(|r| inside_memory(memory, r)));
        out[child].keep = keep;
        any |= keep;
    }
    out[rm].keep = any;
    Some(rm)
}

/// Keeps the first `vcpus` enabled CPUs, started through PSCI; drops the
/// rest, `/cpus`' own `enable-method` and `cpu-map`. Returns `/cpus` and the
/// first kept CPU's `reg` (the header's `boot_cpuid_phys`).
fn keep_dom0_cpus(tree: &Tree<'_>, vcpus: usize, out: &mut [Out]) -> Result<(usize, u32), PlatformError> {
    let cpus = tree
        .find("/cpus")
        .ok_or(PlatformError::new(ErrorKind::Missing).at("/cpus"))?;
    let cpu_nodes: Vec<usize> = tree
        .children(cpus)
        .filter(|&c| tree.strings(c, "device_type").next() == Some("cpu"))
        .collect();
    let enabled: Vec<usize> = cpu_nodes
        .iter()
        .copied()
        .filter(|&c| tree.enabled(c))
        .collect();
    if vcpus == 0 {
        return Err(bad("dom0 needs at least one vCPU").at("/cpus"));
    }
    if vcpus > enabled.len() {
        return Err(bad("dom0 has more vCPUs than the host has enabled CPUs").at("/cpus"));
    }
    let kept_cpus = &enabled[..vcpus];
    for &c in &cpu_nodes {
        if kept_cpus.contains(&c) {
            out[c].set("enable-method", string_list(&["psci"]));
            out[c].remove("cpu-release-addr");
        } else {
            out[c].keep = false;
        }
    }
    out[cpus].remove("enable-method");
    for c in tree.children(cpus) {
        if node_name(tree.path(c)) == "cpu-map" {
            out[c].keep = false;
        }
    }
    let (cpu_ac, _) = tree.cells(cpus);
    let boot_cpuid = tree
        .prop(kept_cpus[0], "reg")
        .and_then(|v| v.get(cpu_ac.saturating_sub(1) * 4..cpu_ac * 4))
        .and_then(|v| be32(v, 0))
        .unwrap_or(0);
    Ok((cpus, boot_cpuid))
}

/// One PSCI node, calling the hypervisor through HVC (the first host PSCI
/// node keeps its phandle; the others go).
fn psci_through_hvc(tree: &Tree<'_>, out: &mut Vec<Out>) {
    let psci_compat = ["arm,psci", "arm,psci-0.2", "arm,psci-1.0"];
    let psci_nodes: Vec<usize> = (0..tree.nodes.len())
        .filter(|&i| tree.compatible(i, &psci_compat))
        .collect();
    let mut psci_props = alloc::vec![
        (
            "compatible".into(),
            string_list(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        ),
        ("method".into(), string_list(&["hvc"])),
    ];
    match psci_nodes.split_first() {
        Some((&first, rest)) => {
            for p in ["phandle", "linux,phandle"] {
                if let Some(v) = tree.prop(first, p) {
                    psci_props.push((p.into(), v.to_vec()));
                }
            }
            out[first].props = psci_props;
            rest.iter().for_each(|&i| out[i].keep = false);
        }
        None => out.push(Out {
            name: "psci".into(),
            parent: Some(0),
            props: psci_props,
            keep: true,
        }),
    }
}

/// The GIC node describes the emulated GIC of `cfg.gic`: its `reg`, no
/// maintenance interrupt, no children (v2m frames, ITSes).
fn emulated_gic(tree: &Tree<'_>, gic: usize, cfg: &Dom0Config, out: &mut [Out]) -> Result<(), PlatformError> {
    let gic_v3 = tree.compatible(gic, &["arm,gic-v3"]);
    let gic_path = tree.path(gic);
    let gic_bus = tree.node(gic).and_then(|n| n.parent).unwrap_or(0);
    let (gic_regions, v3) = match cfg.gic {
        GicView::V2 { gicd, gicc } => ([gicd, gicc], false),
        GicView::V3 { gicd, gicr } => ([gicd, gicr], true),
    };
    if v3 != gic_v3 {
        return Err(bad("GicView version differs from the host GIC").at(gic_path));
    }
    if let GicView::V3 { gicr, .. } = cfg.gic {
        let need = (cfg.vcpus as u64).checked_mul(GICR_FRAME_PAIR);
        if need.is_none_or(|n| gicr.size < n) {
            return Err(bad("gicr smaller than one 128 KiB frame pair per vCPU").at(gic_path));
        }
    }
    let mut gic_reg = Vec::new();
    let (bus_ac, bus_sc) = tree.cells(gic_bus);
    for r in gic_regions {
        let addr = untranslate(tree, gic_bus, r).map_err(|e| e.at(gic_path).prop("reg"))?;
        let too_big = || bad("does not fit the bus's cells").at(gic_path).prop("reg");
        gic_reg.extend(encode(addr, bus_ac).ok_or_else(too_big)?);
        gic_reg.extend(encode(r.size, bus_sc).ok_or_else(too_big)?);
    }
    let g = &mut out[gic];
    g.set("reg", gic_reg);
    g.remove("interrupts");
    g.remove("redistributor-stride");
    if v3 {
        g.set("#redistributor-regions", cells_bytes(&[1]));
    } else {
        g.remove("#redistributor-regions");
    }
    for c in tree.children(gic) {
        out[c].keep = false;
    }
    Ok(())
}

/// The architected timer keeps its first three interrupts; the fourth (EL2
/// physical timer) is the hypervisor's.
fn timer_without_el2_interrupt(tree: &Tree<'_>, out: &mut [Out]) {
    for (i, node) in out.iter_mut().enumerate().take(tree.nodes.len()) {
        if tree.compatible(i, &["arm,armv8-timer"]) {
            if let Some((_, v)) = node.props.iter_mut().find(|(k, _)| k == "interrupts") {
                v.truncate(36);
            }
        }
    }
}

/// `/chosen` (created if absent) with dom0's bootargs and initrd.
fn chosen(tree: &Tree<'_>, cfg: &Dom0Config, out: &mut Vec<Out>) -> Result<(), PlatformError> {
    let chosen = match tree.find("/chosen") {
        Some(c) => c,
        None => {
            out.push(Out {
                name: "chosen".into(),
                parent: Some(0),
                props: Vec::new(),
                keep: true,
            });
            out.len() - 1
        }
    };
    out[chosen].set("bootargs", string_list(&[cfg.bootargs]));
    match cfg.initrd {
        Some(r) => {
            let end = r
                .end()
                .ok_or(PlatformError::new(ErrorKind::Overflow).at("/chosen"))?;
            out[chosen].set("linux,initrd-start", r.base.as_u64().to_be_bytes().to_vec());
            out[chosen].set("linux,initrd-end", end.as_u64().to_be_bytes().to_vec());
        }
        None => {
            out[chosen].remove("linux,initrd-start");
            out[chosen].remove("linux,initrd-end");
        }
    }
    Ok(())
}

/// `/hypervisor`, so dom0 knows it is a guest.
fn hypervisor_node(tree: &Tree<'_>, out: &mut Vec<Out>) {
    let hv_props = alloc::vec![("compatible".into(), string_list(&["rusthv,hypervisor"]))];
    match tree.find("/hypervisor") {
        Some(h) => out[h].props = hv_props,
        None => out.push(Out {
            name: "hypervisor".into(),
            parent: Some(0),
            props: hv_props,
            keep: true,
        }),
    }
}

/// Which host nodes survive: kept, with every ancestor kept.
struct Alive(Vec<bool>);

impl Alive {
    fn new(tree: &Tree<'_>, out: &[Out]) -> Self {
        Alive(
            (0..tree.nodes.len())
                .map(|i| chain(tree, i).all(|a| out[a].keep))
                .collect(),
        )
    }

    fn get(&self, i: usize) -> bool {
        self.0.get(i).copied().unwrap_or(false)
    }

    /// Alive and enabled, with every ancestor enabled.
    fn usable(&self, tree: &Tree<'_>, i: usize) -> bool {
        self.get(i) && chain(tree, i).all(|a| tree.enabled(a))
    }
}

/// Node `i` is `top` or below it.
fn under(tree: &Tree<'_>, i: usize, top: Option<usize>) -> bool {
    top.is_some_and(|t| chain(tree, i).any(|a| a == t))
}

/// Removes `msi-parent` / `msi-map` (+ `msi-map-mask`) that reference a
/// removed or unknown node.
fn drop_dangling_msi_references(tree: &Tree<'_>, alive: &Alive, out: &mut [Out]) {
    for i in (0..tree.nodes.len()).filter(|&i| alive.get(i)) {
        let dangling = |targets: Option<Vec<Option<usize>>>| {
            targets.is_none_or(|t| t.iter().any(|&n| n.is_none_or(|n| !alive.get(n))))
        };
        if tree
            .prop(i, "msi-parent")
            .is_some_and(|v| dangling(msi_parent_targets(tree, v)))
        {
            out[i].remove("msi-parent");
        }
        if tree
            .prop(i, "msi-map")
            .is_some_and(|v| dangling(msi_map_targets(tree, v)))
        {
            out[i].remove("msi-map");
            out[i].remove("msi-map-mask");
        }
    }
}

/// The host nodes whose windows are never dom0's devices.
struct NotPassedThrough<'a> {
    cpus: usize,
    gic: usize,
    reserved_memory: Option<usize>,
    memory_nodes: &'a [usize],
}

/// Whether two regions share a byte (ends saturate).
fn overlaps(a: &MemRegion, b: &MemRegion) -> bool {
    let (ae, be) = (
        a.base.as_u64().saturating_add(a.size),
        b.base.as_u64().saturating_add(b.size),
    );
    a.base.as_u64() < be && b.base.as_u64() < ae
}

/// The MMIO windows of the devices dom0 keeps (see [`derive_dom0_tree`]),
/// without anything over host RAM or a host GIC frame, page-aligned outward,
/// sorted and merged.
fn passthrough_mmio(tree: &Tree<'_>, alive: &Alive, not: &NotPassedThrough) -> Vec<MemRegion> {
    let mut host_forbidden: Vec<MemRegion> = Vec::new();
    for &m in not.memory_nodes {
        host_forbidden.extend(reg(tree, m).unwrap_or_default());
    }
    host_forbidden.extend(reg(tree, not.gic).unwrap_or_default());
    for c in tree.children(not.gic) {
        host_forbidden.extend(reg(tree, c).unwrap_or_default());
    }
    let mut mmio = Vec::new();
    for i in 1..tree.nodes.len() {
        let parent = tree.node(i).and_then(|n| n.parent).unwrap_or(0);
        if !alive.usable(tree, i)
            || under(tree, i, Some(not.cpus))
            || under(tree, i, Some(not.gic))
            || under(tree, i, not.reserved_memory)
            || not.memory_nodes.contains(&i)
            || (parent != 0 && tree.prop(parent, "ranges").is_none())
        {
            continue;
        }
        if tree.prop(i, "reg").is_some() {
            mmio.extend(reg(tree, i).unwrap_or_default());
        }
        if tree.strings(i, "device_type").next() == Some("pci") {
            mmio.extend(bridge_windows(tree, i));
        }
    }
    mmio.retain(|r| r.size > 0 && !host_forbidden.iter().any(|f| overlaps(r, f)));
    page_merge(mmio)
}

/// The SPIs the devices dom0 keeps send to the GIC, sorted, deduplicated.
fn passthrough_spis(tree: &Tree<'_>, alive: &Alive, gic: usize) -> Vec<u32> {
    let mut spis = Vec::new();
    for i in (0..tree.nodes.len()).filter(|&i| alive.usable(tree, i) && i != gic && !under(tree, i, Some(gic))) {
        spis.extend(gic_spis(tree, i, gic));
    }
    crate::sort::small(&mut spis);
    spis.dedup();
    spis
}

/// The derived blob: kept nodes in order, at most [`DOM0_FDT_MAX`] bytes.
fn write_blob(out: &[Out], memreserve: &[(u64, u64)], boot_cpuid: u32) -> Result<Vec<u8>, PlatformError> {
    let mut kids: Vec<Vec<usize>> = (0..out.len()).map(|_| Vec::new()).collect();
    for (i, n) in out.iter().enumerate() {
        if let Some(p) = n.parent {
            kids[p].push(i);
        }
    }
    let mut w = FdtWriter::new();
    memreserve.iter().for_each(|&(a, s)| w.reserve(a, s));
    w.boot_cpuid_phys(boot_cpuid);
    emit(out, &kids, 0, &mut w).map_err(write_err)?;
    w.finish_limited(DOM0_FDT_MAX).map_err(write_err)
}

fn write_err(e: WriteError) -> PlatformError {
    match e {
        WriteError::TooLarge => bad("derived device tree exceeds 1 MiB"),
        _ => bad("derived device tree could not be written"),
    }
}

fn emit(out: &[Out], kids: &[Vec<usize>], i: usize, w: &mut FdtWriter) -> Result<(), WriteError> {
    let n = &out[i];
    if !n.keep {
        return Ok(());
    }
    w.begin_node(&n.name)?;
    for (k, v) in &n.props {
        w.property(k, v)?;
    }
    for &k in &kids[i] {
        emit(out, kids, k, w)?;
    }
    w.end_node()
}

/// Node `i` and its ancestors up to the root.
fn chain<'t>(tree: &'t Tree<'_>, i: usize) -> impl Iterator<Item = usize> + 't {
    core::iter::successors(Some(i), move |&n| tree.node(n).and_then(|n| n.parent))
}

/// `value` as `n` big-endian cells, or `None` if it does not fit.
fn encode(value: u64, n: usize) -> Option<Vec<u8>> {
    if n < 2 && (n == 0 && value != 0 || value > u64::from(u32::MAX)) {
        return None;
    }
    let mut v = alloc::vec![0u8; n.checked_mul(4)?];
    let bytes = value.to_be_bytes();
    let take = bytes.len().min(v.len());
    let vl = v.len();
    v[vl - take..].copy_from_slice(&bytes[bytes.len() - take..]);
    Some(v)
}

/// The address on the bus of node `bus`'s children at which CPU physical region `r` appears.
fn untranslate(tree: &Tree<'_>, bus: usize, r: MemRegion) -> Result<u64, PlatformError> {
    let buses: Vec<usize> = chain(tree, bus).filter(|&b| b != 0).collect();
    let mut addr = r.base.as_u64();
    for &b in buses.iter().rev() {
        let path = tree.path(b);
        let ranges = tree.prop(b, "ranges").ok_or_else(|| {
            PlatformError::new(ErrorKind::Untranslatable(format!(
                "bus {path} has no \"ranges\""
            )))
        })?;
        if ranges.is_empty() {
            continue;
        }
        let parent = tree.node(b).and_then(|n| n.parent).unwrap_or(0);
        let (child_ac, child_sc) = tree.cells(b);
        let (parent_ac, _) = tree.cells(parent);
        let mut it = entries(ranges, [child_ac, parent_ac, child_sc])
            .map_err(|k| tree.prop_err(b, "ranges", k))?;
        let hit = it.find_map(|[child, parent_base, len]| {
            let off = addr.checked_sub(parent_base)?;
            (off < len && r.size <= len - off).then(|| child.checked_add(off))
        });
        addr = match hit {
            Some(Some(a)) => a,
            Some(None) => return Err(ErrorKind::Overflow.into()),
            None => {
                let why = format!(
                    "{addr:#x} (size {:#x}) is outside the \"ranges\" of {path}",
                    r.size
                );
                return Err(ErrorKind::Untranslatable(why).into());
            }
        };
    }
    Ok(addr)
}

/// A one-cell property of node `i`, if present and well-formed.
fn cell(tree: &Tree<'_>, i: usize, name: &str) -> Option<usize> {
    tree.prop(i, name)
        .filter(|v| v.len() == 4)
        .and_then(|v| be32(v, 0))
        .map(|c| c as usize)
}

/// The targets of an `msi-parent` list (`<phandle [#msi-cells args]>...`); `None` if malformed.
fn msi_parent_targets(tree: &Tree<'_>, v: &[u8]) -> Option<Vec<Option<usize>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < v.len() {
        let target = tree.by_phandle(be32(v, at)?);
        out.push(target);
        let args = target
            .and_then(|t| cell(tree, t, "#msi-cells"))
            .unwrap_or(0);
        at = at.checked_add(4usize.checked_mul(args.checked_add(1)?)?)?;
    }
    Some(out)
}

/// The targets of an `msi-map` (`<rid-base phandle msi-specifier length>...`); `None` if malformed.
fn msi_map_targets(tree: &Tree<'_>, v: &[u8]) -> Option<Vec<Option<usize>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < v.len() {
        let target = tree.by_phandle(be32(v, at.checked_add(4)?)?);
        out.push(target);
        let args = target
            .and_then(|t| cell(tree, t, "#msi-cells"))
            .unwrap_or(1);
        at = at.checked_add(4usize.checked_mul(args.checked_add(3)?)?)?;
    }
    Some(out)
}

/// The interrupt parent of node `i` as the spec and Linux define it: its
/// `interrupt-parent`, else its devicetree parent, repeated until a node
/// with `#interrupt-cells`.
fn interrupt_parent(tree: &Tree<'_>, i: usize) -> Option<usize> {
    let mut at = i;
    for _ in 0..tree.nodes.len() {
        let next = match tree.prop(at, "interrupt-parent") {
            Some(v) => tree.by_phandle(be32(v, 0)?)?,
            None => tree.node(at)?.parent?,
        };
        if tree.prop(next, "#interrupt-cells").is_some() {
            return Some(next);
        }
        at = next;
    }
    None
}

/// The SPI INTIDs in a list of 3-cell GIC specifiers (PPIs and malformed entries skipped).
fn spis_of(specs: &[u8]) -> impl Iterator<Item = u32> + '_ {
    specs
        .chunks_exact(12)
        .filter_map(|s| match (be32(s, 0), be32(s, 4)) {
            (Some(0), Some(n)) if n < 988 => Some(n + 32),
            _ => None,
        })
}

/// Every SPI node `i` sends to the GIC `gic`.
fn gic_spis(tree: &Tree<'_>, i: usize, gic: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let gic_cells = cell(tree, gic, "#interrupt-cells").unwrap_or(3);
    if let Some(v) = tree.prop(i, "interrupts-extended") {
        let mut at = 0;
        while let Some(target) = be32(v, at).and_then(|p| tree.by_phandle(p)) {
            let Some(n) = cell(tree, target, "#interrupt-cells") else {
                break;
            };
            let (start, end) = (at + 4, at + 4 + n * 4);
            let Some(spec) = v.get(start..end) else { break };
            if target == gic && n == 3 {
                out.extend(spis_of(spec));
            }
            at = end;
        }
    } else if let Some(v) = tree.prop(i, "interrupts") {
        if interrupt_parent(tree, i) == Some(gic) && gic_cells == 3 {
            out.extend(spis_of(v));
        }
    }
    if let Some(map) = tree.prop(i, "interrupt-map") {
        let child_ac = cell(tree, i, "#address-cells").unwrap_or(2);
        let child_ic = cell(tree, i, "#interrupt-cells").unwrap_or(1);
        let mut at = (child_ac + child_ic) * 4;
        while let Some(target) = be32(map, at).and_then(|p| tree.by_phandle(p)) {
            let parent_ac = cell(tree, target, "#address-cells").unwrap_or(0);
            let Some(parent_ic) = cell(tree, target, "#interrupt-cells") else {
                break;
            };
            let spec_at = at + 4 + parent_ac * 4;
            let Some(spec) = map.get(spec_at..spec_at + parent_ic * 4) else {
                break;
            };
            if target == gic && parent_ic == 3 {
                out.extend(spis_of(spec));
            }
            at = spec_at + parent_ic * 4 + (child_ac + child_ic) * 4;
        }
    }
    out
}

/// The CPU physical windows of a PCI host bridge's `ranges` (3-cell PCI child addresses).
fn bridge_windows(tree: &Tree<'_>, i: usize) -> Vec<MemRegion> {
    let mut out = Vec::new();
    let Some(parent) = tree.node(i).and_then(|n| n.parent) else {
        return out;
    };
    let Some(ranges) = tree.prop(i, "ranges") else {
        return out;
    };
    let (child_ac, child_sc) = tree.cells(i);
    let (parent_ac, _) = tree.cells(parent);
    if parent_ac > 2 || child_sc > 2 {
        return out;
    }
    let entry = (child_ac + parent_ac + child_sc) * 4;
    if entry == 0 {
        return out;
    }
    for e in ranges.chunks_exact(entry) {
        let p = &e[child_ac * 4..];
        let (Some(addr), Some(size)) = (cells(&p[..parent_ac * 4]), cells(&p[parent_ac * 4..]))
        else {
            continue;
        };
        if let Ok(base) = translate(tree, parent, addr, size) {
            out.extend(MemRegion::checked(base, size));
        }
    }
    out
}

/// `regions` page-aligned outward, sorted, with overlapping or adjacent ones merged.
fn page_merge(regions: Vec<MemRegion>) -> Vec<MemRegion> {
    let mut spans: Vec<(u64, u64)> = regions
        .iter()
        .filter_map(|r| {
            let start = r.base.align_down(PAGE_SIZE).as_u64();
            let end = r.end()?.align_up(PAGE_SIZE)?.as_u64();
            Some((start, end))
        })
        .collect();
    crate::sort::small(&mut spans);
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
        .into_iter()
        .map(|(s, e)| MemRegion {
            base: PhysAddr::new(s),
            size: e - s,
        })
        .collect()
}

#[cfg(test)]
mod tests;
