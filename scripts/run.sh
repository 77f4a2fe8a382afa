#!/usr/bin/env bash
# Boots the hypervisor under QEMU. See `scripts/run.sh --help`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

usage() {
    cat <<USAGE
usage: scripts/run.sh [options] [-- extra QEMU arguments]
With no arguments at all: the demo (--demo) on QEMU virt, GICv3, 4 CPUs.
  --demo                  dom0 and two Debian Linux guests, alpha and beta, each
                          with a console, a 32 MiB slice of dom0's disk
                          (target/demo-disk.img) and a port on dom0's switch
                          (10.0.0.1 and 10.0.0.2); fetches the kernel on first use.
                          With --machine raspi4b: the same on the SD card that
                          scripts/sdcard.sh builds (target/sdcard.img, its data
                          partition kept between runs)
  --machine virt|raspi4b  QEMU machine (default virt)
  --gic 2|3               GIC version on virt (default 3)
  --smp N                 CPUs (default 4; raspi4b always has 4)
  --cpu MODEL             QEMU CPU model on virt (default cortex-a72), e.g. max, neoverse-n1
  --memory SIZE           RAM, e.g. 1G or 512M (default 1G; raspi4b always has 2G)
  --append ARGS           hypervisor command line, e.g. "loglevel=debug"
  --until-idle            stop the machine once nothing is left to run
  --icount                count instructions: -icount shift=0,sleep=off
  --timeout SECONDS       end the run with status 124 after SECONDS
  --debug                 debug build, QEMU waits for gdb on tcp::1234
  --no-dom0               boot the hypervisor alone (no boot bundle)
  --vm kernel=PATH[,initrd=PATH][,cmdline=STR][,vcpus=N][,memory=SIZE][,name=NAME][,pin=A:B][,weight=N]
                          a guest VM, autostarted by dom0 (repeatable)
  --config FILE           guest VMs from a configuration file (repeatable; see README)
  --file NAME=PATH        PATH in the boot bundle as NAME, unchecked (repeatable), e.g. a
                          .toml for dom0's `create NAME`
  --disk FILE             a raw disk image as a virtio-blk device (modern virtio-mmio;
                          virt only); dom0 drives it (shell: disk). FILE goes to
                          -drive file=, so QEMU prefixes such as blkdebug:CFG:IMG work
  --sdcard IMG            raspi4b: boot what the card image's FAT partition holds
                          (kernel8.img, bundle.cpio, bcm2711-rpi-4-b.dtb; QEMU does not
                          run the Pi firmware) with IMG as the SD card in the EMMC2
                          slot; dom0's data disk is its partition 2 (scripts/sdcard.sh)
Console: Ctrl-a three times moves the input between dom0 and the guests' consoles;
Ctrl-t x quits QEMU, Ctrl-t c switches to its monitor (QEMU's escape is Ctrl-t, not
its usual Ctrl-a, which dom0's console multiplexer uses).
USAGE
}

machine=virt gic=3 smp=4 cpu=cortex-a72 memory=1G append="" until_idle=0 icount=0 timeout=0 debug=0 dom0=1 disk="" sdcard=""
vms=() files=() demo=0
[ $# -eq 0 ] && demo=1
while [ $# -gt 0 ]; do
    case "$1" in
        --demo) demo=1; shift ;;
        --machine) machine=${2:?}; shift 2 ;;
        --gic) gic=${2:?}; shift 2 ;;
        --smp) smp=${2:?}; shift 2 ;;
        --cpu) cpu=${2:?}; shift 2 ;;
        --memory) memory=${2:?}; shift 2 ;;
        --append) append=${2?}; shift 2 ;;
        --until-idle) until_idle=1; shift ;;
        --icount) icount=1; shift ;;
        --timeout) timeout=${2:?}; shift 2 ;;
        --debug) debug=1; shift ;;
        --no-dom0) dom0=0; shift ;;
        --vm) vms+=(--vm "${2:?}"); shift 2 ;;
        --config) vms+=(--config "${2:?}"); shift 2 ;;
        --file) files+=("${2:?}"); shift 2 ;;
        --disk) disk=${2:?}; shift 2 ;;
        --sdcard) sdcard=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
case "$machine" in virt|raspi4b) ;; *) die "--machine must be virt or raspi4b" ;; esac
case "$gic" in 2|3) ;; *) die "--gic must be 2 or 3" ;; esac
[[ "$smp" =~ ^[1-9][0-9]*$ ]] || die "--smp must be a positive number"
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[ "$gic" = 2 ] && [ "$smp" -gt 8 ] && die "GICv2 supports at most 8 CPUs"
if [ -n "$disk" ]; then
    [ "$machine" = virt ] || die "--disk needs --machine virt (virtio-mmio); $machine has no virtio transports"
    [[ "$disk" == *:* ]] || [ -f "$disk" ] || die "--disk $disk: no such file (create one with: truncate -s 16M $disk)"
fi

if [ -n "$sdcard" ]; then
    [ "$machine" = raspi4b ] || die "--sdcard needs --machine raspi4b"
    [ -f "$sdcard" ] || die "--sdcard $sdcard: no such file (make one with scripts/sdcard.sh)"
    [ ${#vms[@]} -eq 0 ] || die "--sdcard: the guests come from the card's bundle (scripts/sdcard.sh --config FILE)"
fi

ensure_qemu
if [ "$demo" = 1 ] && [ "$machine" = raspi4b ]; then
    # The Pi demo: the card with dom0 and the demo's guests; rebuilt each
    # time (the guests' disks in partition 2 are kept).
    keep=(); [ -f "$ROOT/target/sdcard.img" ] && keep=(--keep-data)
    flags=(); [ "$debug" = 1 ] && flags=(--debug)
    sdcard=$("$ROOT/scripts/sdcard.sh" --guests demo "${keep[@]}" "${flags[@]}") || die "cannot build the SD card image"
    demo=0
    note "Pi demo: dom0 and the Linux guests alpha and beta on $sdcard; Ctrl-a three times switches consoles, Ctrl-t x quits"
fi
if [ "$demo" = 1 ]; then
    source "$ROOT/scripts/lib/linux.sh"
    source "$ROOT/scripts/lib/demo.sh"
    demo_cfg=$ROOT/target/demo.toml
    mkdir -p "$ROOT/target"
    demo_config "$demo_cfg"
    vms+=(--config "$demo_cfg")
    if [ -z "$disk" ]; then
        disk=$ROOT/target/demo-disk.img
        [ -f "$disk" ] || truncate -s 64M "$disk"
    fi
    note "demo: dom0 and the Linux guests alpha and beta; Ctrl-a three times switches consoles, Ctrl-t x quits"
fi
if [ -n "$sdcard" ]; then
    # The card's own files, taken out of its FAT partition (partition 1).
    ensure_tools mcopy:mtools sfdisk:fdisk
    start1=$(sfdisk --dump "$sdcard" 2>/dev/null | sed -n 's/.*1 : start= *\([0-9]*\),.*/\1/p')
    [ -n "$start1" ] || die "$sdcard: no partition 1"
    cardfiles=$(mktemp -d)
    trap 'rm -rf "$cardfiles"' EXIT
    for f in kernel8.img bundle.cpio bcm2711-rpi-4-b.dtb; do
        MTOOLS_SKIP_CHECK=1 mcopy -i "$sdcard@@$((start1 * 512))" "::/$f" "$cardfiles/$f" || die "$sdcard: no $f in partition 1"
    done
    img=$cardfiles/kernel8.img bundle=$cardfiles/bundle.cpio
else
    if [ "$debug" = 1 ]; then built=$("$ROOT/scripts/build.sh" --debug); else built=$("$ROOT/scripts/build.sh"); fi
    img=$(sed -n 1p <<<"$built") bundle=$(sed -n 2p <<<"$built")
fi
if [ ${#vms[@]} -gt 0 ] || [ ${#files[@]} -gt 0 ]; then
    # A bundle of its own for this run: dom0 plus the guests and files asked for.
    profile=release; [ "$debug" = 1 ] && profile=debug
    run_bundle=$ROOT/target/run-bundle-$$.cpio
    trap 'rm -f "$run_bundle"' EXIT
    cargo run -q --release -p mkbundle -- "$run_bundle" "dom0.img=$ROOT/target/dom0-$profile.img" ${files[@]+"${files[@]}"} ${vms[@]+"${vms[@]}"} ||
        die "cannot build the boot bundle (see the message above)"
    bundle=$run_bundle
fi
[ "$until_idle" = 1 ] && append="${append:+$append }hv.until_idle"

# One multiplexed stdio console for every UART of the board, so whichever
# one the device tree names as stdout-path is the one you see.
qemu=(qemu-system-aarch64 -display none -monitor none
      -echr 20 -chardev stdio,id=con,mux=on -mon chardev=con,mode=readline
      -kernel "$img")
[ "$dom0" = 1 ] && qemu+=(-initrd "$bundle")
case "$machine" in
    virt)
        qemu+=(-machine "virt,virtualization=on,gic-version=$gic" -cpu "$cpu"
               -smp "$smp" -m "$memory" -serial chardev:con)
        ;;
    raspi4b)
        [ "$smp" = 4 ] || note "raspi4b always has 4 CPUs; ignoring --smp $smp"
        [ "$cpu" = cortex-a72 ] || note "raspi4b always has Cortex-A72s; ignoring --cpu $cpu"
        [ "$memory" = 1G ] || note "raspi4b always has 2G of RAM; ignoring --memory $memory"
        dtb=$(pi4_dtb); [ -n "$sdcard" ] && dtb=$cardfiles/bcm2711-rpi-4-b.dtb
        qemu+=(-machine raspi4b -dtb "$dtb" -serial chardev:con -serial chardev:con)
        # QEMU's -drive if=sd lands on the legacy SDHCI (0x7e300000, the
        # Pi 4's WiFi slot); the first generic-sdhci on the system bus is
        # the EMMC2 at 0x7e340000, the Pi 4's microSD slot.
        [ -n "$sdcard" ] && qemu+=(-drive "file=${sdcard//,/,,},if=none,format=raw,id=sdcard"
                                   -device sd-card,drive=sdcard,bus=/generic-sdhci/sd-bus)
        ;;
esac
[ -n "$append" ] && qemu+=(-append "$append")
# Modern (version 2) virtio-mmio transports; QEMU's default is legacy. A
# comma in a -drive value is written twice.
[ -n "$disk" ] && qemu+=(-global virtio-mmio.force-legacy=false
                         -drive "file=${disk//,/,,},if=none,format=raw,id=hd0" -device virtio-blk-device,drive=hd0)
[ "$icount" = 1 ] && qemu+=(-icount shift=0,sleep=off)
[ "$debug" = 1 ] && { qemu+=(-s -S); note "QEMU waits for gdb: gdb $ROOT/target/aarch64-unknown-none-softfloat/debug/hypervisor -ex 'target remote :1234'"; }
qemu+=("$@")

# --until-idle: the run's status comes from what the hypervisor reports:
# 0 only after "nothing left to run" with no crash report. Without PSCI
# (raspi4b) the hypervisor cannot switch the machine off; it says so and
# parks, and this script ends QEMU for it.
if [ "$until_idle" = 1 ]; then
    fifo=$(mktemp -u); mkfifo "$fifo"
    trap 'rm -f "$fifo" ${run_bundle:+"$run_bundle"}; rm -rf ${cardfiles:+"$cardfiles"}' EXIT
    if [ "$timeout" -gt 0 ]; then timeout "$timeout" "${qemu[@]}" >"$fifo" </dev/null & else "${qemu[@]}" >"$fifo" </dev/null & fi
    pid=$!
    idle=0 crashed=0
    while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in
            *"nothing left to run"*) idle=1 ;;
            *"*** hypervisor panic"*|*"*** unexpected exception"*|*"*** some guests did not end with SYSTEM_OFF"*) crashed=1 ;;
            *"*** system stopped: no PSCI"*) kill "$pid" 2>/dev/null || true ;;
        esac
    done <"$fifo"
    set +e; wait "$pid"; qstatus=$?; set -e
    if [ "$qstatus" = 124 ]; then echo "run.sh: timed out after ${timeout}s" >&2; exit 124; fi
    [ "$idle" = 1 ] && [ "$crashed" = 0 ] && exit 0
    echo "run.sh: the hypervisor did not stop cleanly" >&2
    exit 1
fi

set +e
if [ "$timeout" -gt 0 ]; then timeout --foreground "$timeout" "${qemu[@]}"; else "${qemu[@]}"; fi
status=$?
set -e
[ "$status" = 124 ] && echo "run.sh: timed out after ${timeout}s" >&2
exit "$status"
