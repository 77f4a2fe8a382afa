//! Build script shared by every test guest crate (`build = "../testkit/guest-build.rs"`):
//! links the EL1 image with the workspace linker script as a static PIE, which
//! the testkit's entry code relocates (asm/relocate.S). Host builds are left alone.
fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    println!("cargo:rerun-if-changed=../../linker.ld");
    if target_os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/../../linker.ld");
        println!("cargo:rustc-link-arg-bins=-pie");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=--pack-dyn-relocs=relr");
    }
}
