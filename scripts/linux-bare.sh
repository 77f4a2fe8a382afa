#!/usr/bin/env bash
# The reference for Linux guests: Debian's arm64 kernel with the initramfs of
# scripts/lib/linux.sh booted bare (no hypervisor) in QEMU virt under
# -icount shift=0, where one virtual nanosecond is one instruction. Prints how
# many from the kernel's first log line to "Run /init as init process" (see
# linux_init_ns), e.g. "bare boot to init: 612345000 instructions (kernel ...)",
# the figure a guest's console log gives too. The log's timestamps start when
# the kernel starts its sched_clock (time_init), so a second line estimates
# the instructions before that from QEMU's instruction count at power-off
# (read over QMP) minus the power-off timestamp; this assumes the CPUs were
# never all idle, which holds for hvtest=poweroff (not for --probe).
# About three quarters of the figure are the crypto self-tests Debian's kernel
# (CONFIG_CRYPTO_FIPS) runs at boot; "--append cryptomgr.notests=1" skips them.
# A run takes about 3 s of wall time.
#
#   --gic 2|3       GIC version (default 3)
#   --smp N         CPUs (default 2)
#   --memory SIZE   RAM (default 256M)
#   --probe         attach a virtio-mmio disk, network card and console; /init
#                   lists them and reads the disk (hvtest=probe), which is checked
#   --shell         stop at the guest's shell instead of powering off
#   --append ARGS   more kernel command line
#   --timeout S     give up after S seconds (default 300)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"
source "$ROOT/scripts/lib/linux.sh"

gic=3 smp=2 mem=256M mode=poweroff append="" timeout=300
while [ $# -gt 0 ]; do
    case $1 in
    --gic) gic=$2; shift ;;
    --smp) smp=$2; shift ;;
    --memory) mem=$2; shift ;;
    --probe) mode=probe ;;
    --shell) mode=shell ;;
    --append) append="$append $2"; shift ;;
    --timeout) timeout=$2; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
case $gic in 2|3) ;; *) die "--gic takes 2 or 3" ;; esac

ensure_qemu
LINUX_PKG=$(debian_kernel_package)
kver=${LINUX_PKG#linux-image-}
image=$(linux_image)
initrd=$(linux_initramfs)

args=(-machine "virt,gic-version=$gic" -cpu cortex-a72 -smp "$smp" -m "$mem"
      -nographic -icount shift=0 -kernel "$image" -initrd "$initrd")
# A panic reboots, which -no-reboot turns into QEMU's exit.
args+=(-no-reboot)
cmdline="console=ttyAMA0 earlycon printk.time=1 panic=-1"
case $mode in
shell) exec qemu-system-aarch64 "${args[@]}" -append "$cmdline$append" ;;
probe)
    disk=$CACHE/linux/probe-disk.img
    if [ ! -f "$disk" ]; then
        printf 'HVTEST-DISK virtio-blk read ok\n' > "$disk.tmp" && truncate -s 1M "$disk.tmp" && mv "$disk.tmp" "$disk"
    fi
    # shellcheck disable=SC2054  # the commas are QEMU's
    args+=(-global virtio-mmio.force-legacy=false
           -drive "file=$disk,if=none,format=raw,id=d0,snapshot=on" -device virtio-blk-device,drive=d0
           -netdev user,id=n0 -device virtio-net-device,netdev=n0
           -device virtio-serial-device -device virtconsole,chardev=c0 -chardev null,id=c0) ;;
esac

log=$CACHE/linux/bare.log qmp=$CACHE/linux/bare.qmp
rm -f "$qmp" "$qmp.out" "$qmp.pid"
if [ "$mode" = poweroff ]; then
    # -no-shutdown keeps QEMU up at power-off for the client below to read
    # its instruction count; the client then ends QEMU (or, if it fails, kill).
    args+=(-no-shutdown -qmp "unix:$qmp,server=on,wait=off" -pidfile "$qmp.pid")
    { python3 - "$qmp" > "$qmp.out" || kill "$(cat "$qmp.pid" 2>/dev/null)" 2>/dev/null; } <<'PY' &
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
for _ in range(200):
    try: s.connect(sys.argv[1]); break
    except OSError: time.sleep(0.05)
else: sys.exit(1)
f = s.makefile("rw")
def send(cmd):
    f.write(json.dumps({"execute": cmd}) + "\n"); f.flush()
def wait_for(pred):
    while True:
        line = f.readline()
        if not line: sys.exit(1)
        r = json.loads(line)
        if pred(r): return r
f.readline(); send("qmp_capabilities"); wait_for(lambda r: "return" in r)
wait_for(lambda r: r.get("event") == "SHUTDOWN")
send("query-replay"); print(wait_for(lambda r: "return" in r)["return"]["icount"], flush=True)
# QEMU drops requests still queued when the client disconnects: wait for
# the answer to "quit" (or QEMU closing the socket).
send("quit"); wait_for(lambda r: "return" in r or "error" in r)
PY
fi
note "booting $kver bare: GICv$gic, $smp CPUs, $mem, hvtest=$mode (console log in $log)"
start=$(date +%s.%N)
status=0
timeout "$timeout" qemu-system-aarch64 "${args[@]}" -append "$cmdline hvtest=$mode$append" \
    </dev/null 2>&1 | tee "$log" || status=$?
wait  # for the QMP client
wall=$(echo "$start $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }')
[ "$status" -eq 0 ] || note "QEMU ended with status $status$([ "$status" -eq 124 ] && echo " (timeout after ${timeout}s)")"

grep -q 'LINUX-GUEST: init reached' "$log" || die "the marker 'LINUX-GUEST: init reached' never came (see $log)"
grep -q 'LINUX-GUEST: poweroff' "$log" || die "/init did not get to power off (see $log)"
fail=$(sed -n 's/\r//; s/.*LINUX-GUEST: modules loaded:.*; failed: //p' "$log")
[ "$fail" = none ] || die "modules failed to load: $fail"
if [ "$mode" = probe ]; then
    grep -q 'LINUX-GUEST: virtio drivers: virtio_blk virtio_console virtio_net' "$log" || die "virtio drivers not all bound"
    grep -q 'LINUX-GUEST: disks: vda' "$log" || die "no /dev/vda"
    grep -q 'LINUX-GUEST: net: .*eth0' "$log" || die "no eth0"
    grep -q 'LINUX-GUEST: vda: HVTEST-DISK' "$log" || die "reading /dev/vda did not return its contents"
    note "probe: virtio blk, net and console bound, /dev/vda read back, eth0 present"
fi
n=$(linux_init_ns "$log") || die "no printk timestamps from /init in $log"
echo "bare boot to init: $n instructions (kernel $kver, GICv$gic, $smp CPUs, ${wall}s wall)"
icount=$(cat "$qmp.out" 2>/dev/null || true)
off=$(sed -n 's/^\[ *\([0-9]*\)\.\([0-9]\{6\}\)\] reboot: Power down.*/\1\2/p' "$log" | head -n1)
if [ -n "$icount" ] && [ -n "$off" ]; then
    pre=$((icount - 10#$off * 1000))
    echo "before the first timestamp: about $pre instructions (so about $((n + pre)) from kernel entry to init)"
fi
