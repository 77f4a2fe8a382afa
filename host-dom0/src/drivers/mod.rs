//! Device drivers.
pub use hv_uart as uart;
pub mod virtio_blk;
