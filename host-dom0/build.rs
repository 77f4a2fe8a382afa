//! Links the EL1 image with the workspace linker script as a static PIE (the
//! boot code relocates itself, see asm/relocate.S). Host builds (unit tests) are left alone.
fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    println!("cargo:rerun-if-changed=../linker.ld");
    println!("cargo:rerun-if-changed=../asm/relocate.S");
    if target_os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/../linker.ld");
        println!("cargo:rustc-link-arg-bins=-pie");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        // core/alloc are precompiled without PIC: allow dynamic relocations in
        // read-only data; boot.S applies them with the MMU off.
        println!("cargo:rustc-link-arg-bins=-znotext");
        println!("cargo:rustc-link-arg-bins=--pack-dyn-relocs=relr");
    }
}
