#!/usr/bin/env bash
# Instruction trace of one of the bench guest's operations (guests/bench)
# under the hypervisor, broken down by function: which hypervisor, dom0 and
# guest code the operation's instructions run through (docs/perf-notes.md).
#
# scripts/trace-bench.sh OP [--gic 2|3] [--pinned] [--sleep-off] [--n N] [--top N] [--keep DIR]
#   OP: hypercall | gicd-read | ipi | timer | timer-spin | uart-read | uart-fwd
#   --pinned: dom0.vcpus=1 and the guest pinned to CPU 1 (default: dom0's
#             default vCPUs, guest unpinned, as scripts/bench.sh)
#   --sleep-off: -icount shift=0,sleep=off as scripts/bench.sh (idle time
#             then costs no wall-clock time, so there is no pause for the
#             log to switch on in: it switches on at the guest's START line
#             and the trace is taken to start inside the operation; use a
#             large --n so the operation outlasts the switch)
#   --n N: iterations of the loop (default 300; timers: N / 10)
#   --keep DIR: keep the trace and the run's log there
#   --timeline K: also print operation K in order, one line per run of
#             instructions in one function (which CPU, how many)
#
# How: every build of this script has DWARF line tables
# (CARGO_PROFILE_RELEASE_DEBUG=line-tables-only, so the next normal build
# rebuilds), QEMU runs with one instruction per TB and a QMP socket, the
# guest pauses 3 s in WFI under -icount shift=0,sleep=on (idle time passes
# in wall-clock time there) while scripts/lib/trace_window.py switches `-d
# exec` on, and the trace ends when the guest reports the figure. Then
# scripts/lib/trace_profile.py cuts the trace into one segment per operation
# (between the guest's bench_window_open/close marks) and attributes every
# instruction of every CPU in a segment: under -icount the virtual clock
# advances with whichever CPU executes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

op=${1:-}; shift || true
gic=3 pinned=0 n=300 top=30 keep="" sleep=on timeline=()
while [ $# -gt 0 ]; do
    case "$1" in
        --gic) gic=$2; shift 2 ;;
        --pinned) pinned=1; shift ;;
        --sleep-off) sleep=off; shift ;;
        --n) n=$2; shift 2 ;;
        --top) top=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        --timeline) timeline=(--timeline "$2"); shift 2 ;;
        *) die "usage: scripts/trace-bench.sh OP [--gic 2|3] [--pinned] [--n N] [--top N] [--keep DIR]" ;;
    esac
done
trap_from_guest=hv:el2_vectors+0x400@guest
case "$op" in
    hypercall|gicd-read|uart-read|uart-fwd) from=$trap_from_guest to=$trap_from_guest key=$op ops=$op ;;
    # From the SGI write trapping (the last trap from the guest before the
    # handler: vCPU 1 trapped its WFI before the send) to the handler.
    ipi) from=$trap_from_guest to=guest:on_sgi key=ipi ops=ipi ;;
    # The last physical IRQ the hypervisor takes (running a VM, or idle at
    # EL2: its WFI returns) before the guest's timer handler runs.
    timer|timer-spin) from=hv:el2_vectors+0x280,hv:el2_vectors+0x480,hv:el2_idle_wake to=guest:on_timer key=timer ops=timer ;;
    *) die "unknown operation '$op' (hypercall gicd-read ipi timer timer-spin uart-read uart-fwd)" ;;
esac
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
ensure_qemu
"$ROOT/scripts/build.sh" >/dev/null
guest=$("$ROOT/scripts/build-guests.sh" bench)
dir=${keep:-$(mktemp -d)}
mkdir -p "$dir"
[ -z "$keep" ] && trap 'rm -rf "$dir"' EXIT
rm -f "$dir/trace" "$dir/qmp.sock"
cmdline="bench.ops=$ops bench.n=$n bench.timers=$(( n / 10 > 0 ? n / 10 : 1 ))"
start_text="NOTE bench: pausing" inside=()
if [ "$sleep" = on ]; then cmdline="$cmdline bench.pause-ms=3000"; else start_text="GUEST bench: START" inside=(--assume-inside); fi
[ "$op" = timer-spin ] && cmdline="$cmdline bench.timer-wait=spin"
vm="kernel=$guest,cmdline=$cmdline,vcpus=2,memory=16M"
extra=(--gic "$gic" --smp 2)
if [ "$pinned" = 1 ]; then extra+=(--append dom0.vcpus=1 --vm "$vm,pin=1"); else extra+=(--vm "$vm"); fi
python3 "$ROOT/scripts/lib/trace_window.py" "$dir/qmp.sock" "$start_text" "RESULT bench: $key=" "$dir/run.log" -- \
    "$ROOT/scripts/run.sh" --until-idle --timeout 1800 "${extra[@]}" -- \
    -icount "shift=0,sleep=$sleep" -accel tcg,one-insn-per-tb=on \
    -qmp "unix:$dir/qmp.sock,server=on,wait=off" -d nochain -D "$dir/trace" || true
measured=$(sed -n "s/.*RESULT bench: $key=\([0-9]*\).*/\1/p" "$dir/run.log" | head -n1)
echo "$op on GICv$gic, $([ "$pinned" = 1 ] && echo pinned || echo default): the guest measured ${measured:-?} (under sleep=$sleep and one instruction per TB)"
T=$ROOT/target
python3 "$ROOT/scripts/lib/trace_profile.py" "$dir/trace" --nm "$(llvm_tool nm)" --top "$top" \
    --hv "$T/aarch64-unknown-none-softfloat/release/hypervisor@0x40080000" \
    --dom0 "$T/aarch64-unknown-none/release/host-dom0@0x50080000" \
    --guest "$T/aarch64-unknown-none/release/guest-bench@0x40080000" \
    --within guest:bench_window_open guest:bench_window_close "${inside[@]}" \
    --from "$from" --to "$to" --inlined hv --inlined dom0 "${timeline[@]}"
