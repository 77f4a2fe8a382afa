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
ensure_toolchain
flags=(); [ "$profile" = release ] && flags=(--release)
cargo build -q "${flags[@]}" -p host-dom0 --bin host-dom0 --target aarch64-unknown-none >&2
img=$ROOT/target/dom0-$profile.img
flat_image "$ROOT/target/aarch64-unknown-none/$profile/host-dom0" "$img"
echo "$img"
