#!/usr/bin/env bash
# Where one of the bench guest's operations (guests/bench) spends its
# instructions, by function, without an instruction trace: the bench guest
# runs twice under -icount shift=0,sleep=off with a QEMU plugin counting
# executed blocks (tools/insn-count/insn_hist.c), once with N iterations of
# the operation and once with N/10; scripts/lib/hist_profile.py divides the
# difference by the difference in iterations. Everything any CPU executes
# that grows with the loop counts (dom0's wake-ups while the loop runs too);
# what runs once (boot, the result lines) cancels out.
#
# scripts/profile-bench.sh OP [--gic 2|3] [--pinned] [--n N] [--top N]
#   OP: hypercall | gicd-read | eoi | ipi | timer | uart-read | uart-fwd
# The guest's own figure for each run is printed too (bench.sh's number).
#   --pinned: dom0.vcpus=1 and the guest pinned to CPU 1 (default: dom0's
#             default vCPUs, guest unpinned, as scripts/bench.sh)
#   --n N: iterations of the bigger run (default 20000; timers: N / 100)
#   --detail FUNCTION: also each instruction's count in FUNCTION (a name as
#             the profile prints it; ELF addresses, as llvm-objdump shows them)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

op=${1:-}; shift || true
gic=3 pinned=0 n=20000 top=40 detail=()
while [ $# -gt 0 ]; do
    case "$1" in
        --gic) gic=$2; shift 2 ;;
        --pinned) pinned=1; shift ;;
        --n) n=$2; shift 2 ;;
        --top) top=$2; shift 2 ;;
        --detail) detail+=(--detail "$2"); shift 2 ;;
        *) die "usage: scripts/profile-bench.sh OP [--gic 2|3] [--pinned] [--n N] [--top N]" ;;
    esac
done
case "$op" in
    hypercall|gicd-read|eoi|ipi|uart-read|uart-fwd|timer) ;;
    *) die "unknown operation '$op' (hypercall gicd-read eoi ipi timer uart-read uart-fwd)" ;;
esac
ensure_qemu
so=$ROOT/target/insn_hist.so src=$ROOT/tools/insn-count/insn_hist.c
if [ ! -f "$so" ] || [ "$src" -nt "$so" ] || [ "$ROOT/tools/insn-count/qemu_plugin_api.h" -nt "$so" ]; then
    cc -shared -fPIC -O2 -fvisibility=hidden -o "$so" "$src" || die "cannot build the profiling plugin (a C compiler is needed)"
fi
"$ROOT/scripts/build.sh" >/dev/null
guest=$("$ROOT/scripts/build-guests.sh" bench)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
small=$((n / 10))
run() {  # run ITERATIONS OUT
    local iters=$1 cmdline
    if [ "$op" = timer ]; then
        cmdline="bench.icount=1 bench.ops=timer bench.timers=$iters"
    else
        cmdline="bench.icount=1 bench.ops=$op bench.n=$iters"
    fi
    local vm="kernel=$guest,cmdline=$cmdline,vcpus=2,memory=16M" extra=(--gic "$gic" --smp 2)
    if [ "$pinned" = 1 ]; then extra+=(--append dom0.vcpus=1 --vm "$vm,pin=1"); else extra+=(--vm "$vm"); fi
    "$ROOT/scripts/run.sh" --until-idle --timeout 600 "${extra[@]}" -- \
        -icount shift=0,sleep=off -plugin "$so,out=$2" >"$2.log" 2>&1 </dev/null || true
    echo "  $iters operations: the guest measured $(sed -n "s/\r//; s/.*RESULT bench: $op=\([0-9]*\).*/\1/p" "$2.log" | head -n1)"
    [ -s "$2" ] || { cat "$2.log"; die "no block counts from the run with $iters"; }
}
[ "$op" = timer ] && { n=$((n / 100)); small=$((n / 10)); }
echo "$op on GICv$gic, $([ "$pinned" = 1 ] && echo pinned || echo default): $n and $small operations"
run "$n" "$dir/big"
run "$small" "$dir/small"
T=$ROOT/target
python3 "$ROOT/scripts/lib/hist_profile.py" "$dir/big" "$dir/small" $((n - small)) --nm "$(llvm_tool nm)" --top "$top" "${detail[@]}" \
    --hv "$T/aarch64-unknown-none-softfloat/release/hypervisor@0x40080000" \
    --dom0 "$T/aarch64-unknown-none/release/host-dom0@0x50080000" \
    --guest "$T/aarch64-unknown-none/release/guest-bench@0x40080000"
