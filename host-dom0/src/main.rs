//! The dom0 EL1 image. All of it lives in the library; this binary only links
//! it with `linker.ld` (see build.rs) into the image `scripts/build-dom0.sh` flattens.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
use host_dom0 as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("dom0 runs on aarch64-unknown-none: build it with scripts/build-dom0.sh");
    std::process::exit(1);
}
