//! Link the EL2 image with the workspace linker script as a static PIE (the
//! boot code relocates itself). Host builds (unit tests) are left alone.
fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    println!("cargo:rerun-if-changed=../linker.ld");
    if target_os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/../linker.ld");
        println!("cargo:rustc-link-arg-bins=-pie");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        // The precompiled core/alloc are not PIC: their read-only data holds
        // absolute addresses. Allow dynamic relocations there; boot.S applies
        // them with the MMU off, before any section becomes read-only.
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=--pack-dyn-relocs=relr");
    }
    let version = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--tags"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HV_GIT_VERSION={version}");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/index");
}
