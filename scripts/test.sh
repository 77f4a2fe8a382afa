#!/usr/bin/env bash
# Runs every test: host unit tests, then boot tests under QEMU.
# Ends with "N passed, N failed"; the exit status is non-zero on any failure.
# scripts/test.sh [--host-only|--boot-only] [--fuzz[=SECONDS]] [--chaos|--chaos-long] [NAME-FILTER]
# --fuzz: also run every fuzz target SECONDS (default 3) each, after the
# host unit tests (scripts/fuzz.sh; about 40 s once cargo-fuzz is installed
# and the targets built, 3 minutes on a fresh machine).
# The chaos steps run 2 fixed seeds per GIC for 12 s each (about 70 s for
# both GICs); --chaos-long runs 4 random seeds per GIC for 60 s each
# instead (HV_CHAOS_SEEDS="..." and HV_CHAOS_MS=... choose them).
# --chaos: the filter `chaos` (only the chaos steps, and host tests so named).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"
source "$ROOT/scripts/lib/linux.sh"

mode=all filter="" fuzz_seconds="" chaos_long=0
for a in "$@"; do
    case "$a" in
        --host-only) mode=host ;;
        --boot-only) mode=boot ;;
        --fuzz) fuzz_seconds=3 ;;
        --fuzz=*) fuzz_seconds=${a#--fuzz=} ;;
        --chaos) filter=chaos ;;
        --chaos-long) chaos_long=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) filter=$a ;;
    esac
done

passed=0 failed=0 failures=()
LOGS=$ROOT/target/test-logs
mkdir -p "$LOGS"
started=$(date +%s)

pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); printf 'FAIL  %s\n' "$1"; }

cd "$ROOT"
ensure_toolchain 2>/dev/null || true
ensure_qemu

# ---- host unit tests -------------------------------------------------------
# The Raspberry Pi 4 tree as QEMU's raspi4b presents it (memory filled in),
# made from Debian's kernel package; not committed, fetched and cached.
if [ "$mode" != boot ]; then
    pi4_qemu_dtb=$CACHE/rpi4b-qemu.dtb
    if [ ! -s "$pi4_qemu_dtb" ]; then
        qemu-system-aarch64 -machine "raspi4b,dumpdtb=$pi4_qemu_dtb" -dtb "$(pi4_dtb)" \
            -kernel /dev/null -display none >/dev/null 2>&1 || true
    fi
    export HV_PI4_DTB=$pi4_qemu_dtb HV_PI4_DEBIAN_DTB=$(pi4_dtb) HV_REQUIRE_FIXTURES=1
    log=$LOGS/host.log
    cargo test --workspace --color never ${filter:+"$filter"} >"$log" 2>&1
    status=$?
    # One PASS/FAIL line per unit test, counted with the boot tests.
    # The verdict is the last word: doc-test names have spaces in them
    # ("virtio/src/lib.rs - (line 30)").
    while read -r line; do
        verdict=${line##* } name=${line% *}
        if [ "$verdict" = ok ]; then pass "unit $name"; else fail "unit $name"; fi
    done < <(sed -n 's/^test \(.*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$log")
    if [ "$status" -ne 0 ]; then
        grep -q '^test .* FAILED$' "$log" || fail "cargo test (build or harness failure)"
        echo "---- cargo test output ($log) ----"; cat "$log"; echo "----"
    fi
fi

# ---- fuzzing (--fuzz) ------------------------------------------------------
# A bounded run of every fuzz target; each prints its own PASS/FAIL line.
if [ -n "$fuzz_seconds" ] && [ "$mode" != boot ]; then
    while read -r line; do
        case "$line" in
            "PASS  "*) pass "${line#PASS  }" ;;
            "FAIL  "*) fail "${line#FAIL  }" ;;
            *) [[ "$line" =~ ^[0-9]+\ passed ]] || echo "$line" ;;
        esac
    done < <("$ROOT/scripts/fuzz.sh" --time "$fuzz_seconds" 2>&1)
fi

# ---- boot tests under QEMU -------------------------------------------------
# boot_test NAME EXPECT_STATUS "LINE..." -- run.sh arguments
# Boots with run.sh (which times out on its own), then checks the exit
# status and that each expected text appears in the serial log.
boot_test() {
    local name=$1 want_status=$2; shift 2
    local expects=()
    while [ "$1" != -- ]; do expects+=("$1"); shift; done
    shift
    [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && return
    local log=$LOGS/boot-$name.log
    "$ROOT/scripts/run.sh" "$@" >"$log" 2>&1 </dev/null
    local status=$? problems=()
    [ "$status" = "$want_status" ] || problems+=("exit status $status, expected $want_status")
    local e
    for e in "${expects[@]}"; do
        if [[ "$e" == '!'* ]]; then
            # "!TEXT": TEXT must not appear.
            ! grep -qF -- "${e#!}" "$log" || problems+=("unexpected: $(grep -F -m3 -- "${e#!}" "$log" | tr '\n' '|')")
        else
            grep -qF -- "$e" "$log" || problems+=("missing: $e")
        fi
    done
    if [ ${#problems[@]} -eq 0 ]; then
        pass "boot $name"
    else
        fail "boot $name"
        printf '      %s\n' "${problems[@]}"
        echo "---- serial log ($log) ----"; cat "$log"; echo "----"
    fi
}

# wrong_el_test NAME "LINE" -- run.sh arguments
# The hypervisor parks when started below EL2; wait for its message, then
# end QEMU.
wrong_el_test() {
    local name=$1 expect=$2; shift 3
    [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && return
    local log=$LOGS/boot-$name.log
    setsid "$ROOT/scripts/run.sh" "$@" >"$log" 2>&1 </dev/null &
    local pid=$! i
    for i in $(seq 1 300); do
        grep -qF -- "$expect" "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    if grep -qF -- "$expect" "$log"; then pass "boot $name"; else
        fail "boot $name"; echo "      missing: $expect"
        echo "---- serial log ($log) ----"; cat "$log"; echo "----"
    fi
}

# dom0_test NAME CPUS GIC HVADDR END -- run.sh arguments
# Boots dom0 and drives its shell (scripts/tests/dom0-shell.script); END is
# "exit" (the run must end with status 0) or a last line to wait for (the
# machine has no PSCI to switch itself off).
dom0_test() {
    local name=$1 cpus=$2 gic=$3 hvaddr=$4 end=$5; shift 6
    [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && return
    local script=$LOGS/$name.script
    sed -e "s/@CPUS@/$cpus/g" -e "s/@GIC@/$gic/g" -e "s/@HVADDR@/$hvaddr/g" \
        "$ROOT/scripts/tests/dom0-shell.script" >"$script"
    if [ "$end" = exit ]; then echo "exit" >>"$script"; else echo "expect $end" >>"$script"; fi
    local out
    if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$name.log" "$script" -- \
            "$ROOT/scripts/run.sh" --timeout 90 "$@"); then
        pass "boot $name"
    else
        fail "boot $name"; echo "$out"
    fi
}

# disk_test NAME: dom0's virtio-blk driver (scripts/tests/disk.script) on a
# fresh 16 MiB image: a string at sector 10 must read back, `disk selftest 20`
# must leave sector 20's original (random) bytes in the host file; then
# with QEMU's blkdebug failing the image's first flush, the selftest must
# report the device's I/O error for its flush (so FLUSH goes down to the
# host's block layer), and a second selftest must pass.
disk_test() {
    local name=$1
    [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && return
    local img=$LOGS/$name.img orig=$LOGS/$name.s20 cfg=$LOGS/$name-flush.cfg out problems=()
    rm -f "$img" && truncate -s 16M "$img" &&
        printf 'rusthv disk test: sector 10' | dd of="$img" bs=512 seek=10 conv=notrunc status=none &&
        head -c 512 /dev/urandom >"$orig" && dd if="$orig" of="$img" bs=512 seek=20 conv=notrunc status=none ||
        { fail "boot $name"; echo "      cannot make $img"; return; }
    printf '[inject-error]\nevent = "flush_to_disk"\nerrno = "5"\nonce = "on"\n' >"$cfg"
    sector() { dd if="$img" bs=512 skip="$1" count=1 status=none; }
    if ! out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$name.log" "$ROOT/scripts/tests/disk.script" -- \
            "$ROOT/scripts/run.sh" --smp 2 --timeout 90 --disk "$img"); then
        problems+=("console (disk.script):" "$out")
    fi
    sector 20 | cmp -s - "$orig" || problems+=("host file: sector 20 does not hold its original bytes after the selftest")
    if ! out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$name-flush.log" "$ROOT/scripts/tests/disk-flush.script" -- \
            "$ROOT/scripts/run.sh" --smp 2 --timeout 90 --disk "blkdebug:$cfg:$img"); then
        problems+=("console (disk-flush.script):" "$out")
    fi
    sector 20 | cmp -s - "$orig" || problems+=("host file: sector 20 not restored after the failed-flush selftest")
    sector 10 | grep -qa '^rusthv disk test: sector 10' || problems+=("host file: sector 10 changed")
    if [ ${#problems[@]} -eq 0 ]; then pass "boot $name"; else
        fail "boot $name"; printf '      %s\n' "${problems[@]}"
    fi
}

# spin_iterations LOG VM: iterations a spinning VM reported ("RESULT spin").
spin_iterations() {
    # Not anchored: dom0 may have redrawn its prompt on the same line.
    sed -n "s/.*$2: RESULT spin: iterations=\([0-9]*\).*/\1/p" "$1" | head -n1
}

# cpu_ms LOG VM: the VM's CPU time from the hypervisor's end-of-run summary.
cpu_ms() {
    sed -n "s/.*\*\*\* guest $2 (VM [0-9]*): .*CPU time \([0-9]*\) ms.*/\1/p" "$1" | head -n1
}

# within_percent A B P: A and B differ by at most P % of their mean.
within_percent() {
    local a=$1 b=$2 p=$3
    [ -n "$a" ] && [ -n "$b" ] && [ $(( (a > b ? a - b : b - a) * 200 )) -le $(( (a + b) * p )) ]
}

# Load balancing (QEMU virt, 8 CPUs): 12 short spinning VMs pinned three
# to each of CPUs 0-3 keep those busy while 8 longer, unpinned spinners
# are created: placement puts them on the idle CPUs 4-7, two each. Once
# the pinned ones are done (2.5 s), CPUs 0-3 idle and must pull the
# spinners that wait on 4-7, so that every CPU ends up with one: the time
# each CPU spent running vCPUs once the first guest ran (the hypervisor's
# end-of-run summary) within 15 % of the others', and a migration. With `hv.no_balance` CPUs 0-3 stay
# idle for the second half (see README "Scheduling"). About 20 s.
sched_balance_test() {
    local G=$1 name=sched-balance log
    # Only when asked for by name: on a 2-core host shared with other work,
    # QEMU's 8 CPUs start and end the spinners seconds apart and the 15 %
    # is not yet met reliably (see README "Load balancing").
    [[ "$filter" == *balance* ]] || return 0
    [[ "$name" != *"$filter"* ]] && return
    log=$LOGS/boot-$name.log
    local vms=() i
    for i in $(seq 0 11); do
        vms+=(--vm "kernel=$G/spin.img,name=hog$i,cmdline=spin.windows=25,memory=16M,pin=$((i / 3))")
    done
    for i in $(seq 0 7); do
        vms+=(--vm "kernel=$G/spin.img,name=spin$i,cmdline=spin.windows=50,memory=16M")
    done
    "$ROOT/scripts/run.sh" --machine virt --gic 3 --smp 8 --until-idle --timeout 90 ${SCHED_BALANCE_APPEND:+--append "$SCHED_BALANCE_APPEND"} \
        "${vms[@]}" >"$log" 2>&1 </dev/null
    local line busy min max moved
    line=$(sed -n 's/\r//; s/.*\*\*\* CPU busy time since the first guest ran (ms):\(.*\)$/\1/p' "$log" | head -n1)
    busy=$(echo "$line" | grep -o 'cpu[0-9]*=[0-9]*' | cut -d= -f2)
    moved=$(echo "$line" | sed -n 's/.*; \([0-9]*\) vCPU migration.*/\1/p')
    min=$(echo "$busy" | sort -n | head -n1) max=$(echo "$busy" | sort -n | tail -n1)
    echo "      CPU busy time since the first guest ran (ms):${line:- (none reported)}"
    if [ "$(echo "$busy" | grep -c .)" -eq 8 ] && within_percent "$min" "$max" 15 && [ "${moved:-0}" -ge 1 ] &&
        [ "$(grep -c 'RESULT spin: iterations=' "$log")" -eq 20 ] && grep -q "all with SYSTEM_OFF" "$log"; then
        pass "boot $name"
    else
        fail "boot $name"; echo "      want all 20 spinners done with SYSTEM_OFF, 8 CPUs' busy times within 15 % of each other, a migration"
        echo "---- serial log ($log) ----"; cat "$log"; echo "----"
    fi
}

# scale_test NAME GIC VCPUS SECONDS: 16 VMs of VCPUS vCPUs each on QEMU
# virt with 8 CPUs, a mixed load for SECONDS of guest time: 8 spinners
# (spin.vcpus: every vCPU spins) in pairs of weights 2:1 (different
# slice lengths), each pair pinned to one of CPUs 4-7; 4 disk guests writing, reading back and
# comparing random runs of sectors on their own 4 MiB slices of dom0's
# disk; 2 pairs of network guests exchanging frames through dom0's switch
# for as long (send-for/recv-for). The disk and network guests are not
# pinned. Dom0's shell types `list` every 2 s throughout; check_scale.py
# then checks, from the tables and when they arrived, that the shell
# answered (a table at least every 5 s), that every VM's CPU time grew
# over each 2 s, that the spinners sharing a CPU got CPU time in
# proportion to their weights within 10 % while they all spun, and every
# guest's own verdicts (see its docstring). 38-65 s and 29-39 s.
# Only when asked for by name (`scripts/test.sh --boot-only scale`): in a
# full run both failed because dom0's shell stopped taking typed input
# while the guests were busy (it came back once they were done), which
# 16 runs of their own showed at most once (README "What is missing").
scale_test() {
    local name=$1 gic=$2 vcpus=$3 secs=$4 G=$ROOT/target/guests
    [[ "$filter" == *scale* ]] || return 0
    [[ "$name" != *"$filter"* ]] && return
    local cfg=$LOGS/$name.toml script=$LOGS/$name.script img=$LOGS/$name.img out k
    local weights=("512 256" "256 128" "1024 512" "768 384")
    rm -f "$img" && truncate -s 16M "$img" || { fail "boot $name"; echo "      cannot make $img"; return; }
    vm_entry() { # NAME KERNEL CMDLINE [EXTRA LINES]
        printf '[[vm]]\nname = "%s"\nkernel = "%s"\nmemory = "16M"\nvcpus = %s\ncmdline = "%s"\nautostart = true\n' "$1" "$2" "$vcpus" "$3"
        shift 3; local l; for l in "$@"; do printf '%s\n' "$l"; done
    }
    # The spinners first: dom0 creates them within some 100 ms, so that
    # they spin side by side for nearly all of their time.
    {
        for k in 0 1 2 3; do
            local w=(${weights[$k]})
            vm_entry "spin${k}a" "$G/spin.img" "spin.vcpus=$vcpus spin.windows=$((secs * 10))" "weight = ${w[0]}" "pin = [$((k + 4))]"
            vm_entry "spin${k}b" "$G/spin.img" "spin.vcpus=$vcpus spin.windows=$((secs * 10))" "weight = ${w[1]}" "pin = [$((k + 4))]"
        done
        for k in 0 1 2 3; do
            vm_entry "disk$k" "$G/virtio.img" "virtio.blk=stress:$((secs * 1000))" '[[vm.disk]]' "offset = \"$((k * 4))M\"" 'size = "4M"'
        done
        for k in 0 1; do
            local smac=52:54:00:00:30:0$((2 * k)) rmac=52:54:00:00:30:0$((2 * k + 1))
            vm_entry "netsend$k" "$G/virtio.img" "virtio.net=send-for:$((secs * 1000)) virtio.net.peer=$rmac" '[[vm.net]]' "mac = \"$smac\""
            vm_entry "netrecv$k" "$G/virtio.img" "virtio.net=recv-for:$((secs * 1000)) virtio.net.peer=$smac" '[[vm.net]]' "mac = \"$rmac\""
        done
    } >"$cfg"
    printf '%s\n' "timeout 90" "expect autostart: 16 of 16 VM(s) created and started" "every 2 list" \
        "timeout $((secs + 60))" "count 16 : DONE " "every off" "send list" "expect   ID NAME" "expect dom0> " \
        "send poweroff" "exit" >"$script"
    local t0=$SECONDS
    if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$name.log" "$script" -- \
            "$ROOT/scripts/run.sh" --machine virt --gic "$gic" --smp 8 --timeout $((secs + 150)) --disk "$img" --config "$cfg"); then
        if out=$(python3 "$ROOT/scripts/lib/check_scale.py" "$LOGS/boot-$name.log" "$cfg" 5); then
            pass "boot $name ($((SECONDS - t0)) s)"; echo "      $out" | sed 's/; /\n      /g'
        else
            fail "boot $name"; echo "      $out" | sed 's/; /\n      /g'
        fi
    else
        fail "boot $name"; echo "$out"
    fi
}

guest_tests() {
    if ! "$ROOT/scripts/build-guests.sh" >"$LOGS/guests-build.log" 2>&1; then
        fail "build test guests"; cat "$LOGS/guests-build.log"; return
    fi
    local G=$ROOT/target/guests
    local common=("!: FAIL" "!*** hypervisor panic" "!*** unexpected exception")
    # The functional guests side by side, on 4 physical CPUs (virt GICv3).
    boot_test guests-virt-gicv3-smp4 0 "${common[@]}" \
        "GUEST platform: DONE 10 passed, 0 failed" "GUEST psci: DONE" "GUEST timer: DONE 3 passed, 0 failed" "TEST timer: pending-state: PASS" "TEST timer: disabled-raises-nothing: PASS" \
        "GUEST ipi: DONE" "GUEST hvcall: DONE" "GUEST isolation: DONE" "GUEST pattern: DONE 2 passed, 0 failed" \
        "TEST isolation: fetch-hole: PASS" "TEST isolation: walk-hole-load: PASS" "TEST isolation: walk-hole-fetch: PASS" \
        "GUEST idle: DONE 1 passed, 0 failed" "GUEST mmio: DONE 7 passed, 0 failed" "TEST mmio: load-pair: PASS" "all with SYSTEM_OFF" \
        -- --machine virt --gic 3 --smp 4 --until-idle --timeout 150 \
        --vm "kernel=$G/mmio.img,cmdline=mmio.bench=100,memory=16M" \
        --vm "kernel=$G/platform.img,cmdline=expect.memory=32M expect.vcpus=2 expect.gic=3,vcpus=2,memory=32M" \
        --vm "kernel=$G/psci.img,vcpus=3,memory=16M" \
        --vm "kernel=$G/timer.img,cmdline=timer.hz=1000 timer.ms=500,memory=16M" \
        --vm "kernel=$G/ipi.img,cmdline=ipi.count=100,vcpus=3,memory=16M" \
        --vm "kernel=$G/hvcall.img,memory=16M" \
        --vm "kernel=$G/isolation.img,memory=16M" \
        --vm "kernel=$G/pattern.img,cmdline=pattern.seconds=4 pattern.interval-ms=200,memory=16M" \
        --vm "kernel=$G/idle.img,cmdline=idle.seconds=2,memory=16M"
    # Everything on one physical CPU with dom0 (virt GICv2).
    boot_test guests-virt-gicv2-smp1 0 "${common[@]}" \
        "GUEST platform: DONE 10 passed, 0 failed" "GUEST psci: DONE" "GUEST timer: DONE 3 passed, 0 failed" "TEST timer: pending-state: PASS" "TEST timer: disabled-raises-nothing: PASS" \
        "GUEST ipi: DONE" "GUEST hvcall: DONE" "GUEST isolation: DONE" "GUEST mmio: DONE 7 passed, 0 failed" "TEST mmio: load-pair: PASS" "all with SYSTEM_OFF" \
        "TEST isolation: fetch-hole: PASS" "TEST isolation: walk-hole-load: PASS" "TEST isolation: walk-hole-fetch: PASS" \
        -- --machine virt --gic 2 --smp 1 --until-idle --timeout 150 \
        --vm "kernel=$G/mmio.img,cmdline=mmio.bench=100,memory=16M" \
        --vm "kernel=$G/platform.img,cmdline=expect.memory=32M expect.vcpus=2 expect.gic=2,vcpus=2,memory=32M" \
        --vm "kernel=$G/psci.img,vcpus=2,memory=16M" \
        --vm "kernel=$G/timer.img,cmdline=timer.hz=100 timer.ms=500,memory=16M" \
        --vm "kernel=$G/ipi.img,cmdline=ipi.count=50,vcpus=2,memory=16M" \
        --vm "kernel=$G/hvcall.img,memory=16M" \
        --vm "kernel=$G/isolation.img,memory=16M"
    # Eight physical CPUs, 8-vCPU guests, dom0 with 2 vCPUs, and a kernel
    # in the raw format (the Image header's magic wiped: loaded 64 KiB above
    # the RAM base and entered at its first byte, as QEMU does).
    local raw=$LOGS/platform.raw
    cp "$G/platform.img" "$raw" && printf '\0\0\0\0' | dd of="$raw" bs=1 seek=56 conv=notrunc status=none
    boot_test guests-virt-smp8 0 "${common[@]}" "CPUs: 8 of 8 online" \
        "GUEST psci: DONE 49 passed, 0 failed" "GUEST ipi: DONE 8 passed, 0 failed" \
        "rawplatform: GUEST platform: DONE 10 passed, 0 failed" "*** guest rawplatform (VM 3): SystemOff (syndrome 0x0, PC 0x40010" \
        "all with SYSTEM_OFF" \
        -- --machine virt --gic 3 --smp 8 --until-idle --timeout 120 --append "dom0.vcpus=2" \
        --vm "kernel=$G/psci.img,vcpus=8,memory=16M" \
        --vm "kernel=$G/ipi.img,cmdline=ipi.count=50,vcpus=8,memory=16M" \
        --vm "kernel=$raw,name=rawplatform,cmdline=expect.memory=16M expect.vcpus=1,memory=16M"
    # The Raspberry Pi 4 (GIC-400, spin-table CPUs underneath).
    boot_test guests-raspi4b 0 "${common[@]}" \
        "GUEST platform: DONE 10 passed, 0 failed" "GUEST psci: DONE" "GUEST timer: DONE 3 passed, 0 failed" "TEST timer: pending-state: PASS" "TEST timer: disabled-raises-nothing: PASS" \
        "GUEST ipi: DONE" "GUEST isolation: DONE" "GUEST mmio: DONE 7 passed, 0 failed" "TEST mmio: load-pair: PASS" "all with SYSTEM_OFF" \
        "TEST isolation: fetch-hole: PASS" "TEST isolation: walk-hole-load: PASS" "TEST isolation: walk-hole-fetch: PASS" \
        -- --machine raspi4b --until-idle --timeout 150 \
        --vm "kernel=$G/mmio.img,cmdline=mmio.bench=100,memory=16M" \
        --vm "kernel=$G/platform.img,cmdline=expect.memory=32M expect.vcpus=2 expect.gic=2,vcpus=2,memory=32M" \
        --vm "kernel=$G/psci.img,vcpus=3,memory=16M" \
        --vm "kernel=$G/timer.img,cmdline=timer.hz=1000 timer.ms=500,memory=16M" \
        --vm "kernel=$G/ipi.img,cmdline=ipi.count=100,vcpus=3,memory=16M" \
        --vm "kernel=$G/isolation.img,memory=16M"
    # The bench guest in its short mode, under -icount on GICv2 (its
    # calibration check holds, every figure of scripts/bench.sh is produced;
    # the figures themselves are not judged here).
    boot_test bench-guest 0 "${common[@]}" "TEST bench: icount: PASS" "RESULT bench: hypercall=" \
        "RESULT bench: gicd-read=" "RESULT bench: eoi=" "RESULT bench: ipi=" "RESULT bench: timer=" \
        "RESULT bench: uart-read=" "RESULT bench: uart-fwd=" "GUEST bench: DONE 10 passed, 0 failed" "all with SYSTEM_OFF" \
        -- --machine virt --gic 2 --smp 2 --icount --until-idle --timeout 120 \
        --vm "kernel=$G/bench.img,cmdline=bench.icount=1 bench.n=50 bench.timers=3,vcpus=2,memory=16M"
    # Overcommit as a bare guest sees it (guests/pvtime): the SMCCC answers
    # for paravirtualised time, its structures, and stolen time while its
    # two vCPUs share one CPU. (Its WFE check is off: QEMU never traps WFE.)
    boot_test guests-pvtime 0 "${common[@]}" "GUEST pvtime: DONE 8 passed, 0 failed" "TEST pvtime: steal: PASS" \
        "TEST pvtime: pv-features: PASS" "RESULT pvtime: busy-count=" "all with SYSTEM_OFF" \
        -- --machine virt --gic 3 --smp 2 --until-idle --timeout 90 \
        --vm "kernel=$G/pvtime.img,vcpus=2,memory=16M,pin=1"
    # Pointer-authentication keys are per vCPU: two VMs pinned to one CPU
    # of a -cpu max machine set different keys and check for 2 s that they
    # keep theirs (and were descheduled meanwhile); GICv3 and GICv2.
    local pgic
    for pgic in 3 2; do
        boot_test guests-pauth-gicv$pgic 0 "${common[@]}" "all with SYSTEM_OFF" \
            "pauthA: TEST pauth: keys-kept: PASS" "pauthB: TEST pauth: keys-kept: PASS" \
            "pauthA: GUEST pauth: DONE 2 passed, 0 failed" "pauthB: GUEST pauth: DONE 2 passed, 0 failed" \
            -- --machine virt --gic "$pgic" --smp 2 --cpu max --until-idle --timeout 120 \
            --vm "kernel=$G/pauth.img,name=pauthA,cmdline=pauth.seed=1,memory=16M,pin=1" \
            --vm "kernel=$G/pauth.img,name=pauthB,cmdline=pauth.seed=2,memory=16M,pin=1"
    done
    # Dom0's shell: crash reporting, pause/unpause/destroy, 100 cycles.
    if [ -z "$filter" ] || [[ vm-control == *"$filter"* ]]; then
        local out
        if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-vm-control.log" "$ROOT/scripts/tests/vm-control.script" -- \
                "$ROOT/scripts/run.sh" --smp 2 --timeout 180 --config "$ROOT/scripts/tests/control.toml"); then
            pass "boot vm-control"
        else
            fail "boot vm-control"; echo "$out"
        fi
    fi
    # The toolstack at the limits on a 512 MiB machine: a VM with 9 vCPUs
    # refused with the reason; 64 MiB guests created until the hypervisor
    # is out of memory (the message says how much was asked and is free), a
    # smaller one still fits, destroying them gives every page back, and a
    # guest spinning throughout ran in every 100 ms window. About 70 s.
    if [ -z "$filter" ] || [[ vm-limits == *"$filter"* ]]; then
        local out
        if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-vm-limits.log" "$ROOT/scripts/tests/vm-limits.script" -- \
                "$ROOT/scripts/run.sh" --smp 2 --memory 512M --timeout 240 --config "$ROOT/scripts/tests/limits.toml" \
                --file "limits-big.toml=$ROOT/scripts/tests/limits-big.toml"); then
            pass "boot vm-limits"
        else
            fail "boot vm-limits"; echo "$out"
        fi
    fi
    # Dom0's emulated PL011 and console multiplexer: the console guest's
    # output prefixed, `console VM`, typed input polled and by interrupt,
    # Ctrl-a three times, `log VM` (scripts/tests/console.script). Not
    # --until-idle: run.sh then gives QEMU no stdin. The guest's SYSTEM_OFF
    # is checked with `info`, then dom0 powers off.
    if [ -z "$filter" ] || [[ guest-console == *"$filter"* ]]; then
        local out
        if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-guest-console.log" "$ROOT/scripts/tests/console.script" -- \
                "$ROOT/scripts/run.sh" --smp 2 --timeout 120 --vm "kernel=$G/console.img,name=console,memory=16M"); then
            pass "boot guest-console"
        else
            fail "boot guest-console"; echo "$out"
        fi
    fi
    # virtio devices served by dom0 (guests/virtio, scripts/tests/virtio-*).
    # virtio-blk-persist: on a fresh 16 MiB disk, one machine run writes a
    # pattern (random seed) through a VM's slice of dom0's disk and flushes;
    # a second run (the whole machine restarted on the same image) finds it,
    # and the host file has data only inside the slice (1 MiB at 1 MiB);
    # then, in one machine run, dom0's shell destroys the writer VM and
    # creates a checker on the same slice (virtio-recreate.script, not
    # --until-idle: run.sh then gives QEMU no stdin). The two runs again on
    # GICv2 with 1 CPU. virtio-net-1000: two VMs exchange 1000 frames
    # through dom0's switch, windowed and acknowledged, none lost (and again
    # on GICv2 with 1 CPU).
    # virtio-hostile: a VM breaks its own devices' queues in every defined
    # way while another VM's disk IO goes on; that one must still be busy
    # when the hostile one is done.
    # virtio-blk-bench: the disk bench mode of scripts/bench.sh --io, as a
    # smoke run.
    # (Each step filters by its own name; e.g. `virtio` runs them all.)
    if [ -z "$filter" ] || [[ "$filter" == virtio* ]] || [[ virtio-blk-persist-gicv2-write-check-host-file-recreate == *"$filter"* ]] ||
        [[ virtio-net-1000-hostile-overlap == *"$filter"* ]]; then
        local vcommon=("${common[@]}" "all with SYSTEM_OFF") vseed vimg vout vgic vname vargs
        virtio_cfg() { # OUT SEED WRITER-AUTOSTART CHECKER-AUTOSTART
            sed -e "s/@SEED@/$2/g" -e "s/@WRITER@/$3/" -e "s/@CHECKER@/$4/" -e "s|\.\./\.\./target/guests/|$G/|" \
                "$ROOT/scripts/tests/virtio-persist.toml" >"$1"
        }
        for vgic in 3 2; do
            vname=virtio-blk-persist vargs=(--gic 3 --smp 2)
            [ "$vgic" = 2 ] && vname=virtio-blk-persist-gicv2 vargs=(--gic 2 --smp 1)
            vseed=$((RANDOM * 32768 + RANDOM)) vimg=$LOGS/$vname.img
            rm -f "$vimg" && truncate -s 16M "$vimg" || { fail "boot $vname"; echo "      cannot make $vimg"; continue; }
            virtio_cfg "$LOGS/$vname-write.toml" "$vseed" true false
            virtio_cfg "$LOGS/$vname-check.toml" "$vseed" false true
            boot_test "$vname-write" 0 "${vcommon[@]}" "vblk-writer: RESULT virtio: blk-written seed=$vseed" \
                "vblk-writer: TEST virtio: blk-past-end: PASS" "vblk-writer: GUEST virtio: DONE 5 passed, 0 failed" \
                -- "${vargs[@]}" --until-idle --timeout 60 --disk "$vimg" --config "$LOGS/$vname-write.toml"
            boot_test "$vname-check" 0 "${vcommon[@]}" \
                "vblk-checker: TEST virtio: blk-check: PASS 64 sectors hold the pattern of seed $vseed" \
                "vblk-checker: TEST virtio: blk-ro: PASS" "vblk-checker: GUEST virtio: DONE 6 passed, 0 failed" \
                -- "${vargs[@]}" --until-idle --timeout 60 --disk "$vimg" --config "$LOGS/$vname-check.toml"
            if [ -z "$filter" ] || [[ "$vname-host-file" == *"$filter"* ]]; then
                # Zeros outside the slice, data at its start.
                if cmp -s -n $((1 << 20)) "$vimg" /dev/zero && cmp -s -i $((2 << 20)) -n $((14 << 20)) "$vimg" /dev/zero &&
                    ! cmp -s -i $((1 << 20)) -n 32768 "$vimg" /dev/zero; then
                    pass "boot $vname-host-file"
                else
                    fail "boot $vname-host-file"; echo "      $vimg: want data in 1M..1M+32K and zeros outside 1M..2M"
                fi
            fi
        done
        vname=virtio-blk-persist-recreate
        if [ -z "$filter" ] || [[ "$vname" == *"$filter"* ]]; then
            vseed=$((RANDOM * 32768 + RANDOM)) vimg=$LOGS/$vname.img
            rm -f "$vimg" && truncate -s 16M "$vimg"
            virtio_cfg "$LOGS/$vname.toml" "$vseed" false false
            sed "s/@SEED@/$vseed/g" "$ROOT/scripts/tests/virtio-recreate.script" >"$LOGS/$vname.script"
            if vout=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$vname.log" "$LOGS/$vname.script" -- \
                    "$ROOT/scripts/run.sh" --smp 2 --timeout 90 --disk "$vimg" --config "$LOGS/$vname.toml"); then
                if grep -qF ": FAIL" "$LOGS/boot-$vname.log"; then
                    fail "boot $vname"; grep -F ": FAIL" "$LOGS/boot-$vname.log"
                else
                    pass "boot $vname"
                fi
            else
                fail "boot $vname"; echo "$vout"
            fi
        fi
        boot_test virtio-net-1000 0 "${vcommon[@]}" \
            "vnet-send: TEST virtio: net-send: PASS 1000 of 1000 frames acknowledged" \
            "vnet-recv: TEST virtio: net-recv: PASS 1000 frames intact" "vnet-recv: TEST virtio: net-flow-control: PASS" \
            "vnet-send: GUEST virtio: DONE 2 passed, 0 failed" "vnet-recv: GUEST virtio: DONE 3 passed, 0 failed" \
            -- --gic 3 --smp 2 --until-idle --timeout 60 --config "$ROOT/scripts/tests/virtio-net.toml"
        boot_test virtio-net-1000-gicv2 0 "${vcommon[@]}" \
            "vnet-recv: TEST virtio: net-recv: PASS 1000 frames intact" "vnet-recv: TEST virtio: net-flow-control: PASS" \
            "vnet-send: GUEST virtio: DONE 2 passed, 0 failed" "vnet-recv: GUEST virtio: DONE 3 passed, 0 failed" \
            -- --gic 2 --smp 1 --until-idle --timeout 60 --config "$ROOT/scripts/tests/virtio-net.toml"
        vname=virtio-hostile vimg=$LOGS/virtio-hostile.img
        if [ -z "$filter" ] || [[ "$vname" == *"$filter"* ]]; then
            rm -f "$vimg" && truncate -s 16M "$vimg"
            boot_test "$vname" 0 "${vcommon[@]}" "vhostile: TEST virtio: hostile-recovered: PASS" \
                "vhostile: GUEST virtio: DONE 17 passed, 0 failed" "vstress: TEST virtio: blk-stress: PASS" \
                "vstress: GUEST virtio: DONE 2 passed, 0 failed" \
                -- --gic 3 --smp 2 --until-idle --timeout 60 --disk "$vimg" --config "$ROOT/scripts/tests/virtio-hostile.toml"
            # Overlap: the well-behaved VM reports after the hostile one is done.
            local vh vs
            vh=$(grep -anF "vhostile: GUEST virtio: DONE" "$LOGS/boot-$vname.log" | head -n1 | cut -d: -f1)
            vs=$(grep -anF "vstress: TEST virtio: blk-stress:" "$LOGS/boot-$vname.log" | head -n1 | cut -d: -f1)
            if [ -n "$vh" ] && [ -n "$vs" ] && [ "$vh" -lt "$vs" ]; then pass "boot $vname-overlap"; else
                fail "boot $vname-overlap"; echo "      vstress's blk-stress result (line ${vs:-none}) should follow vhostile's DONE (line ${vh:-none})"
            fi
        fi
        # virtio-blk-bench: the guest's disk bench mode (the figures are
        # scripts/bench.sh --io's) runs to its end on a slice of dom0's disk
        # and prints a figure for each kind of request (about 15 s).
        vname=virtio-blk-bench vimg=$LOGS/virtio-blk-bench.img
        if [ -z "$filter" ] || [[ "$vname" == *"$filter"* ]]; then
            rm -f "$vimg" && truncate -s 16M "$vimg"
            boot_test "$vname" 0 "${vcommon[@]}" "vbench: TEST virtio: blk-bench: PASS" \
                "vbench: RESULT virtio: blk-bench op=read-4k wait=poll" "vbench: RESULT virtio: blk-bench op=write-1m wait=irq" \
                "vbench: GUEST virtio: DONE 2 passed, 0 failed" \
                -- --gic 3 --smp 2 --until-idle --timeout 60 --disk "$vimg" --config "$ROOT/scripts/tests/virtio-bench.toml"
        fi
    fi
    # dom0 serves guests while its shell sleeps (io-busy-shell): a guest
    # floods its PL011, another does verified disk IO; both must make
    # progress during `sleep 10` (their lines appear before the prompt
    # comes back) and every flood line must arrive, intact and in order
    # (io-busy-flood-complete).
    vname=io-busy-shell
    if [ -z "$filter" ] || [[ "$vname-flood-complete" == *"$filter"* ]]; then
        vimg=$LOGS/$vname.img
        rm -f "$vimg" && truncate -s 16M "$vimg"
        sed -e "s|\.\./\.\./target/guests/|$G/|" "$ROOT/scripts/tests/io-busy.toml" >"$LOGS/$vname.toml"
        if vout=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$vname.log" "$ROOT/scripts/tests/io-busy.script" -- \
                "$ROOT/scripts/run.sh" --smp 2 --timeout 300 --disk "$vimg" --config "$LOGS/$vname.toml"); then
            if vout=$(python3 "$ROOT/scripts/lib/check_busy_sleep.py" "$LOGS/boot-$vname.log" \
                    "blkio: NOTE virtio: blk-stress:" "blkio: TEST virtio: blk-stress: PASS"); then
                pass "boot $vname-flood-complete ($vout)"
            else
                fail "boot $vname-flood-complete"; echo "      $vout"
            fi
        else
            fail "boot $vname"; echo "$vout"
        fi
    fi
    # dom0's services are independent of its shell (shell-busy): while
    # `flood` writes and `bouncer` resets itself over and over, the shell
    # runs `sleep 10`, then `cycle 600 cyc`; check_shell_busy.py checks, from
    # when each line arrived (console_test.py's LOG.times), that flood lines
    # kept coming through both (no gap over 3 s) and that dom0 restarted
    # bouncer during both. About 30 s. (It once found a lost wake-up in the
    # scheduler that stopped the whole machine: docs/security-model.md.)
    vname=shell-busy
    if [ -z "$filter" ] || [[ "$vname" == *"$filter"* ]]; then
        sed -e "s|\.\./\.\./target/guests/|$G/|" "$ROOT/scripts/tests/shell-busy.toml" >"$LOGS/$vname.toml"
        if vout=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$vname.log" "$ROOT/scripts/tests/shell-busy.script" -- \
                "$ROOT/scripts/run.sh" --smp 2 --timeout 150 --config "$LOGS/$vname.toml"); then
            if vout=$(python3 "$ROOT/scripts/lib/check_shell_busy.py" "$LOGS/boot-$vname.log" 3); then
                pass "boot $vname ($vout)"
            else
                fail "boot $vname"; echo "      $vout"
            fi
        else
            fail "boot $vname"; echo "$vout" | head -n 5
        fi
    fi
    # dom0's disk stops answering (disk-stall): QEMU's blkdebug suspends its
    # writes ("break", through the human monitor) and lets them go again
    # ("resume"); disk-stall.script checks what dom0 and the guests do.
    vname=disk-stall
    if [ -z "$filter" ] || [[ "$vname" == *"$filter"* ]]; then
        vimg=$LOGS/$vname.img
        rm -f "$vimg" && truncate -s 16M "$vimg"
        sed -e "s|\.\./\.\./target/guests/|$G/|" "$ROOT/scripts/tests/disk-stall.toml" >"$LOGS/$vname.toml"
        export HV_TEST_MONITOR=$LOGS/$vname.monitor
        rm -f "$HV_TEST_MONITOR"
        if vout=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$vname.log" "$ROOT/scripts/tests/disk-stall.script" -- \
                "$ROOT/scripts/run.sh" --smp 2 --timeout 150 --disk "blkdebug::$vimg" --config "$LOGS/$vname.toml" \
                -- -monitor "unix:$HV_TEST_MONITOR,server=on,wait=off"); then
            if grep -aq " ERROR \|: FAIL" "$LOGS/boot-$vname.log"; then
                fail "boot $vname"; grep -a " ERROR \|: FAIL" "$LOGS/boot-$vname.log"
            elif ! grep -aq 'survive: NOTE virtio: blk-survive: IOERR at round' "$LOGS/boot-$vname.log"; then
                fail "boot $vname"; echo "      survive should have had an IO error for the stalled request"
            elif [ "$(grep -ac 'got no answer in' "$LOGS/boot-$vname.log")" != 1 ]; then
                fail "boot $vname"; echo "      dom0 should say once that the disk stalled:"; grep -a 'got no answer in' "$LOGS/boot-$vname.log"
            elif ! awk '/got no answer in/ { s = 1 } /the disk answers again/ { s = 0 } s && /flood: FLOOD / { n++ } END { exit !(n >= 10) }' \
                    "$LOGS/boot-$vname.log"; then
                fail "boot $vname"; echo "      flood's console should keep flowing while the disk is stalled"
            else
                pass "boot $vname ($(grep -ao 'blk-survive: PASS .*' "$LOGS/boot-$vname.log" | head -n1 | tr -d '\r'); $(awk '/got no answer in/ { s = 1 } /the disk answers again/ { s = 0 } s && /flood: FLOOD / { n++ } END { print n + 0 }' "$LOGS/boot-$vname.log") flood lines during the stall)"
            fi
        else
            fail "boot $vname"; echo "$vout"
        fi
        unset HV_TEST_MONITOR
    fi
    # The crash guest fetches from IPA 0x200 (its vector with VBAR_EL1 = 0
    # and the MMU off), where it has nothing. Its configuration asks for
    # on_fault=stop: the hypervisor stops only that VM, as crashed, with the
    # prefetch abort's syndrome (EC 0x20, translation fault); the run then
    # ends, not cleanly.
    boot_test guests-crash 1 "GUEST crash: about to crash" "*** guest crash (VM 1): Crashed (syndrome 0x820000" \
        "PC 0x200)" "GUEST spin: DONE 1 passed, 0 failed" "not all with SYSTEM_OFF" \
        -- --machine virt --smp 2 --until-idle --timeout 90 \
        --vm "kernel=$G/crash.img,memory=16M,pin=1,on_fault=stop" --vm "kernel=$G/spin.img,memory=16M,pin=1"
    # With the default policy the architecture's answer stands: a prefetch
    # abort (IFSC 0x10) it takes at 0x200 again and again, as bare hardware
    # with nothing at its vector would; it never stops, while the VM beside
    # it on the same CPU finishes; the hypervisor's warning is in its log
    # (`hvlog`; scripts/tests/crash-default.script; not hv.uart_log, whose
    # lines on the UART beside dom0's can cut a guest's line in two).
    # About 10 s.
    local name=guests-crash-default-policy
    if [ -z "$filter" ] || [[ "$name" == *"$filter"* ]]; then
        local out
        if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-$name.log" "$ROOT/scripts/tests/crash-default.script" -- \
                "$ROOT/scripts/run.sh" --machine virt --smp 2 --timeout 90 \
                --vm "kernel=$G/crash.img,memory=16M,pin=1" --vm "kernel=$G/spin.img,memory=16M,pin=1") &&
            ! grep -aq "Crashed\|\*\*\* hypervisor panic" "$LOGS/boot-$name.log"; then
            pass "boot $name"
        else
            fail "boot $name"; echo "${out:-(the VM was stopped, or the hypervisor panicked: $LOGS/boot-$name.log)}"
        fi
    fi
    # Scheduling: two spinning VMs share a CPU equally; one spinning with
    # interrupts masked cannot starve its neighbour; an idle VM takes no
    # time from a busy one: the busy one's CPU time is at least 90 % of the
    # 2 s it spins (measured against its own run, not against A and B, whose
    # lifetimes on their shared CPU differ from run to run), and the idle
    # one's CPU time (its boot and its four report lines, each byte a trap
    # for the PL011 dom0 emulates: some 60 ms of QEMU time, doubled when
    # this test's 4 busy CPUs share 2 host cores) stays under 10 % of the
    # busy one's.
    local name=sched-fairness log
    if [ -z "$filter" ] || [[ "$name" == *"$filter"* ]]; then
        log=$LOGS/boot-$name.log
        "$ROOT/scripts/run.sh" --machine virt --gic 3 --smp 4 --until-idle --timeout 120 \
            --vm "kernel=$G/spin.img,name=spinA,memory=16M,pin=1" --vm "kernel=$G/spin.img,name=spinB,memory=16M,pin=1" \
            --vm "kernel=$G/spin.img,name=spinM,cmdline=spin.masked=1,memory=16M,pin=2" --vm "kernel=$G/spin.img,name=spinN,memory=16M,pin=2" \
            --vm "kernel=$G/spin.img,name=spinC,memory=16M,pin=3" --vm "kernel=$G/idle.img,name=idleC,cmdline=idle.seconds=2,memory=16M,pin=3" \
            >"$log" 2>&1 </dev/null
        local a b m n ca cb cc ci
        a=$(spin_iterations "$log" spinA) b=$(spin_iterations "$log" spinB)
        m=$(spin_iterations "$log" spinM) n=$(spin_iterations "$log" spinN)
        ca=$(cpu_ms "$log" spinA) cb=$(cpu_ms "$log" spinB) cc=$(cpu_ms "$log" spinC) ci=$(cpu_ms "$log" idleC)
        echo "      spin iterations: A=$a B=$b (sharing a CPU); masked=$m unmasked=$n (sharing a CPU)"
        echo "      CPU time (ms): A=$ca B=$cb; C=$cc beside idle=$ci"
        if within_percent "$a" "$b" 10 && within_percent "$m" "$n" 10 && [ -n "$cc" ] && [ -n "$ci" ] &&
            [ "$cc" -ge 1800 ] && [ $((ci * 10)) -le "$cc" ]; then
            pass "boot $name"
        else
            fail "boot $name"; echo "      want A~B and masked~unmasked within 10 %; C's CPU time >= 90 % of its 2 s (1800 ms), idle's <= 10 % of C's"
            echo "---- serial log ($log) ----"; cat "$log"; echo "----"
        fi
    fi
    sched_balance_test "$G"
    # Scale: 16 VMs on 8 CPUs with a mixed load (scale_test above): 4
    # vCPUs each for 24 s on GICv3 (64 vCPUs), 2 each for 16 s on GICv2.
    scale_test scale-16x4-gicv3 3 4 24
    scale_test scale-16x2-gicv2 2 2 16
}

# ---- Linux guests -----------------------------------------------------------
# A Debian arm64 kernel, unchanged, with a busybox initramfs whose /init
# runs the checks the command line names (scripts/lib/linux.sh).

# linux_config FILE NAME CMDLINE VCPUS [EXTRA TOML LINES]: one autostarted VM
# with $LINUX_MEMORY of RAM (default 256M).
linux_config() {
    local file=$1 name=$2 cmdline=$3 vcpus=$4; shift 4
    {
        printf '[[vm]]\nname = "%s"\nkernel = "%s"\ninitrd = "%s"\n' "$name" "$LINUX_IMG" "$LINUX_INITRD"
        printf 'cmdline = "console=ttyAMA0 %s"\nvcpus = %s\nmemory = "%s"\nautostart = true\n' "$cmdline" "$vcpus" "${LINUX_MEMORY:-256M}"
        local l; for l in "$@"; do printf '%s\n' "$l"; done
    } >>"$file"
}

# interrupt_counts LOG: "ok" if every CPU in the guest's /proc/interrupts
# summary line counted timer ticks and IPIs.
interrupt_counts() {
    sed -n 's/\r//; s/.*LINUX-GUEST: interrupts://p' "$1" | head -n1 |
        awk '{ n = 0; bad = 0; for (i = 1; i <= NF; i += 3) { n++; split($(i+1), t, "="); split($(i+2), p, "=");
               if (t[2] + 0 == 0 || p[2] + 0 == 0) bad = 1 } }
             END { if (n >= 2 && !bad) print "ok" }'
}

linux_tests() {
    [ -n "$filter" ] && [[ linux != *"$filter"* ]] && [[ "$filter" != linux* ]] && return
    LINUX_PKG=$(debian_kernel_package 2>/dev/null) || true
    if ! LINUX_IMG=$(linux_image 2>"$LOGS/linux-material.log") || ! LINUX_INITRD=$(linux_initramfs 2>>"$LOGS/linux-material.log"); then
        fail "linux guest material (Debian kernel, busybox)"; cat "$LOGS/linux-material.log"; return
    fi
    local cfg=$LOGS/linux-smp.toml log
    local no_fail=("!*** hypervisor panic" "!*** unexpected exception" "!Kernel panic" "!Internal error")
    # SMP, timer and IPIs: 2 vCPUs on 2 CPUs (GICv3), and 2 vCPUs on 1 CPU (GICv2).
    local gic smp
    for gic in 3 2; do
        smp=$((gic == 3 ? 2 : 1))
        local name=linux-gicv$gic-smp$smp
        [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && [[ linux != *"$filter"* ]] && continue
        rm -f "$cfg"; linux_config "$cfg" linux "earlycon hvtest=interrupts" 2
        boot_test "$name" 0 "LINUX-GUEST: modules loaded: virtio_mmio" "LINUX-GUEST: interrupts: cpu0 timer=" \
            "*** guest linux (VM 1): SystemOff" "all guests ended with SYSTEM_OFF" "${no_fail[@]}" \
            -- --gic "$gic" --smp "$smp" --until-idle --timeout 240 --config "$cfg"
        log=$LOGS/boot-$name.log
        local counts; counts=$(sed -n 's/\r//; s/.*LINUX-GUEST: interrupts: //p' "$log" | head -n1)
        if [ "$(interrupt_counts "$log")" = ok ]; then pass "linux $name: timer ticks and IPIs on every vCPU ($counts)"
        else fail "linux $name: timer ticks and IPIs on every vCPU (got: ${counts:-nothing})"; fi
    done
    # The most vCPUs one VM may have (8, the GICv2 limit the vGIC keeps on
    # v3 too) on as many CPUs: Linux brings up all 8 and counts timer ticks
    # and IPIs on each. About 25 s.
    name=linux-gicv3-smp8
    if [ -z "$filter" ] || [[ "$name" == *"$filter"* ]] || [[ linux == *"$filter"* ]]; then
        rm -f "$cfg"; linux_config "$cfg" linux "earlycon hvtest=interrupts" 8
        boot_test "$name" 0 "LINUX-GUEST: modules loaded: virtio_mmio" "LINUX-GUEST: interrupts: cpu0 timer=" \
            "smp: Brought up 1 node, 8 CPUs" "*** guest linux (VM 1): SystemOff" "all guests ended with SYSTEM_OFF" "${no_fail[@]}" \
            -- --gic 3 --smp 8 --until-idle --timeout 240 --config "$cfg"
        log=$LOGS/boot-$name.log
        counts=$(sed -n 's/\r//; s/.*LINUX-GUEST: interrupts: //p' "$log" | head -n1)
        local cpus; cpus=$(echo "$counts" | grep -o 'cpu[0-9]*' | sort -u | wc -l)
        if [ "$(interrupt_counts "$log")" = ok ] && [ "$cpus" = 8 ]; then pass "linux $name: timer ticks and IPIs on all 8 vCPUs ($counts)"
        else fail "linux $name: timer ticks and IPIs on all 8 vCPUs (got: ${counts:-nothing})"; fi
    fi
    # The same on QEMU's -cpu max (SVE, SME, MTE, PAuth, BTI, RAS, ...), once
    # per GIC: the guest must see only what the hypervisor supports
    # (idregs.rs) and use it: pointer authentication and BTI yes, SVE, SME
    # and MTE no. HV_TEST_CPUS="neoverse-n1 cortex-a76 ..." runs it on more
    # CPU models (outside the suite's time budget).
    local model
    for model in max ${HV_TEST_CPUS:-}; do
        for gic in 3 2; do
            smp=$((gic == 3 ? 2 : 1))
            local name=linux-cpu-$model-gicv$gic
            [ "$model" != max ] && [ "$gic" = 2 ] && continue
            [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && [[ linux != *"$filter"* ]] && continue
            rm -f "$cfg"; linux_config "$cfg" linux "earlycon hvtest=interrupts" 2
            local want=()
            [ "$model" = max ] && want=("CPU features: detected: Address authentication" "CPU features: detected: Branch Target Identification")
            boot_test "$name" 0 "LINUX-GUEST: modules loaded: virtio_mmio" "LINUX-GUEST: interrupts: cpu0 timer=" \
                "*** guest linux (VM 1): SystemOff" "all guests ended with SYSTEM_OFF" "${want[@]}" "${no_fail[@]}" \
                "!Scalable Vector Extension" "!Memory Tagging" "!Scalable Matrix" \
                -- --gic "$gic" --smp "$smp" --cpu "$model" --until-idle --timeout 300 --config "$cfg"
        done
    done
    # Overcommit: Linux (2 vCPUs) shares CPU 1 with a spinning VM. It finds
    # the hypervisor's stolen time (DEN0057, "arm-pv: using stolen time PV")
    # and, busy itself, sees steal in /proc/stat. The spinner runs for
    # SPIN_WINDOWS x 100 ms, long enough to outlast Linux's boot and check
    # (about 30 s in all). Only its RESULT is asked for: its own check that
    # every 100 ms window counted can miss while Linux's woken vCPUs, which
    # go first, keep it off the CPU (sched-fairness judges fairness).
    local name=linux-steal
    if [ -z "$filter" ] || [[ "$name" == *"$filter"* ]] || [[ linux == *"$filter"* ]]; then
        if ! "$ROOT/scripts/build-guests.sh" spin >"$LOGS/guests-build-spin.log" 2>&1; then
            fail "build spin guest"; cat "$LOGS/guests-build-spin.log"
        else
            cfg=$LOGS/linux-steal.toml; rm -f "$cfg"
            linux_config "$cfg" linux "quiet hvtest=steal" 2 'pin = [1]'
            printf '[[vm]]\nname = "spinner"\nkernel = "%s"\ncmdline = "spin.windows=%s"\nmemory = "16M"\npin = [1]\nautostart = true\n' \
                "$ROOT/target/guests/spin.img" "${SPIN_WINDOWS:-150}" >>"$cfg"
            boot_test "$name" 0 "linux: LINUX-GUEST: pv: " "arm-pv: using stolen time PV" "spinner: RESULT spin: iterations=" \
                "all guests ended with SYSTEM_OFF" "${no_fail[@]}" \
                -- --smp 2 --until-idle --timeout 240 --config "$cfg"
            log=$LOGS/boot-$name.log
            local steal; steal=$(sed -n 's/\r//; s/.*LINUX-GUEST: steal: \([0-9]*\) ticks.*/\1/p' "$log" | head -n1)
            if [ -n "$steal" ] && [ "$steal" -gt 0 ]; then pass "linux $name: steal in /proc/stat ($steal ticks of 10 ms)"
            else fail "linux $name: steal in /proc/stat (got: ${steal:-nothing})"; fi
        fi
    fi
    # Overcommit at scale: 8 Linux guests with 4 vCPUs each (32 vCPUs) on
    # 4 CPUs (GICv3), 128 MiB each. Every guest boots and keeps each of its
    # vCPUs busy (hvtest=cpujob) for 20 + 10 + 20 s of its uptime, then
    # powers off. No soft lockup or RCU stall may appear, in the console or
    # in any guest's kernel log; every guest must see steal in /proc/stat;
    # the VMs' CPU times for the whole run (the hypervisor's end-of-run
    # summary) must be within 20 % of each other. And each guest measures
    # the CPU time it got in the middle 10 s (the window less /proc/stat's
    # steal and idle, summed over its vCPUs, over the window: CPUs' worth,
    # 0.5 if 32 vCPUs share 4 CPUs evenly); the serial log must show all 32
    # vCPUs busy before any window starts and still busy after every
    # window ends (else the margins were too short for the guests' skew,
    # and that fails too), and the 8 figures must be within 20 % of each
    # other. Only when asked for by name (`linux-overcommit`): 136-151 s on
    # a 2-core host shared with other work, and neither figure is within
    # 20 % reliably yet (README, "What is missing").
    local name=linux-overcommit
    if [[ "$filter" == *overcommit* ]] && [[ "$name" == *"$filter"* ]]; then
        cfg=$LOGS/linux-overcommit.toml; rm -f "$cfg"
        local i want=() t0 secs
        for i in $(seq 1 8); do
            LINUX_MEMORY=128M linux_config "$cfg" "lx$i" "quiet hvtest=cpujob" 4
            want+=("lx$i: LINUX-GUEST: cpujob stalls: 0" "*** guest lx$i (VM $i): SystemOff")
        done
        t0=$(date +%s)
        boot_test "$name" 0 "${want[@]}" "all guests ended with SYSTEM_OFF" "${no_fail[@]}" \
            "!soft lockup" "!self-detected stall" "!detected stalls" "!rcu: INFO" \
            -- --gic 3 --smp 4 --memory 2G --until-idle --timeout 300 --config "$cfg"
        secs=$(( $(date +%s) - t0 ))
        log=$LOGS/boot-$name.log
        # line_of TEXT first|last: the serial log's line number of TEXT's first or last appearance.
        line_of() { grep -anF -- "$1" "$log" | cut -d: -f1 | sort -n | { if [ "$2" = first ]; then head -n1; else tail -n1; fi; }; }
        local ms=() ran=() steals=() nosteal=() min="" max="" cmin="" cmax="" c r st
        for i in $(seq 1 8); do
            c=$(cpu_ms "$log" "lx$i")
            if [ -z "$c" ]; then cmin=-; elif [ "$cmin" != - ]; then
                if [ -z "$cmin" ] || [ "$c" -lt "$cmin" ]; then cmin=$c; fi
                if [ -z "$cmax" ] || [ "$c" -gt "$cmax" ]; then cmax=$c; fi
            fi
            # "(0.512 CPUs)" as 512.
            r=$(sed -n "s/\r//; s/.*lx$i: LINUX-GUEST: cpujob: window [0-9.]* s on 4 CPUs: ran [0-9.]* s (\([0-9]*\)\.\([0-9]\{3\}\) CPUs).*/\1\2/p" "$log" |
                head -n1 | sed 's/^0*\(.\)/\1/')
            st=$(sed -n "s/\r//; s/.*lx$i: LINUX-GUEST: cpujob steal: \([0-9]*\) ticks.*/\1/p" "$log" | head -n1)
            ms+=("lx$i=${c:-?}") ran+=("lx$i=${r:-?}") steals+=("lx$i=${st:-?}")
            { [ -n "$st" ] && [ "$st" -gt 0 ]; } || nosteal+=("lx$i")
            if [ -z "$r" ]; then min=""; max=""; break; fi
            if [ -z "$min" ] || [ "$r" -lt "$min" ]; then min=$r; fi
            if [ -z "$max" ] || [ "$r" -gt "$max" ]; then max=$r; fi
        done
        echo "      ${secs}s; CPUs' worth each guest ran in its window (1/1000): ${ran[*]}"
        echo "      CPU time for the whole run (ms; the hypervisor's summary): ${ms[*]}"
        echo "      steal (ticks of 10 ms): ${steals[*]}"
        [ "$cmin" = - ] && cmin=""
        if within_percent "$cmin" "$cmax" 20; then pass "linux $name: CPU times for the whole run within 20 % ($cmin..$cmax ms)"
        else fail "linux $name: CPU times for the whole run within 20 % (got ${cmin:-?}..${cmax:-?} ms)"; fi
        if [ ${#nosteal[@]} -eq 0 ]; then pass "linux $name: steal in every guest's /proc/stat"
        else fail "linux $name: steal in every guest's /proc/stat (none in: ${nosteal[*]})"; fi
        # (dom0 may repeat a guest's line when it redraws its prompt.)
        local busy first done_ last nbusy nidle
        nbusy=$(grep -ao "lx[0-9]: LINUX-GUEST: cpujob: busy on cpu[0-9]" "$log" | sort -u | wc -l)
        nidle=$(grep -ao "lx[0-9]: LINUX-GUEST: cpujob: idle on cpu[0-9]" "$log" | sort -u | wc -l)
        busy=$(line_of "LINUX-GUEST: cpujob: busy on cpu" last) first=$(line_of "LINUX-GUEST: cpujob: window start" first)
        last=$(line_of "LINUX-GUEST: cpujob: window end" last) done_=$(line_of "LINUX-GUEST: cpujob: idle on cpu" first)
        if ! { [ "$nbusy" -ge 32 ] && [ "$nidle" -ge 32 ] && [ -n "$first" ] && [ -n "$last" ] && [ "$busy" -lt "$first" ] && [ "$last" -lt "$done_" ]; }; then
            fail "linux $name: windows overlap ($nbusy busy and $nidle idle lines of 32; log lines: last busy ${busy:-?}, first window ${first:-?}, last window end ${last:-?}, first idle ${done_:-?})"
        elif within_percent "$min" "$max" 20; then pass "linux $name: CPU shares in the window within 20 % ($min..$max thousandths of a CPU)"
        else fail "linux $name: CPU shares in the window within 20 % (got ${min:-?}..${max:-?} thousandths of a CPU)"; fi
    fi
    # Disk: the VM writes and syncs a marker, reboots (dom0 restarts it),
    # finds it; then the whole machine restarts on the same image.
    local disk=$LOGS/linux-disk.img id=$RANDOM$RANDOM
    rm -f "$disk"; truncate -s 64M "$disk"
    cfg=$LOGS/linux-disk.toml; rm -f "$cfg"
    linux_config "$cfg" linuxdisk "quiet hvtest=disk hvtest.id=$id" 1 '[[vm.disk]]' 'size = "32M"'
    boot_test linux-disk-vm-restart 0 "LINUX-GUEST: disk: written $id, rebooting" "reset itself: restarted as VM" \
        "LINUX-GUEST: disk: found $id" "all guests ended with SYSTEM_OFF" "${no_fail[@]}" \
        -- --smp 2 --until-idle --timeout 240 --disk "$disk" --config "$cfg"
    boot_test linux-disk-machine-restart 0 "LINUX-GUEST: disk: found $id" "!disk: written" "all guests ended with SYSTEM_OFF" \
        -- --smp 2 --until-idle --timeout 240 --disk "$disk" --config "$cfg"
    # Linux's disk IO goes on, verified, while dom0's shell runs `sleep 10`
    # and another guest floods its console (linux-io-busy).
    if [ -z "$filter" ] || [[ linux-io-busy == *"$filter"* ]]; then
        disk=$LOGS/linux-io-busy.img cfg=$LOGS/linux-io-busy.toml
        rm -f "$disk" "$cfg"; truncate -s 16M "$disk"
        linux_config "$cfg" linuxio "quiet hvtest=diskload hvtest.secs=30" 1 '[[vm.disk]]' 'size = "8M"'
        printf '[[vm]]\nname = "flood"\nkernel = "%s"\nmemory = "16M"\ncmdline = "console.flood=150"\nautostart = false\n' \
            "$ROOT/target/guests/console.img" >>"$cfg"
        if vout=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-linux-io-busy.log" "$ROOT/scripts/tests/linux-io-busy.script" -- \
                "$ROOT/scripts/run.sh" --smp 2 --timeout 300 --disk "$disk" --config "$cfg"); then
            if vout=$(python3 "$ROOT/scripts/lib/check_busy_sleep.py" "$LOGS/boot-linux-io-busy.log" \
                    "linuxio: LINUX-GUEST: diskload:" "linuxio: LINUX-GUEST: diskload: PASS"); then
                pass "boot linux-io-busy ($vout)"
            else
                fail "boot linux-io-busy"; echo "      $vout"
            fi
        else
            fail "boot linux-io-busy"; echo "$vout"
        fi
    fi
    # Network: two guests on dom0's switch ping each other.
    cfg=$LOGS/linux-net.toml; rm -f "$cfg"
    linux_config "$cfg" ping1 "quiet hvtest=ping hvtest.ip=10.0.0.1/24 hvtest.peer=10.0.0.2 hvtest.stay=5" 1 '[[vm.net]]'
    linux_config "$cfg" ping2 "quiet hvtest=ping hvtest.ip=10.0.0.2/24 hvtest.peer=10.0.0.1 hvtest.stay=5" 1 '[[vm.net]]'
    boot_test linux-ping 0 "ping1: LINUX-GUEST: ping: 5 of 5 replies from 10.0.0.2" "ping2: LINUX-GUEST: ping: 5 of 5 replies from 10.0.0.1" \
        "all guests ended with SYSTEM_OFF" "${no_fail[@]}" \
        -- --smp 2 --until-idle --timeout 240 --config "$cfg"
    # The default demo (run.sh with no arguments): both guests' shells, ping
    # from alpha's console, Ctrl-a three times to beta's, back to dom0.
    if [ -z "$filter" ] || [[ linux-demo == *"$filter"* ]] || [[ linux == *"$filter"* ]]; then
        local out
        rm -f "$ROOT/target/demo-disk.img"
        if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-linux-demo.log" "$ROOT/scripts/tests/demo.script" -- \
                "$ROOT/scripts/run.sh" --demo --timeout 300); then
            pass "boot linux-demo"
        else
            fail "boot linux-demo"; echo "$out" | tail -n 40
        fi
    fi
    # Boot time: to init under the hypervisor vs. bare, both under -icount.
    local name=linux-boot-ratio
    if [ -z "$filter" ] || [[ "$name" == *"$filter"* ]] || [[ linux == *"$filter"* ]]; then
        cfg=$LOGS/linux-ratio.toml; rm -f "$cfg"
        # The same command line as scripts/linux-bare.sh's.
        linux_config "$cfg" linux "earlycon printk.time=1 panic=-1 hvtest=poweroff" 2
        log=$LOGS/boot-$name.log
        "$ROOT/scripts/run.sh" --gic 3 --smp 2 --icount --until-idle --timeout 240 --config "$cfg" >"$log" 2>&1 </dev/null
        local guest bare
        guest=$(linux_init_ns "$log" || true)
        bare=$("$ROOT/scripts/linux-bare.sh" --gic 3 --smp 2 2>"$LOGS/linux-bare.log" | sed -n 's/^bare boot to init: \([0-9]*\) instructions.*/\1/p')
        if [ -n "$guest" ] && [ -n "$bare" ] && [ "$bare" -gt 0 ]; then
            local ratio; ratio=$(awk -v g="$guest" -v b="$bare" 'BEGIN { printf "%.3f", g / b }')
            echo "      Linux boot to init: $guest instructions as a guest, $bare bare: ratio $ratio"
            pass "linux $name (ratio $ratio)"
        else
            fail "linux $name (guest: ${guest:-?}, bare: ${bare:-?})"; tail -n 30 "$log"
        fi
    fi
}

# ---- the chaos guest ---------------------------------------------------------
# guests/chaos, with seeds, beside a pattern guest (its memory must stay
# intact) and a Linux guest (it must finish its interrupts check), on
# GICv3 and GICv2: every chaos outcome architecturally allowed, every
# neighbour done, no error in the hypervisor's log (its end-of-run count),
# no panic, every VM ended with SYSTEM_OFF. Two seeds a GIC, 12 s of
# chaos each run (both GICs: about 70 s); --chaos-long: random seeds, 60 s.
# chaos.lr-starve=1: also interrupts the guest cannot take (moved to a
# group its CPU interface has off, made active without an acknowledge),
# which must not keep list registers from its timer and SGIs.
chaos_tests() {
    local gic
    for gic in 3 2; do
        local name=chaos-gicv$gic
        [ -n "$filter" ] && [[ "$name" != *"$filter"* ]] && continue
        if [ -z "${LINUX_IMG:-}" ]; then
            LINUX_PKG=$(debian_kernel_package 2>/dev/null) || true
            if ! LINUX_IMG=$(linux_image 2>"$LOGS/linux-material.log") || ! LINUX_INITRD=$(linux_initramfs 2>>"$LOGS/linux-material.log"); then
                fail "linux guest material (Debian kernel, busybox)"; cat "$LOGS/linux-material.log"; return
            fi
        fi
        local seeds ms=12000
        if [ "$chaos_long" = 1 ]; then
            ms=${HV_CHAOS_MS:-60000}
            seeds=${HV_CHAOS_SEEDS:-"$RANDOM$RANDOM $RANDOM$RANDOM $RANDOM$RANDOM $RANDOM$RANDOM"}
        else
            seeds=${HV_CHAOS_SEEDS:-$([ "$gic" = 3 ] && echo "1 2" || echo "3 4")}
        fi
        local cfg=$LOGS/$name.toml want=() seed
        rm -f "$cfg"
        linux_config "$cfg" linux "quiet hvtest=interrupts" 2
        printf '[[vm]]\nname = "pattern"\nkernel = "%s"\nmemory = "16M"\ncmdline = "pattern.seconds=%s pattern.interval-ms=200"\nautostart = true\n' \
            "$ROOT/target/guests/pattern.img" $((ms / 1000 + 3)) >>"$cfg"
        for seed in $seeds; do
            printf '[[vm]]\nname = "chaos%s"\nkernel = "%s"\nmemory = "16M"\nvcpus = 2\ncmdline = "chaos.seed=%s chaos.ms=%s chaos.lr-starve=1"\nautostart = true\n' \
                "$seed" "$ROOT/target/guests/chaos.img" "$seed" "$ms" >>"$cfg"
            want+=("chaos$seed: TEST chaos: outcomes: PASS" "chaos$seed: TEST chaos: every-vcpu: PASS" "chaos$seed: GUEST chaos: DONE 2 passed, 0 failed")
        done
        echo "      $name: seeds $seeds, $ms ms each"
        boot_test "$name" 0 "${want[@]}" "pattern: GUEST pattern: DONE 2 passed, 0 failed" \
            "LINUX-GUEST: interrupts: cpu0 timer=" "*** guest linux (VM 1): SystemOff" "*** hypervisor log: 0 error(s)" \
            "all guests ended with SYSTEM_OFF" "!: FAIL" "!*** hypervisor panic" "!*** unexpected exception" "!Kernel panic" "!Internal error" \
            -- --gic "$gic" --smp 2 --until-idle --timeout $((ms / 1000 + 150)) --config "$cfg"
        sed -n 's/\r//; s/.*\(chaos[0-9]*: RESULT chaos: .*\)/      \1/p' "$LOGS/boot-$name.log"
    done
}

# ---- the Raspberry Pi 4 SD card (scripts/sdcard.sh) on raspi4b --------------
# QEMU cannot run the Pi's GPU firmware: these boot the card's own
# kernel8.img, bundle.cpio and device tree (taken out of its FAT partition)
# with -kernel/-initrd/-dtb, the image in the EMMC2 slot. Not covered: the
# firmware reading config.txt, loading at 0x200000, its spin table and GIC
# setup, the mini-UART's clock (README, "On a Raspberry Pi 4", its checklist).

# sd_sector IMG N: sector N of the card's data partition (partition 2).
sd_sector() { dd if="$1" bs=512 skip=$((270336 + $2)) count=1 status=none; }

pi_tests() {
    # pi_want NAME: the filter selects the test NAME (no filter: all).
    pi_want() { [ -z "$filter" ] || [[ "$1" == *"$filter"* ]]; }
    local card=$LOGS/sdcard.img out problems=() fat
    # The card with dom0 alone: its files, then dom0's driver on it.
    if pi_want pi4-sdcard-dom0; then
        if ! "$ROOT/scripts/sdcard.sh" --guests none --out "$card" >"$LOGS/sdcard-build.log" 2>&1; then
            fail "pi4-sdcard image"; cat "$LOGS/sdcard-build.log"; return
        fi
        fat="$card@@$((8192 * 512))"
        export MTOOLS_SKIP_CHECK=1
        local f listing; listing=$(mdir -b -i "$fat" ::/ 2>&1)
        for f in start4.elf fixup4.dat bcm2711-rpi-4-b.dtb kernel8.img bundle.cpio config.txt cmdline.txt; do
            grep -qx "::/$f" <<<"$listing" || problems+=("FAT partition: no $f")
        done
        mtype -i "$fat" ::/kernel8.img | cmp -s - "$ROOT/target/hypervisor-release.img" || problems+=("kernel8.img differs from target/hypervisor-release.img")
        mtype -i "$fat" ::/bundle.cpio | cmp -s - "$ROOT/target/bundle-release.cpio" || problems+=("bundle.cpio differs from target/bundle-release.cpio")
        mtype -i "$fat" ::/bcm2711-rpi-4-b.dtb | cmp -s - "$(pi4_dtb)" || problems+=("the device tree differs from the kernel package's")
        mtype -i "$fat" ::/start4.elf | cmp -s - "$(raspi_firmware_dir)/start4.elf" || problems+=("start4.elf differs from raspi-firmware's")
        # config.txt: every line a comment, key=value with a known key, or
        # the initramfs line; the keys the boot needs are there.
        local cfg; cfg=$(mtype -i "$fat" ::/config.txt | tr -d '\r')
        local bad; bad=$(grep -vE '^(#.*|(arm_64bit|kernel|device_tree|enable_gic|enable_uart|uart_2ndstage|dtoverlay)=[A-Za-z0-9_.,-]+|initramfs bundle\.cpio followkernel)$' <<<"$cfg")
        [ -z "$bad" ] || problems+=("config.txt: unexpected lines: $bad")
        for f in arm_64bit=1 kernel=kernel8.img "initramfs bundle.cpio followkernel" device_tree=bcm2711-rpi-4-b.dtb enable_gic=1 enable_uart=1; do
            grep -qxF "$f" <<<"$cfg" || problems+=("config.txt: no '$f'")
        done
        [ "$(sfdisk --dump "$card" | grep -c 'start= *270336, size= *253952, type=da')" = 1 ] || problems+=("partition 2 is not sectors 270336.. (type 0xda)")
        if [ ${#problems[@]} -eq 0 ]; then pass "pi4-sdcard image (files, config.txt, partitions)"; else
            fail "pi4-sdcard image"; printf '      %s\n' "${problems[@]}"; problems=()
        fi
        # Dom0's SD driver: a string at data sector 10 must read back;
        # `disk selftest 20` must leave sector 20's original (random) bytes.
        local orig=$LOGS/sdcard.s20
        printf 'rusthv sd test: sector 10' | dd of="$card" bs=512 seek=$((270336 + 10)) conv=notrunc status=none
        head -c 512 /dev/urandom >"$orig" && dd if="$orig" of="$card" bs=512 seek=$((270336 + 20)) conv=notrunc status=none
        if ! out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-pi4-sdcard-dom0.log" "$ROOT/scripts/tests/sdcard.script" -- \
                "$ROOT/scripts/run.sh" --machine raspi4b --timeout 300 --sdcard "$card"); then
            problems+=("console (sdcard.script):" "$out")
        fi
        sd_sector "$card" 20 | cmp -s - "$orig" || problems+=("host file: data sector 20 does not hold its original bytes after the selftest")
        sd_sector "$card" 10 | grep -qa '^rusthv sd test: sector 10' || problems+=("host file: data sector 10 changed")
        if [ ${#problems[@]} -eq 0 ]; then pass "boot pi4-sdcard-dom0"; else
            fail "boot pi4-sdcard-dom0"; printf '      %s\n' "${problems[@]}"; problems=()
        fi
    fi
    pi_want pi4-linux-smp-disk || pi_want pi4-linux-disk-machine-restart || pi_want pi4-linux-demo || return
    # Linux guests on raspi4b (GIC-400, 4 list registers), from the card:
    # 2 vCPUs with timer ticks and IPIs on both; a disk guest writes and
    # syncs a marker on its slice of the card's data partition, reboots,
    # finds it; then the machine restarts on the same card (its bundle
    # rebuilt with the disk guest alone, --keep-data) and finds it again.
    LINUX_PKG=$(debian_kernel_package 2>/dev/null) || true
    if ! LINUX_IMG=$(linux_image 2>"$LOGS/linux-material.log") || ! LINUX_INITRD=$(linux_initramfs 2>>"$LOGS/linux-material.log"); then
        fail "linux guest material (Debian kernel, busybox)"; cat "$LOGS/linux-material.log"; return
    fi
    local no_fail=("!*** hypervisor panic" "!*** unexpected exception" "!Kernel panic" "!Internal error")
    if pi_want pi4-linux-smp-disk || pi_want pi4-linux-disk-machine-restart; then
        local pcard=$LOGS/linux-pi.img id=$RANDOM$RANDOM cfg=$LOGS/linux-pi.toml dcfg=$LOGS/linux-pi-disk.toml log
        rm -f "$cfg" "$dcfg" "$pcard"
        linux_config "$cfg" linux "earlycon hvtest=interrupts" 2
        linux_config "$dcfg" linuxdisk "quiet hvtest=disk hvtest.id=$id" 1 '[[vm.disk]]' 'size = "32M"'
        cat "$dcfg" >>"$cfg"
        if ! "$ROOT/scripts/sdcard.sh" --config "$cfg" --out "$pcard" >"$LOGS/linux-pi-card.log" 2>&1; then
            fail "pi4-sdcard image for pi4-linux-smp-disk"; cat "$LOGS/linux-pi-card.log"; return
        fi
        # (Also when only the machine restart was asked for by name: it
        # needs the marker this run writes.)
        local asked=$filter; filter=""
        boot_test pi4-linux-smp-disk 0 "LINUX-GUEST: modules loaded: virtio_mmio" "LINUX-GUEST: interrupts: cpu0 timer=" \
            "*** guest linux (VM 1): SystemOff" "LINUX-GUEST: disk: written $id, rebooting" "reset itself: restarted as VM" \
            "LINUX-GUEST: disk: found $id" "all guests ended with SYSTEM_OFF" "${no_fail[@]}" \
            -- --machine raspi4b --until-idle --timeout 300 --sdcard "$pcard"
        filter=$asked
        log=$LOGS/boot-pi4-linux-smp-disk.log
        local counts; counts=$(sed -n 's/\r//; s/.*LINUX-GUEST: interrupts: //p' "$log" | head -n1)
        if [ "$(interrupt_counts "$log")" = ok ]; then pass "linux pi4-linux-smp-disk: timer ticks and IPIs on every vCPU ($counts)"
        else fail "linux pi4-linux-smp-disk: timer ticks and IPIs on every vCPU (got: ${counts:-nothing})"; fi
        if "$ROOT/scripts/sdcard.sh" --config "$dcfg" --out "$pcard" --keep-data >"$LOGS/linux-pi-card2.log" 2>&1; then
            boot_test pi4-linux-disk-machine-restart 0 "LINUX-GUEST: disk: found $id" "!disk: written" "all guests ended with SYSTEM_OFF" \
                "${no_fail[@]}" -- --machine raspi4b --until-idle --timeout 240 --sdcard "$pcard"
        else
            fail "pi4-sdcard image for pi4-linux-disk-machine-restart"; cat "$LOGS/linux-pi-card2.log"
        fi
    fi
    # The Pi demo (run.sh --demo --machine raspi4b), driven like a user:
    # both shells, ping from alpha's console, beta's disk size, dom0's disk.
    if pi_want pi4-linux-demo; then
        rm -f "$ROOT/target/sdcard.img"
        if out=$(python3 "$ROOT/scripts/lib/console_test.py" "$LOGS/boot-pi4-linux-demo.log" "$ROOT/scripts/tests/pi-demo.script" -- \
                "$ROOT/scripts/run.sh" --demo --machine raspi4b --timeout 400); then
            pass "boot pi4-linux-demo"
        else
            fail "boot pi4-linux-demo"; echo "$out" | tail -n 40
        fi
    fi
}

if [ "$mode" != host ]; then
    if ! "$ROOT/scripts/build.sh" >"$LOGS/build.log" 2>&1; then
        fail "build image"; cat "$LOGS/build.log"
    else
        img=$(tail -n2 "$LOGS/build.log" | head -n1)
        size=$(stat -c %s "$img")
        echo "image: $img ($size bytes, $((size / 1024)) KiB)"
        # The image-size target of issue 13 (README, Performance): a
        # change that takes the image over it says so here.
        if [ -z "$filter" ] || [[ image-size == *"$filter"* ]]; then
            if [ "$size" -le $((256 * 1024)) ]; then pass "image-size ($size bytes, at most 262144)"
            else fail "image-size ($size bytes, over 262144: docs/perf-notes.md says where the bytes are)"; fi
        fi
        T=(--until-idle --timeout 60 --no-dom0)
        boot_test virt-gicv3-smp4 0 "hypervisor 0." "at EL2" "board: linux,dummy-virt" "CPUs: 4 of 4 online" \
            "RAM: 1024 MiB" "GIC: v3 GICD@0x8000000 GICR@0x80a0000" "console: Pl011 at 0x9000000" \
            "cpu3 INFO  online" "nothing left to run" "*** system stopped: powering off" \
            -- --machine virt --gic 3 --smp 4 --memory 1G "${T[@]}"
        boot_test virt-gicv2-smp2 0 "CPUs: 2 of 2 online" "RAM: 512 MiB" \
            "GIC: v2 GICD@0x8000000 GICC@0x8010000 GICH@0x8030000 GICV@0x8040000" \
            "cpu1 INFO  online" "*** system stopped: powering off" \
            -- --machine virt --gic 2 --smp 2 --memory 512M "${T[@]}"
        boot_test virt-smp1 0 "CPUs: 1 of 1 online" "RAM: 2048 MiB" "GIC: v3" "*** system stopped: powering off" \
            -- --machine virt --smp 1 --memory 2G "${T[@]}"
        # QEMU's raspi4b has 2 GiB but its device tree describes only the
        # first 960 MiB bank, below the VideoCore's share.
        boot_test raspi4b 0 "board: Raspberry Pi 4 Model B" "CPUs: 4 of 4 online" "RAM: 960 MiB" \
            "GIC: v2 GICD@0xff841000 GICC@0xff842000 GICH@0xff844000 GICV@0xff846000" \
            "cpu3 INFO  online" "nothing left to run" "*** system stopped: no PSCI, parking all CPUs" \
            -- --machine raspi4b "${T[@]}"
        boot_test loglevel-debug 0 "DEBUG" "CPUs: 2 of 2 online" \
            -- --smp 2 --append "loglevel=debug" "${T[@]}"
        boot_test bad-bootarg 0 "bootargs: ignoring \`loglevel=loud\`" "CPUs: 2 of 2 online" \
            -- --smp 2 --append "loglevel=loud" "${T[@]}"
        boot_test panic-report 1 "*** hypervisor panic on cpu0 at hypervisor/src/boot.rs" \
            "self-test: panic requested by hv.selftest=panic" "*** system stopped: powering off" \
            -- --smp 2 --append "hv.selftest=panic" "${T[@]}"
        boot_test fault-report 1 "*** unexpected exception on cpu0: synchronous from current EL with SP_EL2" \
            "data abort from the current EL" "FAR 0x0000dead00000000" "x30" "*** system stopped: powering off" \
            -- --smp 2 --append "hv.selftest=fault" "${T[@]}"
        boot_test raspi4b-panic 1 "*** hypervisor panic on cpu0" "*** system stopped: no PSCI, parking all CPUs" \
            -- --machine raspi4b --append "hv.selftest=panic" "${T[@]}"
        dom0_test dom0-virt-gicv3-smp4 4 3 0x40080000 exit -- --machine virt --gic 3 --smp 4
        dom0_test dom0-virt-gicv2-smp2 2 2 0x40080000 exit -- --machine virt --gic 2 --smp 2
        dom0_test dom0-virt-smp1 1 3 0x40080000 exit -- --machine virt --smp 1
        dom0_test dom0-raspi4b 4 2 0x80000 "*** system stopped: no PSCI, parking all CPUs" -- --machine raspi4b
        disk_test dom0-disk
        guest_tests
        linux_tests
        chaos_tests
        pi_tests
        wrong_el_test virt-el1 "hypervisor: entered at EL1, but it must be started at EL2" \
            -- --machine virt --smp 1 --timeout 30 -- -machine virtualization=off
    fi
fi

elapsed=$(( $(date +%s) - started ))
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed:"; printf '  %s\n' "${failures[@]}"
fi
echo "suite took ${elapsed}s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
