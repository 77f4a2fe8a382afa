#!/usr/bin/env bash
# Builds the EL2 image, dom0 and the boot bundle: scripts/build.sh [--debug]
# Prints two paths: the hypervisor's flat arm64 Image
# (target/hypervisor-<profile>.img) and the boot bundle holding dom0
# (target/bundle-<profile>.cpio), which the hypervisor takes as its initrd.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

profile=release
case "${1:-}" in
    --debug) profile=debug ;;
    --release|"") ;;
    *) die "usage: scripts/build.sh [--debug|--release]" ;;
esac

cd "$ROOT"
# rust-toolchain.toml names the toolchain, the target and llvm-tools; newer
# rustup versions no longer install them on first use, so ask explicitly.
rustup toolchain install >&2 2>/dev/null || rustup show active-toolchain >/dev/null
flags=(); [ "$profile" = release ] && flags=(--release)
cargo build -q "${flags[@]}" -p hypervisor --bin hypervisor --target aarch64-unknown-none-softfloat >&2
elf=$ROOT/target/aarch64-unknown-none-softfloat/$profile/hypervisor
img=$ROOT/target/hypervisor-$profile.img
"$(llvm_tool objcopy)" -O binary "$elf" "$img"
# The header must say "ARM\x64" at offset 56, or no loader will take it.
[ "$(dd if="$img" bs=1 skip=56 count=4 2>/dev/null)" = $'ARM\x64' ] || die "$img: arm64 Image magic missing"
dom0=$("$ROOT/scripts/build-dom0.sh" $([ "$profile" = debug ] && echo --debug))
bundle=$ROOT/target/bundle-$profile.cpio
cargo run -q --release -p mkbundle -- "$bundle" "dom0.img=$dom0" >&2
echo "$img"
echo "$bundle"
