#!/usr/bin/env bash
# Measures hypervisor costs as instructions per operation: boots under
# QEMU with -icount shift=0 (virtual time counts instructions: 1 ns = 1
# instruction), runs dom0's `bench` command, the mmio test guest's
# forwarded-read loop and the ipi test guest's SGI loop, prints the figures.
# scripts/bench.sh [run.sh options, e.g. --gic 2 --smp 1]
# scripts/bench.sh --io: only the virtio-blk figures (scripts/lib/blkbench.sh),
#   under -icount and in real time.
# Default: QEMU virt, GICv3, 2 CPUs (dom0 has its own physical CPUs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"
source "$ROOT/scripts/lib/blkbench.sh"

if [ "${1:-}" = --io ]; then
    echo "virtio-blk from a guest (QEMU virt, GICv3, 2 CPUs, dom0 on CPU 0, the guest on CPU 1)"
    blk_bench "-icount shift=0: guest time is instructions" --icount
    blk_bench "real time, this machine's load included"
    exit 0
fi

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

# A guest read forwarded to dom0's MMIO test device and back, timed by the
# mmio test guest: with dom0 on the same physical CPU, and on its own.
"$ROOT/scripts/build-guests.sh" mmio >/dev/null
forwarded() {
    "$ROOT/scripts/run.sh" --icount --until-idle --timeout 300 "$@" </dev/null 2>&1 |
        sed -n 's/.*RESULT mmio: forwarded-read-ns=\([0-9]*\).*/\1/p' | head -n1
}
one=$(forwarded --gic 3 --smp 1 --vm "kernel=$ROOT/target/guests/mmio.img,cmdline=mmio.bench=2000,memory=16M")
two=$(forwarded --gic 3 --smp 2 --append "dom0.vcpus=1" --vm "kernel=$ROOT/target/guests/mmio.img,cmdline=mmio.bench=2000,memory=16M,pin=1")
echo "  guest MMIO read forwarded to dom0 and back, 1 CPU shared with dom0: ${one:-?}"
echo "  guest MMIO read forwarded to dom0 and back, dom0 on its own CPU: ${two:-?}"
# A virtual IPI: the ipi guest's vCPU 0 sends SGIs to vCPU 1 (waiting in
# WFI), one after the other as each is handled.
"$ROOT/scripts/build-guests.sh" ipi >/dev/null
ipi=$("$ROOT/scripts/run.sh" --icount --until-idle --timeout 300 --gic 3 --smp 2 --append "dom0.vcpus=1" \
        --vm "kernel=$ROOT/target/guests/ipi.img,cmdline=ipi.count=10 ipi.bench=2000,vcpus=2,memory=16M" </dev/null 2>&1 |
    sed -n 's/.*RESULT ipi: sgi-ns=\([0-9]*\).*/\1/p' | head -n1)
echo "  virtual IPI, sent to a vCPU waiting in WFI until it is handled: ${ipi:-?}"
echo "  hypervisor image: $(stat -c %s "$img") bytes ($(( $(stat -c %s "$img") / 1024 )) KiB)"
blk_bench "-icount shift=0: guest time is instructions" --icount
