#!/usr/bin/env bash
# Builds dom0, the EL1 host VM kernel: scripts/build-dom0.sh [--debug]
# Prints the path of the flat arm64 Image (target/dom0-<profile>.img).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

profile=release
case "${1:-}" in
    --debug) profile=debug ;;
    --release|"") ;;
    *) die "usage: scripts/build-dom0.sh [--debug|--release]" ;;
esac

cd "$ROOT"
rustup toolchain install >&2 2>/dev/null || rustup show active-toolchain >/dev/null
flags=(); [ "$profile" = release ] && flags=(--release)
cargo build -q "${flags[@]}" -p host-dom0 --bin host-dom0 --target aarch64-unknown-none >&2
elf=$ROOT/target/aarch64-unknown-none/$profile/host-dom0
img=$ROOT/target/dom0-$profile.img
"$(llvm_tool objcopy)" -O binary "$elf" "$img"
# The header must say "ARM\x64" at offset 56, or no loader will take it.
[ "$(dd if="$img" bs=1 skip=56 count=4 2>/dev/null)" = $'ARM\x64' ] || die "$img: arm64 Image magic missing"
echo "$img"
