//! Builds each part of a [`Platform`] from the node list.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::blob::be32;
use super::error::{ErrorKind, PlatformError};
use super::translate::{entries, reg};
use super::tree::Tree;
use super::*;

const GIC_V2: &[&str] = &["arm,gic-400", "arm,cortex-a15-gic", "arm,gic-v2", "arm,cortex-a7-gic"];
const GIC_V3: &[&str] = &["arm,gic-v3"];
const PSCI_0_2: &[&str] = &["arm,psci-0.2", "arm,psci-1.0"];
/// PSCI 0.2+ standard `CPU_ON` (SMC64 calling convention).
const PSCI_CPU_ON_64: u32 = 0xC400_0003;

/// The whole platform.
pub(super) fn platform(
    tree: &Tree<'_>,
    memreserve: &[(u64, u64)],
) -> Result<Platform, PlatformError> {
    let chosen = tree.find("/chosen");
    let model = match tree.string(0, "model")? {
        Some(m) => m,
        None => tree.strings(0, "compatible").next().unwrap_or("unknown"),
    };
    let memory = memory(tree)?;
    let reserved = reserved(tree, memreserve)?;
    let gic_node = find_gic(tree)?;
    let gic = gic(tree, gic_node)?;
    let console = console(tree, chosen, Some(gic_node))?;
    let timer = timer(tree, gic_node)?;
    let cpus = cpus(tree)?;
    let psci = psci(tree)?;
    if psci.is_none() {
        if let Some(cpu) = cpus.iter().find(|c| c.enable_method == Some(EnableMethod::Psci)) {
            let why = ErrorKind::Unsupported("psci (there is no PSCI node)".into());
            return Err(PlatformError::new(why).at(&cpu.path).prop("enable-method"));
        }
    }
    let bootargs = match chosen {
        Some(c) => tree.string(c, "bootargs")?.unwrap_or(""),
        None => "",
    };
    Ok(Platform {
        model: model.into(),
        memory,
        reserved,
        console,
        gic,
        timer,
        cpus,
        psci,
        bootargs: bootargs.into(),
        initrd: chosen.map(|c| initrd(tree, c)).transpose()?.flatten(),
    })
}

/// The non-empty `reg` entries of node `i`, appended to `out`.
fn nonempty_reg(tree: &Tree<'_>, i: usize, out: &mut Vec<MemRegion>) -> Result<(), PlatformError> {
    out.extend(reg(tree, i)?.into_iter().filter(|r| r.size > 0));
    Ok(())
}

fn memory(tree: &Tree<'_>) -> Result<Vec<MemRegion>, PlatformError> {
    let mut out = Vec::new();
    for i in 0..tree.nodes.len() {
        if tree.strings(i, "device_type").next() == Some("memory") && tree.enabled(i) {
            nonempty_reg(tree, i, &mut out)?;
        }
    }
    if out.is_empty() {
        return Err(ErrorKind::NoMemory.into());
    }
    crate::sort::small(&mut out);
    Ok(out)
}

fn reserved(tree: &Tree<'_>, memreserve: &[(u64, u64)]) -> Result<Vec<MemRegion>, PlatformError> {
    let mut out = Vec::new();
    for &(base, size) in memreserve {
        let region = MemRegion::checked(PhysAddr::new(base), size);
        out.push(region.ok_or(PlatformError::new(ErrorKind::Overflow).at("/memreserve/"))?);
    }
    if let Some(rm) = tree.find("/reserved-memory") {
        for child in tree.children(rm) {
            if tree.enabled(child) && tree.prop(child, "reg").is_some() {
                nonempty_reg(tree, child, &mut out)?;
            }
        }
    }
    crate::sort::small(&mut out);
    Ok(out)
}

/// Decodes 3-cell GIC interrupt specifiers.
pub(crate) fn decode_irqs(value: &[u8]) -> Result<Vec<Irq>, ErrorKind> {
    if value.is_empty() || !value.len().is_multiple_of(12) {
        return Err(ErrorKind::BadLength { len: value.len(), entry: 12 });
    }
    let decode = |spec: &[u8]| {
        let (kind, num, flags) = (be32(spec, 0), be32(spec, 4), be32(spec, 8));
        let intid = match (kind, num) {
            (Some(0), Some(n)) if n < 988 => n + 32,
            (Some(1), Some(n)) if n < 16 => n + 16,
            (Some(0 | 1), _) => return Err(ErrorKind::BadValue("interrupt number out of range")),
            _ => return Err(ErrorKind::BadValue("interrupt type is neither SPI (0) nor PPI (1)")),
        };
        Ok(Irq { intid, level_triggered: matches!(flags.unwrap_or(0) & 0xf, 4 | 8) })
    };
    value.chunks_exact(12).map(decode).collect()
}

/// The `interrupts` of node `i`, if it has them and they go to the GIC node `gic`.
fn irqs(tree: &Tree<'_>, i: usize, gic: usize) -> Result<Option<Vec<Irq>>, PlatformError> {
    match tree.prop(i, "interrupts") {
        Some(v) if tree.interrupt_parent(i) == Some(gic) => {
            decode_irqs(v).map(Some).map_err(|k| tree.prop_err(i, "interrupts", k))
        }
        _ => Ok(None),
    }
}

/// The interrupt controller: the root's `interrupt-parent` if it is a known
/// GIC, else the first enabled known GIC.
pub(crate) fn find_gic(tree: &Tree<'_>) -> Result<usize, PlatformError> {
    let is_intc = |i: usize| tree.enabled(i) && tree.prop(i, "interrupt-controller").is_some();
    let known =
        |i: &usize| is_intc(*i) && (tree.compatible(*i, GIC_V2) || tree.compatible(*i, GIC_V3));
    let root_parent =
        tree.prop(0, "interrupt-parent").and_then(|v| be32(v, 0)).and_then(|p| tree.by_phandle(p));
    if let Some(gic) = root_parent.filter(known).or_else(|| (0..tree.nodes.len()).find(known)) {
        return Ok(gic);
    }
    match root_parent
        .filter(|&i| is_intc(i))
        .or_else(|| (0..tree.nodes.len()).find(|&i| is_intc(i)))
    {
        Some(i) => {
            let compatible = tree.strings(i, "compatible").next().unwrap_or("");
            Err(tree.prop_err(i, "compatible", ErrorKind::UnknownGic(compatible.into())))
        }
        None => Err(ErrorKind::NoGic.into()),
    }
}

fn gic(tree: &Tree<'_>, g: usize) -> Result<Gic, PlatformError> {
    let version = if tree.compatible(g, GIC_V3) { GicVersion::V3 } else { GicVersion::V2 };
    if tree.u32(g, "#interrupt-cells")? != Some(3) {
        return Err(tree.prop_err(g, "#interrupt-cells", ErrorKind::BadValue("must be 3")));
    }
    let regs = reg(tree, g)?;
    let too_few = |why| tree.prop_err(g, "reg", ErrorKind::BadValue(why));
    let gicd = *regs.first().ok_or(too_few("no entries"))?;
    let (gicr, rest) = match version {
        GicVersion::V2 => (Vec::new(), regs.get(1..).unwrap_or_default()),
        GicVersion::V3 => {
            let n = tree.u32(g, "#redistributor-regions")?.unwrap_or(1) as usize;
            if n == 0 {
                let e = ErrorKind::BadValue("must be at least 1");
                return Err(tree.prop_err(g, "#redistributor-regions", e));
            }
            let gicr = regs.get(1..).and_then(|r| r.get(..n));
            let gicr = gicr.ok_or(too_few("fewer entries than 1 + #redistributor-regions"))?;
            (gicr.to_vec(), regs.get(n.saturating_add(1)..).unwrap_or_default())
        }
    };
    let gicc = rest.first().copied();
    if version == GicVersion::V2 && gicc.is_none() {
        return Err(too_few("GICv2 needs GICD and GICC entries"));
    }
    let maintenance = tree.prop(g, "interrupts").map(decode_irqs).transpose();
    let maintenance = maintenance.map_err(|k| tree.prop_err(g, "interrupts", k))?;
    Ok(Gic {
        version,
        path: tree.path(g).into(),
        gicd,
        gicc,
        gich: rest.get(1).copied(),
        gicv: rest.get(2).copied(),
        gicr,
        maintenance_irq: maintenance.and_then(|v| v.first().copied()),
    })
}

/// The node named by `/chosen/stdout-path` (or `linux,stdout-path`), if either is present.
fn stdout_node(tree: &Tree<'_>, chosen: usize) -> Result<Option<usize>, PlatformError> {
    for prop in ["stdout-path", "linux,stdout-path"] {
        let Some(spec) = tree.string(chosen, prop)? else { continue };
        let no_uart = |why: String| tree.prop_err(chosen, prop, ErrorKind::NoUart(why));
        let name = spec.split(':').next().unwrap_or_default();
        let path = if name.starts_with('/') {
            name
        } else {
            let aliases = tree.find("/aliases");
            let target = aliases.map(|a| tree.string_dyn(a, name)).transpose()?.flatten();
            target.ok_or_else(|| no_uart(format!("alias {name} not in /aliases")))?
        };
        let node = tree.find(path).ok_or_else(|| no_uart(format!("{path} not found")))?;
        if !tree.enabled(node) {
            return Err(no_uart(format!("{path} is disabled")));
        }
        return Ok(Some(node));
    }
    Ok(None)
}

pub(super) fn console(tree: &Tree<'_>, chosen: Option<usize>, gic: Option<usize>) -> Result<Uart, PlatformError> {
    let named = chosen.map(|c| stdout_node(tree, c)).transpose()?.flatten();
    let fallback =
        || (0..tree.nodes.len()).find(|&i| tree.enabled(i) && tree.compatible(i, &["arm,pl011"]));
    let why = "no stdout-path and no enabled arm,pl011 node";
    let node = named.or_else(fallback).ok_or(PlatformError::new(ErrorKind::NoUart(why.into())))?;
    let kind = if tree.compatible(node, &["arm,pl011"]) {
        UartKind::Pl011
    } else if tree.compatible(node, &["brcm,bcm2835-aux-uart"]) {
        UartKind::Bcm2835Aux
    } else {
        let compatible = tree.strings(node, "compatible").next().unwrap_or("").to_string();
        return Err(tree.prop_err(node, "compatible", ErrorKind::UnknownUart(compatible)));
    };
    let regs = reg(tree, node)?;
    let window = regs.first().ok_or(tree.prop_err(node, "reg", ErrorKind::Missing))?;
    Ok(Uart {
        kind,
        base: window.base,
        size: window.size,
        path: tree.path(node).into(),
        irq: match gic {
            Some(gic) => irqs(tree, node, gic)?.and_then(|v| v.first().copied()),
            None => None,
        },
    })
}

fn timer(tree: &Tree<'_>, gic: usize) -> Result<Timer, PlatformError> {
    let node = (0..tree.nodes.len())
        .find(|&i| tree.enabled(i) && tree.compatible(i, &["arm,armv8-timer"]));
    let t = node.ok_or(PlatformError::new(ErrorKind::NoTimer))?;
    let bad = |why| tree.prop_err(t, "interrupts", ErrorKind::BadValue(why));
    let irqs = irqs(tree, t, gic)?.ok_or(bad("absent or not routed to the GIC"))?;
    match irqs.as_slice() {
        [secure_phys, nonsecure_phys, virt, rest @ ..] => Ok(Timer {
            secure_phys: *secure_phys,
            nonsecure_phys: *nonsecure_phys,
            virt: *virt,
            hyp_phys: rest.first().copied(),
        }),
        _ => Err(bad("fewer than 3 interrupts")),
    }
}

fn cpus(tree: &Tree<'_>) -> Result<Vec<Cpu>, PlatformError> {
    let parent = tree.find("/cpus").ok_or(PlatformError::new(ErrorKind::Missing).at("/cpus"))?;
    let (ac, sc) = tree.cells(parent);
    let mut out: Vec<Cpu> = Vec::new();
    for c in tree.children(parent) {
        if tree.strings(c, "device_type").next() != Some("cpu") || !tree.enabled(c) {
            continue;
        }
        let err = |prop, kind| tree.prop_err(c, prop, kind);
        if !(1..=2).contains(&ac) {
            return Err(err("reg", ErrorKind::BadValue("/cpus #address-cells must be 1 or 2")));
        }
        let reg = tree.prop(c, "reg").ok_or(err("reg", ErrorKind::Missing))?;
        let mut regs = entries(reg, [ac, sc]).map_err(|k| err("reg", k))?;
        let mpidr = regs.next().map_or(0, |[mpidr, _]| mpidr);
        let enable_method = match tree.strings(c, "enable-method").next() {
            None if out.is_empty() => None,
            None => return Err(err("enable-method", ErrorKind::Missing)),
            Some("psci") => Some(EnableMethod::Psci),
            Some("spin-table") => {
                let addr = tree.u32_or_u64(c, "cpu-release-addr")?;
                let addr = addr.ok_or(err("cpu-release-addr", ErrorKind::Missing))?;
                Some(EnableMethod::SpinTable { release_addr: PhysAddr::new(addr) })
            }
            Some(other) => return Err(err("enable-method", ErrorKind::Unsupported(other.into()))),
        };
        out.push(Cpu { mpidr, enable_method, path: tree.path(c).into() });
    }
    if out.is_empty() {
        return Err(ErrorKind::NoCpus.into());
    }
    Ok(out)
}

fn psci(tree: &Tree<'_>) -> Result<Option<Psci>, PlatformError> {
    let compatible = &["arm,psci", "arm,psci-0.2", "arm,psci-1.0"];
    let Some(p) =
        (0..tree.nodes.len()).find(|&i| tree.enabled(i) && tree.compatible(i, compatible))
    else {
        return Ok(None);
    };
    let conduit = match tree.string(p, "method")? {
        Some("smc") => PsciConduit::Smc,
        Some("hvc") => PsciConduit::Hvc,
        Some(other) => {
            return Err(tree.prop_err(p, "method", ErrorKind::Unsupported(other.into())))
        }
        None => return Err(tree.prop_err(p, "method", ErrorKind::Missing)),
    };
    let version_0_2_or_later = tree.compatible(p, PSCI_0_2);
    let cpu_on = match version_0_2_or_later {
        true => PSCI_CPU_ON_64,
        false => tree.u32(p, "cpu_on")?.ok_or(tree.prop_err(p, "cpu_on", ErrorKind::Missing))?,
    };
    Ok(Some(Psci { conduit, version_0_2_or_later, cpu_on, path: tree.path(p).into() }))
}

fn initrd(tree: &Tree<'_>, chosen: usize) -> Result<Option<MemRegion>, PlatformError> {
    let (start_prop, end_prop) = ("linux,initrd-start", "linux,initrd-end");
    let start = tree.u32_or_u64(chosen, start_prop)?;
    let end = tree.u32_or_u64(chosen, end_prop)?;
    match (start, end) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(tree.prop_err(chosen, start_prop, ErrorKind::Missing)),
        (Some(_), None) => Err(tree.prop_err(chosen, end_prop, ErrorKind::Missing)),
        (Some(start), Some(end)) => {
            let below = ErrorKind::BadValue("end is below linux,initrd-start");
            let size = end.checked_sub(start).ok_or(tree.prop_err(chosen, end_prop, below))?;
            Ok((size > 0).then_some(MemRegion { base: PhysAddr::new(start), size }))
        }
    }
}
