//! The EL2 image. All of it lives in the library; this binary only links it
//! with `linker.ld` (see build.rs) into the image that `scripts/build.sh`
//! turns into a flat arm64 `Image`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
use hypervisor as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on aarch64-unknown-none: build it with scripts/build.sh, boot it with scripts/run.sh");
    std::process::exit(1);
}
