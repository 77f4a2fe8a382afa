//! The platform, described by the device tree: memory, console, GIC, timer, CPUs and PSCI.
//!
//! [`Platform::from_fdt`] never panics: the blob is validated in full before
//! the `fdt` crate reads it (see `blob`), and every value taken from it is
//! range-checked. All MMIO and memory addresses are CPU physical addresses,
//! translated through the `ranges` of every bus between the node and the root.

pub(crate) mod blob;
mod error;
pub(crate) mod parse;
pub(crate) mod translate;
pub(crate) mod tree;

#[cfg(test)]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;

pub use error::{ErrorKind, PlatformError};

use crate::addr::PhysAddr;

/// Everything the hypervisor needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `/model`, else the first `/compatible` entry, else "unknown".
    pub model: String,
    /// `reg` entries with size > 0 of all enabled `device_type = "memory"` nodes, sorted.
    pub memory: Vec<MemRegion>,
    /// `/memreserve/` entries and enabled `/reserved-memory` children's `reg`
    /// entries, both with size > 0, sorted. (Children with only `size`, which
    /// the OS allocates dynamically, are not included.)
    pub reserved: Vec<MemRegion>,
    /// The console: the node `/chosen/stdout-path` names.
    pub console: Uart,
    /// The interrupt controller.
    pub gic: Gic,
    /// The architected generic timer's interrupts.
    pub timer: Timer,
    /// Enabled `/cpus` children with `device_type = "cpu"`, in tree order.
    pub cpus: Vec<Cpu>,
    /// The PSCI firmware interface, if the tree has one.
    pub psci: Option<Psci>,
    /// `/chosen/bootargs`, or "".
    pub bootargs: String,
    /// `/chosen/linux,initrd-start` up to `linux,initrd-end`, if both are present and differ.
    pub initrd: Option<MemRegion>,
}

/// A physical address range; [`Platform::from_fdt`] guarantees its end fits in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemRegion {
    /// First byte.
    pub base: PhysAddr,
    /// Length in bytes.
    pub size: u64,
}

impl MemRegion {
    /// The region `[base, base + size)`, or `None` if its end overflows.
    pub fn checked(base: PhysAddr, size: u64) -> Option<Self> {
        base.checked_add(size).map(|_| Self { base, size })
    }

    /// One past the last byte, or `None` on overflow.
    pub fn end(&self) -> Option<PhysAddr> {
        self.base.checked_add(self.size)
    }
}

/// Supported console UARTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PrimeCell PL011, compatible "arm,pl011".
    Pl011,
    /// The BCM2835/BCM2711 auxiliary mini-UART, compatible "brcm,bcm2835-aux-uart".
    Bcm2835Aux,
}

/// The console UART.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart {
    /// Which register interface it has.
    pub kind: UartKind,
    /// Physical address of its registers.
    pub base: PhysAddr,
    /// Size of its register window.
    pub size: u64,
    /// Its node's path.
    pub path: String,
    /// Its interrupt, if routed to the GIC.
    pub irq: Option<Irq>,
}

/// GIC architecture version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2 (gic-400, cortex-a15-gic, ...): memory-mapped CPU interface.
    V2,
    /// GICv3: redistributors, system-register CPU interface.
    V3,
}

/// The interrupt controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gic {
    /// Architecture version.
    pub version: GicVersion,
    /// Its node's path.
    pub path: String,
    /// Distributor.
    pub gicd: MemRegion,
    /// CPU interface (required for v2; for v3 the optional legacy window).
    pub gicc: Option<MemRegion>,
    /// Virtual interface control (hypervisor) registers, if given.
    pub gich: Option<MemRegion>,
    /// Virtual CPU interface, if given.
    pub gicv: Option<MemRegion>,
    /// v3 only: the `#redistributor-regions` (default 1) redistributor regions.
    pub gicr: Vec<MemRegion>,
    /// The GIC's own `interrupts`: the virtual-interface maintenance interrupt.
    pub maintenance_irq: Option<Irq>,
}

/// A GIC interrupt, from a 3-cell specifier `<type number flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Irq {
    /// Interrupt ID: SPI (type 0) number + 32, or PPI (type 1) number + 16.
    pub intid: u32,
    /// `flags & 0xf` is 4 or 8 (level); 1 or 2 (edge) and 0 (unspecified) are reported as edge.
    pub level_triggered: bool,
}

/// The architected timer's per-CPU interrupts (node compatible "arm,armv8-timer").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// Secure EL1 physical timer.
    pub secure_phys: Irq,
    /// Non-secure EL1 physical timer.
    pub nonsecure_phys: Irq,
    /// EL1 virtual timer.
    pub virt: Irq,
    /// EL2 physical timer, if listed.
    pub hyp_phys: Option<Irq>,
}

/// How a secondary CPU is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableMethod {
    /// PSCI `CPU_ON`.
    Psci,
    /// Write the entry point to `release_addr` (a CPU physical address, not translated) and `sev`.
    SpinTable {
        /// The `cpu-release-addr` property.
        release_addr: PhysAddr,
    },
}

/// A CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// `reg`: the MPIDR affinity bits (1 or 2 cells per `/cpus` `#address-cells`).
    pub mpidr: u64,
    /// `enable-method`. `None` only for the first CPU, which is already running
    /// (the boot CPU); a later CPU without one is an error.
    pub enable_method: Option<EnableMethod>,
    /// Its node's path.
    pub path: String,
}

/// The PSCI call instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciConduit {
    /// `smc`: firmware at EL3.
    Smc,
    /// `hvc`: firmware at EL2 (not possible when we are the EL2 software).
    Hvc,
}

/// The PSCI firmware interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Psci {
    /// `method`.
    pub conduit: PsciConduit,
    /// `compatible` includes "arm,psci-0.2" or "arm,psci-1.0" (standard function IDs).
    pub version_0_2_or_later: bool,
    /// The `CPU_ON` function ID: 0xC4000003 for 0.2+, else the node's `cpu_on`.
    pub cpu_on: u32,
    /// Its node's path.
    pub path: String,
}

impl Platform {
    /// Parses and checks a flattened device tree blob. Never panics.
    // Not inlined: its callers are compiled for speed and would take the
    // parsing (compiled for size, see Cargo.toml) in with them.
    #[inline(never)]
    pub fn from_fdt(blob: &[u8]) -> Result<Platform, PlatformError> {
        let checked = blob::check(blob)?;
        let fdt = checked.fdt()?;
        parse::platform(&tree::Tree::new(&fdt), &checked.memreserve)
    }

    /// Only the console UART: for reporting why the whole tree could not be
    /// used, or that the image was started at the wrong exception level.
    pub fn console_from_fdt(blob: &[u8]) -> Result<Uart, PlatformError> {
        let checked = blob::check(blob)?;
        let fdt = checked.fdt()?;
        let tree = tree::Tree::new(&fdt);
        let chosen = tree.find("/chosen");
        parse::console(&tree, chosen, None)
    }

    /// Total bytes of RAM (saturating).
    pub fn ram_size(&self) -> u64 {
        self.memory.iter().fold(0, |sum, r| sum.saturating_add(r.size))
    }
}
