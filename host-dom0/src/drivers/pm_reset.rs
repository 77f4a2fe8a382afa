//! Resetting the machine through the BCM2835/BCM2711 power-management
//! watchdog (device tree `brcm,bcm2835-pm-wdt`), for boards whose firmware
//! offers no PSCI: the Raspberry Pi 4 with its stock boot stub. Writing
//! `PM_WDOG` arms the watchdog with a short timeout and `PM_RSTC` asks for
//! a full reset when it expires (every write carries the block's password
//! in the top byte, or the block ignores it). QEMU's `raspi4b` models the
//! same registers (hw/misc/bcm2835_powermgt.c), so the reset is tested
//! there. Hand-written: a few register writes, no crate covers the block.

// Off the target only `find` and the tests use this module.
#![cfg_attr(not(all(target_arch = "aarch64", target_os = "none")), allow(dead_code))]

use crate::fdt_scan::Tree;

const COMPATIBLE: &str = "brcm,bcm2835-pm-wdt";
/// Reset control.
const PM_RSTC: usize = 0x1c;
/// Watchdog timer (ticks of about 16 µs).
const PM_WDOG: usize = 0x24;
/// Top byte every write must carry.
const PM_PASSWORD: u32 = 0x5a00_0000;
/// `PM_RSTC.WRCFG`: what the watchdog does when it expires.
const PM_RSTC_WRCFG_MASK: u32 = 0x30;
const PM_RSTC_WRCFG_FULL_RESET: u32 = 0x20;
/// A watchdog timeout of 10 ticks: the reset follows at once.
const RESET_TICKS: u32 = 10;

/// The watchdog's register block, if the device tree has one.
pub fn find(blob: &[u8]) -> Option<usize> {
    let tree = Tree::new(blob);
    let dev = tree.devices().into_iter().find(|d| tree.is_compatible(&d.path, COMPATIBLE))?;
    let base = dev.base.filter(|_| dev.size > PM_WDOG as u64)?;
    usize::try_from(base).ok()
}

/// The value `PM_RSTC` gets for a full reset, from its current value.
fn full_reset(rstc: u32) -> u32 {
    PM_PASSWORD | (rstc & !PM_RSTC_WRCFG_MASK & 0x00ff_ffff) | PM_RSTC_WRCFG_FULL_RESET
}

/// Resets the machine through the watchdog at `base` (from [`find`]);
/// returns only if the reset did not happen within a second.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn reset(base: usize) {
    // SAFETY: `base` is the watchdog block the device tree names, passed
    // through to dom0 and identity-mapped as device memory (outside
    // /memory); dom0 is its only driver, and resetting is its purpose.
    unsafe {
        let rstc = hv_mmio::read32(base + PM_RSTC);
        hv_mmio::write32(base + PM_WDOG, PM_PASSWORD | RESET_TICKS);
        hv_mmio::write32(base + PM_RSTC, full_reset(rstc));
    }
    let deadline = crate::arch::aarch64::cpu::counter() + crate::arch::aarch64::cpu::counter_frequency();
    while crate::arch::aarch64::cpu::counter() < deadline {
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_reset_keeps_other_bits_and_carries_the_password() {
        assert_eq!(full_reset(0), 0x5a00_0020);
        // WRCFG replaced, the other low bits kept, the old top byte dropped.
        assert_eq!(full_reset(0xff00_0f13), 0x5a00_0f23);
    }
}
