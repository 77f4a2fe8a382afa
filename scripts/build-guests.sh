#!/usr/bin/env bash
# Builds the test guest VMs: scripts/build-guests.sh [--debug] [guest...]
# Prints one path per guest: target/guests/<name>.img (flat arm64 Images).
# Without names, builds every guests/<name> crate except the testkit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

profile=release
names=()
for arg in "$@"; do
    case "$arg" in
        --debug) profile=debug ;;
        --release) ;;
        -*) die "usage: scripts/build-guests.sh [--debug|--release] [guest...]" ;;
        *) names+=("$arg") ;;
    esac
done
cd "$ROOT"
if [ ${#names[@]} -eq 0 ]; then
    for dir in guests/*/; do
        name=$(basename "$dir")
        [ "$name" = testkit ] || [ ! -f "$dir/Cargo.toml" ] || names+=("$name")
    done
fi

ensure_toolchain
flags=(); [ "$profile" = release ] && flags=(--release)
pkgs=(); for n in "${names[@]}"; do pkgs+=(-p "guest-$n"); done
cargo build -q "${flags[@]}" "${pkgs[@]}" --target aarch64-unknown-none >&2
mkdir -p "$ROOT/target/guests"
for n in "${names[@]}"; do
    img=$ROOT/target/guests/$n.img
    flat_image "$ROOT/target/aarch64-unknown-none/$profile/guest-$n" "$img"
    echo "$img"
done
