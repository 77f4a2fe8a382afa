#!/usr/bin/env bash
# Measures hypervisor costs as instructions per operation: every run is
# under QEMU with -icount shift=0 (virtual time counts instructions; QEMU
# virt's cortex-a72 counter runs at CNTFRQ = 62.5 MHz, 16 instructions a
# tick, and the bench guest converts ticks with CNTFRQ and checks the
# conversion on a loop of known length).
#
# The table: the bench test guest (guests/bench, 2 vCPUs) on QEMU virt with
# 2 CPUs, GICv3 and GICv2, each in
#   default: dom0 with its default vCPUs (one per CPU), the guest unpinned;
#   pinned:  dom0 with 1 vCPU (on CPU 0), the guest pinned to CPU 1;
# and bare (the same guest, no hypervisor), with the targets of issue 13 and
# Xen 4.17's figures on the same QEMU. Then the older figures: dom0's
# `bench` command, the mmio guest's forwarded reads, the ipi guest's SGI
# loop, the image size.
#
# scripts/bench.sh [--quick]   (--quick: the bench guest's table only)
# scripts/bench.sh --io        only the guest IO figures (scripts/lib/iobench.sh):
#   instructions per 4 KiB and 1 MiB virtio-blk read and write from a guest
#   (polled and interrupt-driven; under -icount, with what every CPU executed
#   counted by a QEMU plugin, tools/insn-count, spin-waiting apart), backend
#   hypercalls per request (dom0's iostat), the same in real time against
#   bare QEMU's virtio-blk, and per frame between two guests through dom0's
#   switch. IO_N (default 100) requests a row, IO_FRAMES (default 2000).
# scripts/bench.sh --io-profile [OP] [WAIT]   one row of --io (default read-4k
#   poll) profiled: per CPU, the functions its instructions ran in
# scripts/bench.sh --scale     only the scale figures (scripts/lib/scalebench.sh):
#   the bench guest's null hypercall, GIC distributor read, virtual IPI and
#   forwarded UART read with 1, 4 and 16 VMs (the others busy spinners) on
#   QEMU virt with 8 CPUs, GICv3, under -icount, and the time dom0 takes to
#   create and start 16 VMs. SCALE_N (default 500) iterations an operation.
# BENCH_N (default 2000) iterations per loop, BENCH_TIMERS (default 20) timers.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"
source "$ROOT/scripts/lib/iobench.sh"
source "$ROOT/scripts/lib/scalebench.sh"

if [ "${1:-}" = --io ]; then
    io_bench
    exit 0
fi
if [ "${1:-}" = --io-profile ]; then
    shift
    io_profile "$@"
    exit 0
fi
if [ "${1:-}" = --scale ]; then
    scale_bench
    exit 0
fi

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        *) die "usage: scripts/bench.sh [--quick | --io | --scale]" ;;
    esac
done
n=${BENCH_N:-2000} timers=${BENCH_TIMERS:-20}
ensure_qemu
img=$(sed -n 1p <<<"$("$ROOT/scripts/build.sh")")
guest=$("$ROOT/scripts/build-guests.sh" bench)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
args="bench.icount=1 bench.n=$n bench.timers=$timers"
keys=(hypercall gicd-read eoi ipi timer uart-read uart-fwd)

# figure LOG KEY: the bench guest's RESULT for KEY ("?" if it has none).
figure() {
    local v
    v=$(sed -n "s/.*RESULT bench: $2=\([0-9]*\).*/\1/p" "$1" | head -n1)
    echo "${v:-?}"
}

# run_bench NAME run.sh-ARGS...: the bench guest under the hypervisor.
run_bench() {
    local name=$1; shift
    "$ROOT/scripts/run.sh" --icount --until-idle --timeout 300 --smp 2 "$@" </dev/null >"$logs/$name.log" 2>&1 || true
    grep -q "GUEST bench: DONE .* 0 failed" "$logs/$name.log" ||
        { echo "bench.sh: $name: the bench guest did not finish cleanly:" >&2; grep -E "FAIL|\*\*\*|run.sh" "$logs/$name.log" >&2 || tail -n 20 "$logs/$name.log" >&2; }
}
vm="kernel=$guest,cmdline=$args,vcpus=2,memory=16M"
for gic in 3 2; do
    # Bare: no hypervisor, the same guest straight on QEMU virt (EL1).
    timeout 300 qemu-system-aarch64 -machine "virt,gic-version=$gic" -cpu cortex-a72 -smp 2 -m 64M \
        -display none -monitor none -serial stdio -icount shift=0,sleep=off \
        -kernel "$guest" -append "$args" </dev/null >"$logs/bare-v$gic.log" 2>&1 || true
    run_bench "default-v$gic" --gic "$gic" --vm "$vm"
    run_bench "pinned-v$gic" --gic "$gic" --append "dom0.vcpus=1" --vm "$vm,pin=1"
done

declare -A xen=([hypercall]=484 [gicd-read]=596 [eoi]=21 [ipi]="2,175" [timer]="1,065" [uart-read]="636 (emulated in Xen)" [uart-fwd]="636 (emulated in Xen)")
declare -A target=([hypercall]=120 [gicd-read]=200 [eoi]=25 [ipi]=1000 [timer]=400 [uart-read]=1000 [uart-fwd]=1000)
declare -A label=(
    [hypercall]="null hypercall round trip"
    [gicd-read]="trapped GIC distributor read"
    [eoi]="EOI"
    [ipi]="virtual IPI (SGI sent until the target vCPU handled it)"
    [timer]="virtual timer latency (excess over a 10 ms timer)"
    [uart-read]="guest UART status read (UARTFR, dom0's published value)"
    [uart-fwd]="guest UART read forwarded to dom0 and back (UARTRIS)"
)
hz=$(sed -n 's/.*RESULT bench: cntfrq=\([0-9]*\).*/\1/p' "$logs/default-v3.log" | head -n1)
cal=$(sed -n 's/.*calibration-ns=\([0-9]*\) calibration-insns=\([0-9]*\).*/\1 ns for \2 instructions/p' "$logs/default-v3.log" | head -n1)
echo "QEMU virt, 2 CPUs, -icount shift=0: instructions per operation (bench guest, 2 vCPUs; $n iterations a loop, $timers timers)"
echo "CNTFRQ ${hz:-?} Hz; calibration loop: ${cal:-?}"
echo "default: dom0 on its default vCPUs, guest unpinned; pinned: dom0.vcpus=1, guest pinned to CPU 1"
echo
echo "| operation | bare QEMU (v3 / v2) | GICv3 default | GICv3 pinned | GICv2 default | GICv2 pinned | target | met (v3 default) | Xen 4.17 |"
echo "|---|---|---|---|---|---|---|---|---|"
for k in "${keys[@]}"; do
    d3=$(figure "$logs/default-v3.log" "$k")
    met=no; [ "$d3" != "?" ] && [ "$d3" -le "${target[$k]}" ] && met=yes
    echo "| ${label[$k]} | $(figure "$logs/bare-v3.log" "$k") / $(figure "$logs/bare-v2.log" "$k") | $d3 | $(figure "$logs/pinned-v3.log" "$k") | $(figure "$logs/default-v2.log" "$k") | $(figure "$logs/pinned-v2.log" "$k") | ≤ ${target[$k]} | $met | ${xen[$k]} |"
done
echo
echo "(bare: hypercall is QEMU's own answer to hvc without EL2; the UART reads are QEMU's PL011)"
[ "$quick" = 1 ] && exit 0

# Older figures. Dom0's `bench` command: hypercall and GIC distributor read
# from dom0 (GICv3, 2 CPUs).
script=$logs/dom0.script
cat >"$script" <<'SCRIPT'
timeout 120
expect dom0> 
send bench
expect trapped GIC distributor read:
expect dom0> 
send poweroff
exit
SCRIPT
echo
echo "Other figures (GICv3):"
if python3 "$ROOT/scripts/lib/console_test.py" "$logs/dom0.log" "$script" -- \
        "$ROOT/scripts/run.sh" --icount --timeout 300 --gic 3 --smp 2 >/dev/null; then
    grep -E '^bench: (null|trapped)' "$logs/dom0.log" | sed 's/^bench: /  dom0: /'
else
    echo "  dom0 bench: the run failed"
fi
# A guest read forwarded to dom0's MMIO test device and back, timed by the
# mmio test guest: with dom0 on the same physical CPU, and on its own.
mmio=$("$ROOT/scripts/build-guests.sh" mmio)
forwarded() {
    "$ROOT/scripts/run.sh" --icount --until-idle --timeout 300 "$@" </dev/null 2>&1 |
        sed -n 's/.*RESULT mmio: forwarded-read-ns=\([0-9]*\).*/\1/p' | head -n1
}
one=$(forwarded --gic 3 --smp 1 --vm "kernel=$mmio,cmdline=mmio.bench=2000,memory=16M")
two=$(forwarded --gic 3 --smp 2 --append "dom0.vcpus=1" --vm "kernel=$mmio,cmdline=mmio.bench=2000,memory=16M,pin=1")
echo "  guest MMIO read forwarded to dom0 and back, 1 CPU shared with dom0: ${one:-?}"
echo "  guest MMIO read forwarded to dom0 and back, dom0 on its own CPU: ${two:-?}"
# A virtual IPI: the ipi guest's vCPU 0 sends SGIs to vCPU 1 (waiting in
# WFI), one after the other as each is handled: send to send, so it also
# counts vCPU 0 noticing.
ipi_img=$("$ROOT/scripts/build-guests.sh" ipi)
ipi=$("$ROOT/scripts/run.sh" --icount --until-idle --timeout 300 --gic 3 --smp 2 --append "dom0.vcpus=1" \
        --vm "kernel=$ipi_img,cmdline=ipi.count=10 ipi.bench=2000,vcpus=2,memory=16M" </dev/null 2>&1 |
    sed -n 's/.*RESULT ipi: sgi-ns=\([0-9]*\).*/\1/p' | head -n1)
echo "  virtual IPI, send to send (ipi guest): ${ipi:-?}"
echo "  hypervisor image: $(stat -c %s "$img") bytes ($(( $(stat -c %s "$img") / 1024 )) KiB)"
echo "  (the Linux boot ratio: scripts/test.sh linux-boot-ratio)"
