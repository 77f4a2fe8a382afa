//! Device drivers. `sdhci` (the SD card state machine and its register
//! map), `mbr` and `pm_reset`'s decisions are arch-neutral and host-tested; the rest run only on
//! the target.
pub mod mbr;
pub mod pm_reset;
pub mod sdhci;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod disk;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use hv_uart as uart;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod virtio_blk;
