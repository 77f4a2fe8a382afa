//! Device drivers.
pub use hv_uart as uart;
