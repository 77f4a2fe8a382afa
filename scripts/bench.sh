#!/usr/bin/env bash
# Measures hypervisor costs as instructions per operation: boots under
# QEMU with -icount shift=0 (virtual time counts instructions: 1 ns = 1
# instruction), runs dom0's `bench` command, prints the figures.
# scripts/bench.sh [run.sh options, e.g. --gic 2 --smp 1]
# Default: QEMU virt, GICv3, 2 CPUs (dom0 has its own physical CPUs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

args=(--gic 3 --smp 2 "$@")
script=$(mktemp); log=$(mktemp)
trap 'rm -f "$script" "$log"' EXIT
cat >"$script" <<'SCRIPT'
timeout 120
expect dom0> 
send bench
expect trapped GIC distributor read:
expect dom0> 
send poweroff
exit
SCRIPT
if ! python3 "$ROOT/scripts/lib/console_test.py" "$log" "$script" -- \
        "$ROOT/scripts/run.sh" --icount --timeout 300 "${args[@]}" >/dev/null; then
    cat "$log"; die "benchmark run failed"
fi
img=$(sed -n 1p <<<"$("$ROOT/scripts/build.sh")")
echo "QEMU virt ${args[*]}, -icount shift=0: instructions per operation"
grep -E '^bench: (null|trapped)' "$log" | sed 's/^bench: /  /'
echo "  hypervisor image: $(stat -c %s "$img") bytes ($(( $(stat -c %s "$img") / 1024 )) KiB)"
