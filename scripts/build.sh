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
ensure_toolchain
flags=(); [ "$profile" = release ] && flags=(--release)
cargo build -q "${flags[@]}" -p hypervisor --bin hypervisor --target aarch64-unknown-none-softfloat >&2
img=$ROOT/target/hypervisor-$profile.img
flat_image "$ROOT/target/aarch64-unknown-none-softfloat/$profile/hypervisor" "$img"
dom0=$("$ROOT/scripts/build-dom0.sh" $([ "$profile" = debug ] && echo --debug))
bundle=$ROOT/target/bundle-$profile.cpio
cargo run -q --release -p mkbundle -- "$bundle" "dom0.img=$dom0" >&2
echo "$img"
echo "$bundle"
