//! The runtime every test guest links: an EL1 image that boots on one or
//! more vCPUs of the guest platform (QEMU virt's layout, see
//! `hv_abi::hypercall::guest`), checks things and prints one line per check:
//!
//! ```text
//! TEST <guest>: <check>: PASS|FAIL <detail>
//! GUEST <guest>: DONE <passed> passed, <failed> failed
//! ```
//!
//! then switches the VM off with PSCI SYSTEM_OFF.
//!
//! Layers:
//! - arch-neutral and host-tested: [`cmdline`] (bootargs), [`report`] (line
//!   formats, tallies, tolerances), [`esr`] (syndrome decoding),
//!   [`windows`] (which IPAs a device tree advertises);
//! - `arch::aarch64` (only on the target): entry with the arm64 Image header,
//!   self-relocation, per-vCPU stacks, identity map, vectors with probe
//!   fix-ups, PL011, PSCI over `hvc`, GICv2/v3, the virtual timer, CPU_ON;
//! - `rt` (only on the target): the boot story and reporting.
//!
//! A guest is a binary crate with `testkit::guest!("name", main);`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod cmdline;
pub mod esr;
pub mod report;
pub mod windows;

/// The crates guests describe their platform with.
pub use hv_abi;
pub use hv_devtree;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[path = "arch/aarch64/mod.rs"]
pub mod arch;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod rt;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use rt::{env, finish, image_range, print, report, wait_until, Env};

/// Declares the guest's entry: `guest!("psci", main)` with `fn main(env: &'static Env)`.
#[macro_export]
macro_rules! guest {
    ($name:literal, $main:path) => {
        #[no_mangle]
        extern "C" fn testkit_primary_main(dtb: u64) -> ! {
            $crate::rt::run($name, dtb, $main)
        }
    };
}

/// `print!` to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::rt::print(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::rt::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `check!("name", pass, "detail {}", x)`: one TEST line.
#[macro_export]
macro_rules! check {
    ($check:expr, $pass:expr) => { $crate::rt::report($check, $pass, format_args!("")) };
    ($check:expr, $pass:expr, $($arg:tt)*) => { $crate::rt::report($check, $pass, format_args!($($arg)*)) };
}
