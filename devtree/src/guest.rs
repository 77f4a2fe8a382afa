//! The device tree a guest VM boots with.
//!
//! Every address, size and interrupt in it comes from
//! [`hv_abi::hypercall::guest`] — the same constants the hypervisor uses to
//! decide what it traps, emulates and maps for a guest — so what the guest is
//! told and what the hypervisor actually provides cannot drift apart. Nothing
//! here hard-codes a guest address; change the layout in `hv-abi` and both
//! sides follow.
//!
//! The layout is QEMU `virt`'s, and the tree follows what
//! `qemu-system-aarch64 -machine virt,dumpdtb=...` writes for the devices we
//! have, so kernels built for QEMU's virt run unchanged:
//!
//! * `/`: `compatible = model = "linux,dummy-virt"`, 2/2 address/size cells,
//!   `interrupt-parent` → the GIC.
//! * `/chosen`: `bootargs`, `stdout-path = "/pl011@9000000"`, and
//!   `linux,initrd-start`/`-end` (64-bit) when there is an initrd;
//!   `/aliases/serial0` → the PL011 (as QEMU; fixes the ttyAMA0 numbering).
//! * `/memory@40000000`: `[RAM_BASE, RAM_BASE + memory)`.
//! * `/cpus`: `vcpus` nodes `cpu@i`, `reg = i` (the MPIDR Aff0 the
//!   hypervisor gives vCPU i), `enable-method = "psci"`,
//!   `compatible = "arm,armv8"`: the generic binding name, true on whatever
//!   host core the vCPU really is (Linux arm64 identifies the core from
//!   MIDR_EL1, never from this string; QEMU writes the emulated core's name).
//! * `/psci`: `"arm,psci-1.0", "arm,psci-0.2"`, `method = "hvc"` (standard
//!   function IDs only, so no PSCI 0.1 `cpu_on`/... properties).
//! * `/timer`: `"arm,armv8-timer", "arm,armv7-timer"`, `always-on`, the four
//!   PPIs of `TIMER_PPIS` level-triggered; for GICv2 the flags carry the
//!   CPU mask in bits [15:8] (`0x304` for 2 vCPUs) as QEMU writes them.
//! * `/intc@8000000`: GICv2 `"arm,cortex-a15-gic"` with GICD
//!   (`GICD_SIZE`) + GICC (`GICC_SIZE`, the host GICV frame), or GICv3
//!   `"arm,gic-v3"` with GICD + one redistributor region of
//!   `vcpus * GICR_STRIDE`; `#interrupt-cells = <3>`, `#address-cells = <0>`
//!   (no children; keeps dtc quiet). No ITS / v2m (we
//!   emulate neither) and no maintenance interrupt (no nested virt).
//! * `/apb-pclk`: the 24 MHz `fixed-clock` the PL011's `clocks` point at
//!   (Linux's amba bus and amba-pl011 driver need `apb_pclk`/`uartclk`).
//! * `/pl011@9000000`: `"arm,pl011", "arm,primecell"`, SPI `UART_SPI` level.
//! * `virtio_slots` × `/virtio_mmio@a000000 + i * 0x200`: `"virtio,mmio"`,
//!   SPI `VIRTIO_SPI_BASE + i` edge-rising, `dma-coherent`, in address order.
//!
//! QEMU's other devices (flash, fw-cfg, RTC, GPIO, PCIe, platform bus, PMU)
//! are left out: the hypervisor does not provide them.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

use hv_abi::hypercall::guest::{
    GICC_BASE, GICC_SIZE, GICD_BASE, GICD_SIZE, GICR_BASE, GICR_STRIDE, RAM_BASE, TIMER_PPIS,
    TEST_DEVICE_BASE, TEST_DEVICE_SIZE, UART_BASE, UART_SIZE, UART_SPI, VIRTIO_BASE, VIRTIO_SLOTS, VIRTIO_SPI_BASE, VIRTIO_STRIDE,
};

use crate::writer::{cells_bytes, FdtWriter, WriteError};

/// Most vCPUs a guest can have (`VmCreate`'s limit, and GICv2's 8 CPU interfaces).
pub const MAX_VCPUS: usize = hv_abi::hypercall::MAX_VCPUS as usize;
/// Guest RAM must be a non-zero multiple of this (`VmCreate`'s granule).
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// Most guest RAM described (a cap that keeps RAM well below QEMU virt's
/// high MMIO regions).
pub const MAX_MEMORY: u64 = 4 << 30;
/// Longest `bootargs` accepted, in bytes (arm64 Linux's `COMMAND_LINE_SIZE`
/// is 2048 including the NUL; longer lines would be silently truncated).
pub const MAX_BOOTARGS: usize = 2047;

/// The GIC's phandle.
const GIC_PHANDLE: u32 = 1;
/// The 24 MHz APB clock's phandle.
const CLOCK_PHANDLE: u32 = 2;
const APB_CLOCK_HZ: u32 = 24_000_000;

/// GIC interrupt specifier cells.
const SPI: u32 = 0;
const PPI: u32 = 1;
const EDGE_RISING: u32 = 1;
const LEVEL_HIGH: u32 = 4;

/// Which GIC the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestGic {
    /// GICv2: emulated distributor, the host's GICV frame as the CPU interface.
    V2,
    /// GICv3: emulated distributor and redistributors.
    V3,
}

/// What varies between guests; everything else is fixed by [`hv_abi::hypercall::guest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestTreeConfig<'a> {
    /// Bytes of RAM at `RAM_BASE`: a multiple of [`MEMORY_ALIGN`], at most [`MAX_MEMORY`].
    pub memory: u64,
    /// Number of vCPUs, 1..=[`MAX_VCPUS`]; vCPU i has MPIDR Aff0 = i.
    pub vcpus: usize,
    /// The interrupt controller.
    pub gic: GuestGic,
    /// The kernel command line (no NUL, at most [`MAX_BOOTARGS`] bytes).
    pub bootargs: &'a str,
    /// `(start, end)` guest physical addresses of the initrd, inside RAM, `start <= end`.
    pub initrd: Option<(u64, u64)>,
    /// How many virtio-mmio slots to describe, 0..=`VIRTIO_SLOTS` (32).
    pub virtio_slots: u32,
    /// Describe dom0's MMIO test device (`rusthv,mmio-test` at
    /// `TEST_DEVICE_BASE`), which dom0 serves through IO forwarding.
    pub test_device: bool,
}

/// Why [`build_tree`] refused a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestTreeError {
    /// `vcpus` is 0 or more than [`MAX_VCPUS`].
    Vcpus(usize),
    /// `memory` is 0, not a multiple of [`MEMORY_ALIGN`], or more than [`MAX_MEMORY`].
    Memory(u64),
    /// The initrd `(start, end)` ends before it starts or lies outside RAM.
    Initrd(u64, u64),
    /// `virtio_slots` is more than `VIRTIO_SLOTS`.
    VirtioSlots(u32),
    /// `bootargs` contains a NUL or is longer than [`MAX_BOOTARGS`].
    Bootargs,
    /// The writer failed (a bug: the tree is fixed-shape).
    Write(WriteError),
}

impl fmt::Display for GuestTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vcpus(n) => write!(f, "{n} vCPUs (must be 1..={MAX_VCPUS})"),
            Self::Memory(m) => write!(
                f,
                "memory {m:#x} (must be a non-zero multiple of {MEMORY_ALIGN:#x}, at most {MAX_MEMORY:#x})"
            ),
            Self::Initrd(s, e) => {
                write!(f, "initrd {s:#x}..{e:#x} is not a range inside guest RAM")
            }
            Self::VirtioSlots(n) => write!(f, "{n} virtio-mmio slots (at most {VIRTIO_SLOTS})"),
            Self::Bootargs => write!(f, "bootargs contain a NUL or exceed {MAX_BOOTARGS} bytes"),
            Self::Write(e) => write!(f, "device tree writer: {e}"),
        }
    }
}

impl From<WriteError> for GuestTreeError {
    fn from(e: WriteError) -> Self {
        Self::Write(e)
    }
}

/// Checks `cfg` against the limits documented on [`GuestTreeConfig`].
fn validate(cfg: &GuestTreeConfig<'_>) -> Result<(), GuestTreeError> {
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err(GuestTreeError::Vcpus(cfg.vcpus));
    }
    if cfg.memory == 0 || !cfg.memory.is_multiple_of(MEMORY_ALIGN) || cfg.memory > MAX_MEMORY {
        return Err(GuestTreeError::Memory(cfg.memory));
    }
    if let Some((start, end)) = cfg.initrd {
        // memory <= 4 GiB, so this cannot overflow.
        let ram_end = RAM_BASE + cfg.memory;
        if end < start || start < RAM_BASE || end > ram_end {
            return Err(GuestTreeError::Initrd(start, end));
        }
    }
    if cfg.virtio_slots > VIRTIO_SLOTS {
        return Err(GuestTreeError::VirtioSlots(cfg.virtio_slots));
    }
    if cfg.bootargs.contains('\0') || cfg.bootargs.len() > MAX_BOOTARGS {
        return Err(GuestTreeError::Bootargs);
    }
    Ok(())
}

/// A `reg` value of `(address, size)` pairs, 2 + 2 cells each.
fn reg64(pairs: &[(u64, u64)]) -> Vec<u8> {
    pairs
        .iter()
        .flat_map(|&(a, s)| a.to_be_bytes().into_iter().chain(s.to_be_bytes()))
        .collect()
}

/// The guest's device tree blob for `cfg` (see the module documentation).
pub fn build_tree(cfg: &GuestTreeConfig<'_>) -> Result<Vec<u8>, GuestTreeError> {
    validate(cfg)?;
    let uart_path = format!("/pl011@{UART_BASE:x}");
    let mut w = FdtWriter::new();
    w.boot_cpuid_phys(0);

    w.begin_node("")?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;
    w.property_string("model", "linux,dummy-virt")?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("#address-cells", 2)?;
    w.property_string("compatible", "linux,dummy-virt")?;

    w.begin_node("chosen")?;
    w.property_string("bootargs", cfg.bootargs)?;
    w.property_string("stdout-path", &uart_path)?;
    if let Some((start, end)) = cfg.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.end_node()?;

    w.begin_node("aliases")?;
    w.property_string("serial0", &uart_path)?;
    w.end_node()?;

    w.begin_node(&format!("memory@{RAM_BASE:x}"))?;
    w.property_string("device_type", "memory")?;
    w.property("reg", &reg64(&[(RAM_BASE, cfg.memory)]))?;
    w.end_node()?;

    w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..cfg.vcpus {
        // vcpus <= 8 (validated).
        let aff0 = i as u32;
        w.begin_node(&format!("cpu@{aff0:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        w.property_u32("reg", aff0)?;
        w.property_string("enable-method", "psci")?;
        w.end_node()?;
    }
    w.end_node()?;

    w.begin_node("psci")?;
    w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.property_string("method", "hvc")?;
    w.end_node()?;

    // GICv2 PPI specifiers carry the mask of CPUs the PPI is wired to in
    // bits [15:8]; GICv3 has no such field.
    let ppi_flags = match cfg.gic {
        GuestGic::V2 => LEVEL_HIGH | (((1u32 << cfg.vcpus) - 1) << 8),
        GuestGic::V3 => LEVEL_HIGH,
    };
    w.begin_node("timer")?;
    w.property_strings("compatible", &["arm,armv8-timer", "arm,armv7-timer"])?;
    let timer_irqs: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [PPI, ppi, ppi_flags])
        .collect();
    w.property_cells("interrupts", &timer_irqs)?;
    w.property_empty("always-on")?;
    w.end_node()?;

    w.begin_node(&format!("intc@{GICD_BASE:x}"))?;
    match cfg.gic {
        GuestGic::V2 => {
            w.property_string("compatible", "arm,cortex-a15-gic")?;
            w.property(
                "reg",
                &reg64(&[(GICD_BASE, GICD_SIZE), (GICC_BASE, GICC_SIZE)]),
            )?;
        }
        GuestGic::V3 => {
            w.property_string("compatible", "arm,gic-v3")?;
            let gicr_size = cfg.vcpus as u64 * GICR_STRIDE;
            w.property(
                "reg",
                &reg64(&[(GICD_BASE, GICD_SIZE), (GICR_BASE, gicr_size)]),
            )?;
            w.property_u32("#redistributor-regions", 1)?;
        }
    }
    w.property_u32("#interrupt-cells", 3)?;
    // No children and no interrupt-map: 0 address cells (dtc warns without it).
    w.property_u32("#address-cells", 0)?;
    w.property_empty("interrupt-controller")?;
    w.property_u32("phandle", GIC_PHANDLE)?;
    w.end_node()?;

    w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", APB_CLOCK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", CLOCK_PHANDLE)?;
    w.end_node()?;

    w.begin_node(&uart_path[1..])?;
    w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
    w.property("reg", &reg64(&[(UART_BASE, UART_SIZE)]))?;
    w.property_cells("interrupts", &[SPI, UART_SPI, LEVEL_HIGH])?;
    w.property_cells("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.property_strings("clock-names", &["uartclk", "apb_pclk"])?;
    w.end_node()?;

    for i in 0..cfg.virtio_slots {
        let base = VIRTIO_BASE + u64::from(i) * VIRTIO_STRIDE;
        w.begin_node(&format!("virtio_mmio@{base:x}"))?;
        w.property_string("compatible", "virtio,mmio")?;
        w.property("reg", &reg64(&[(base, VIRTIO_STRIDE)]))?;
        w.property(
            "interrupts",
            &cells_bytes(&[SPI, VIRTIO_SPI_BASE + i, EDGE_RISING]),
        )?;
        w.property_empty("dma-coherent")?;
        w.end_node()?;
    }

    if cfg.test_device {
        w.begin_node(&format!("mmio-test@{TEST_DEVICE_BASE:x}"))?;
        w.property_string("compatible", "rusthv,mmio-test")?;
        w.property("reg", &reg64(&[(TEST_DEVICE_BASE, TEST_DEVICE_SIZE)]))?;
        w.end_node()?;
    }

    w.end_node()?;
    Ok(w.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PhysAddr;
    use crate::platform::{EnableMethod, GicVersion, MemRegion, Platform, PsciConduit, UartKind};

    fn cfg(gic: GuestGic, vcpus: usize) -> GuestTreeConfig<'static> {
        GuestTreeConfig {
            memory: 128 << 20,
            vcpus,
            gic,
            bootargs: "console=ttyAMA0 earlycon",
            initrd: Some((0x4400_0000, 0x4410_0000)),
            virtio_slots: 4,
            test_device: true,
        }
    }

    fn region(base: u64, size: u64) -> MemRegion {
        MemRegion {
            base: PhysAddr::new(base),
            size,
        }
    }

    fn check(gic: GuestGic, vcpus: usize) -> Platform {
        let c = cfg(gic, vcpus);
        let blob = build_tree(&c).unwrap();
        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!(p.model, "linux,dummy-virt");
        assert_eq!(p.memory, [region(0x4000_0000, c.memory)]);
        assert!(p.reserved.is_empty());
        assert_eq!(p.cpus.len(), vcpus);
        for (i, cpu) in p.cpus.iter().enumerate() {
            assert_eq!(cpu.mpidr, i as u64);
            assert_eq!(cpu.enable_method, Some(EnableMethod::Psci));
        }
        let psci = p.psci.as_ref().unwrap();
        assert_eq!(psci.conduit, PsciConduit::Hvc);
        assert!(psci.version_0_2_or_later);
        assert_eq!(psci.cpu_on, 0xC400_0003);
        assert_eq!(p.console.kind, UartKind::Pl011);
        assert_eq!(p.console.base, PhysAddr::new(0x0900_0000));
        assert_eq!(p.console.size, 0x1000);
        assert_eq!(p.console.path, "/pl011@9000000");
        let irq = p.console.irq.unwrap();
        assert_eq!((irq.intid, irq.level_triggered), (33, true));
        assert_eq!(
            (p.timer.virt.intid, p.timer.virt.level_triggered),
            (27, true)
        );
        assert_eq!(p.timer.secure_phys.intid, 29);
        assert_eq!(p.timer.nonsecure_phys.intid, 30);
        assert_eq!(p.timer.hyp_phys.map(|i| i.intid), Some(26));
        assert_eq!(p.bootargs, "console=ttyAMA0 earlycon");
        assert_eq!(p.initrd, Some(region(0x4400_0000, 0x10_0000)));
        assert_eq!(p.gic.path, "/intc@8000000");
        assert_eq!(p.gic.gicd, region(0x0800_0000, 0x1_0000));
        assert_eq!(p.gic.maintenance_irq, None);
        p
    }

    #[test]
    fn guest_v2_tree_parses() {
        for vcpus in [1, 2, 8] {
            let p = check(GuestGic::V2, vcpus);
            assert_eq!(p.gic.version, GicVersion::V2);
            assert_eq!(p.gic.gicc, Some(region(0x0801_0000, 0x2000)));
            assert!(p.gic.gicr.is_empty());
            assert_eq!((p.gic.gich, p.gic.gicv), (None, None));
        }
    }

    #[test]
    fn guest_v3_tree_parses() {
        for vcpus in [1, 2, 8] {
            let p = check(GuestGic::V3, vcpus);
            assert_eq!(p.gic.version, GicVersion::V3);
            assert_eq!(p.gic.gicr, [region(0x080A_0000, vcpus as u64 * 0x2_0000)]);
            assert_eq!(p.gic.gicc, None);
        }
    }

    /// Node `name` under the root of `blob`.
    fn node(blob: &[u8], name: &str) -> Option<crate::writer::Node> {
        let fdt = crate::writer::Fdt::parse(blob).unwrap();
        fdt.root.children.into_iter().find(|n| n.name == name)
    }

    #[test]
    fn the_mmio_test_device_is_described_only_when_asked_for() {
        let with = build_tree(&cfg(GuestGic::V3, 1)).unwrap();
        let n = node(&with, "mmio-test@b000000").unwrap();
        assert_eq!(n.get("compatible"), Some(&b"rusthv,mmio-test\0"[..]));
        assert_eq!(n.get("reg"), Some(&reg64(&[(0x0B00_0000, 0x1000)])[..]));
        let without = build_tree(&GuestTreeConfig { test_device: false, ..cfg(GuestGic::V3, 1) }).unwrap();
        assert!(node(&without, "mmio-test@b000000").is_none());
    }

    #[test]
    fn guest_timer_flags_carry_the_cpu_mask_on_v2_only() {
        let v2 = build_tree(&cfg(GuestGic::V2, 2)).unwrap();
        let t = node(&v2, "timer").unwrap();
        let want = cells_bytes(&[1, 13, 0x304, 1, 14, 0x304, 1, 11, 0x304, 1, 10, 0x304]);
        assert_eq!(t.get("interrupts"), Some(&want[..]));
        let v2_8 = build_tree(&cfg(GuestGic::V2, 8)).unwrap();
        let t = node(&v2_8, "timer").unwrap();
        assert_eq!(
            t.get("interrupts").map(|v| v[8..12].to_vec()),
            Some(0xff04u32.to_be_bytes().to_vec())
        );
        let v3 = build_tree(&cfg(GuestGic::V3, 2)).unwrap();
        let t = node(&v3, "timer").unwrap();
        let want = cells_bytes(&[1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]);
        assert_eq!(t.get("interrupts"), Some(&want[..]));
    }

    #[test]
    fn guest_virtio_slots_follow_the_abi_layout() {
        for slots in [0, 1, 32] {
            let c = GuestTreeConfig {
                virtio_slots: slots,
                test_device: false,
                ..cfg(GuestGic::V3, 1)
            };
            let fdt = crate::writer::Fdt::parse(&build_tree(&c).unwrap()).unwrap();
            let virtio: Vec<_> = fdt
                .root
                .children
                .iter()
                .filter(|n| n.name.starts_with("virtio_mmio@"))
                .collect();
            assert_eq!(virtio.len(), slots as usize);
            for (i, n) in virtio.iter().enumerate() {
                let base = 0x0A00_0000 + i as u64 * 0x200;
                assert_eq!(n.name, format!("virtio_mmio@{base:x}"));
                assert_eq!(n.get("reg"), Some(&reg64(&[(base, 0x200)])[..]));
                assert_eq!(
                    n.get("interrupts"),
                    Some(&cells_bytes(&[0, 16 + i as u32, 1])[..])
                );
                assert_eq!(n.get("compatible"), Some(&b"virtio,mmio\0"[..]));
                assert_eq!(n.get("dma-coherent"), Some(&[][..]));
            }
        }
    }

    #[test]
    fn guest_without_initrd_has_no_initrd_properties() {
        let c = GuestTreeConfig {
            initrd: None,
            bootargs: "",
            ..cfg(GuestGic::V2, 1)
        };
        let blob = build_tree(&c).unwrap();
        let p = Platform::from_fdt(&blob).unwrap();
        assert_eq!((p.initrd, p.bootargs.as_str()), (None, ""));
        let chosen = node(&blob, "chosen").unwrap();
        assert!(chosen.get("linux,initrd-start").is_none());
        // Initrd exactly filling RAM is accepted.
        let c = GuestTreeConfig {
            initrd: Some((0x4000_0000, 0x4800_0000)),
            ..cfg(GuestGic::V3, 1)
        };
        assert!(build_tree(&c).is_ok());
    }

    #[test]
    fn guest_bad_configs_are_rejected() {
        let base = cfg(GuestGic::V3, 2);
        let err = |c: GuestTreeConfig<'_>| build_tree(&c).unwrap_err();
        assert_eq!(
            err(GuestTreeConfig {
                vcpus: 0,
                ..base.clone()
            }),
            GuestTreeError::Vcpus(0)
        );
        assert_eq!(
            err(GuestTreeConfig {
                vcpus: 9,
                ..base.clone()
            }),
            GuestTreeError::Vcpus(9)
        );
        for m in [
            0,
            0x10_0000,
            (128 << 20) + 4096,
            (4 << 30) + (2 << 20),
            u64::MAX,
        ] {
            assert_eq!(
                err(GuestTreeConfig {
                    memory: m,
                    ..base.clone()
                }),
                GuestTreeError::Memory(m)
            );
        }
        assert!(build_tree(&GuestTreeConfig {
            memory: 4 << 30,
            ..base.clone()
        })
        .is_ok());
        assert!(build_tree(&GuestTreeConfig {
            memory: 2 << 20,
            initrd: None,
            ..base.clone()
        })
        .is_ok());
        let ram_end = 0x4000_0000 + (128 << 20);
        for (s, e) in [
            (0x4810_0000, 0x4800_0000),           // end < start
            (0x3fff_f000, 0x4000_1000),           // starts below RAM
            (ram_end - 0x1000, ram_end + 1),      // ends past RAM
            (ram_end + 0x1000, ram_end + 0x2000), // wholly above RAM
            (0, u64::MAX),
        ] {
            let c = GuestTreeConfig {
                initrd: Some((s, e)),
                ..base.clone()
            };
            assert_eq!(err(c), GuestTreeError::Initrd(s, e));
        }
        let c = GuestTreeConfig {
            virtio_slots: 33,
            test_device: false,
            ..base.clone()
        };
        assert_eq!(err(c), GuestTreeError::VirtioSlots(33));
        let c = GuestTreeConfig {
            bootargs: "a\0b",
            ..base.clone()
        };
        assert_eq!(err(c), GuestTreeError::Bootargs);
        let long = "x".repeat(MAX_BOOTARGS + 1);
        let c = GuestTreeConfig {
            bootargs: &long,
            ..base.clone()
        };
        assert_eq!(err(c), GuestTreeError::Bootargs);
        let ok = "x".repeat(MAX_BOOTARGS);
        assert!(build_tree(&GuestTreeConfig {
            bootargs: &ok,
            ..base
        })
        .is_ok());
    }
}
