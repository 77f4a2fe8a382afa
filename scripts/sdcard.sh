#!/usr/bin/env bash
# Builds a Raspberry Pi 4 SD card image: scripts/sdcard.sh [options]
# Prints the image's path (default target/sdcard.img). No root, no loop
# mounts: the FAT file system is made in a file (mkfs.vfat, mtools), the
# partition table with sfdisk, and both are written into the image with dd.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib/deps.sh"

usage() {
    cat <<USAGE
usage: scripts/sdcard.sh [options]
  --out FILE            the image (default target/sdcard.img)
  --size MiB            the whole card image, a power of two (default 256;
                        QEMU's SD card model wants a power of two)
  --boot-size MiB       partition 1, FAT32 boot (default 128)
  --console mini-uart   the console on GPIO 14/15 (pins 8/10): the mini-UART,
                        as the device tree's stdout-path names it (default)
  --console pl011       the PL011 instead, with Bluetooth disabled
                        (dtoverlay=disable-bt); needs --overlays
  --overlays DIR        a folder holding disable-bt.dtbo (the Raspberry Pi
                        firmware's boot/overlays; Debian does not ship it)
  --guests demo         dom0 plus the demo's Linux guests alpha and beta (default)
  --guests none         dom0 alone
  --config FILE         guests from a configuration file instead (repeatable)
  --keep-data           keep partition 2 (the guests' disks) of an existing
                        image of the same layout
  --debug               debug build of the hypervisor and dom0
Partition 1 (FAT32, type 0x0c): start4.elf and fixup4.dat (Debian's
raspi-firmware), bcm2711-rpi-4-b.dtb (Debian's kernel package), the
hypervisor as kernel8.img, the boot bundle (dom0 + guests) as bundle.cpio,
config.txt and cmdline.txt. Partition 2 (type 0xda): dom0's data disk, from
which the guests' [[vm.disk]] slices are cut.
USAGE
}

out=$ROOT/target/sdcard.img size=256 boot_size=128 console=mini-uart overlays="" guests=demo keep=0 profile=release
configs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?}; shift 2 ;;
        --size) size=${2:?}; shift 2 ;;
        --boot-size) boot_size=${2:?}; shift 2 ;;
        --console) console=${2:?}; shift 2 ;;
        --overlays) overlays=${2:?}; shift 2 ;;
        --guests) guests=${2:?}; shift 2 ;;
        --config) configs+=("${2:?}"); shift 2 ;;
        --keep-data) keep=1; shift ;;
        --debug) profile=debug; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
[[ "$size" =~ ^[0-9]+$ ]] && [ "$size" -ge 64 ] && [ $((size & (size - 1))) = 0 ] || die "--size must be a power of two, at least 64 (MiB)"
[[ "$boot_size" =~ ^[0-9]+$ ]] && [ "$boot_size" -ge 64 ] || die "--boot-size must be at least 64 (MiB): FAT32 needs 65525 clusters"
[ $((boot_size + 8)) -lt "$size" ] || die "--boot-size $boot_size leaves no room for the data partition in $size MiB"
case "$console" in mini-uart|pl011) ;; *) die "--console must be mini-uart or pl011" ;; esac
case "$guests" in demo|none) ;; *) die "--guests must be demo or none" ;; esac
if [ "$console" = pl011 ]; then
    [ -n "$overlays" ] && [ -f "$overlays/disable-bt.dtbo" ] ||
        die "--console pl011 needs --overlays DIR with disable-bt.dtbo (from the Raspberry Pi firmware's boot/overlays)"
fi

# The tools, from Debian's packages, installed like QEMU is.
ensure_tools mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk $([ "$console" = pl011 ] && echo fdtput:device-tree-compiler)

# ---- what goes on the card ---------------------------------------------------
fw=$(raspi_firmware_dir)
dtb=$(pi4_dtb)
flags=(); [ "$profile" = debug ] && flags=(--debug)
built=$("$ROOT/scripts/build.sh" "${flags[@]}")
img=$(sed -n 1p <<<"$built") bundle=$(sed -n 2p <<<"$built")
if [ "$guests" = demo ] && [ ${#configs[@]} -eq 0 ]; then
    source "$ROOT/scripts/lib/linux.sh"
    source "$ROOT/scripts/lib/demo.sh"
    mkdir -p "$ROOT/target"
    demo_config "$ROOT/target/sdcard-demo.toml"
    configs=("$ROOT/target/sdcard-demo.toml")
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ ${#configs[@]} -gt 0 ]; then
    cfgargs=(); for c in "${configs[@]}"; do cfgargs+=(--config "$c"); done
    bundle=$work/bundle.cpio
    (cd "$ROOT" && cargo run -q --release -p mkbundle -- "$bundle" "dom0.img=$ROOT/target/dom0-$profile.img" "${cfgargs[@]}" >&2) ||
        die "cannot build the boot bundle (see the message above)"
fi
cp "$dtb" "$work/bcm2711-rpi-4-b.dtb"
[ "$console" = pl011 ] && fdtput -t s "$work/bcm2711-rpi-4-b.dtb" /chosen stdout-path "serial0:115200n8"

# config.txt: every line is explained in the README ("The SD card").
{
    echo "# Written by scripts/sdcard.sh; README.md, \"The SD card\", explains every line."
    echo "arm_64bit=1"
    echo "kernel=kernel8.img"
    echo "initramfs bundle.cpio followkernel"
    echo "device_tree=bcm2711-rpi-4-b.dtb"
    echo "enable_gic=1"
    echo "enable_uart=1"
    [ "$console" = pl011 ] && echo "dtoverlay=disable-bt"
    echo "uart_2ndstage=1"
} >"$work/config.txt"
# The firmware puts this in /chosen/bootargs (after its own arguments).
echo "loglevel=info" >"$work/cmdline.txt"

# ---- the FAT32 boot partition, made in a file --------------------------------
start1=8192                                  # 4 MiB: erase-block aligned
sectors1=$((boot_size * 2048))
start2=$((start1 + sectors1))
total=$((size * 2048))
fat=$work/boot.fat
mkfs.vfat -F 32 -n RPIBOOT -C "$fat" $((sectors1 / 2)) >/dev/null
export MTOOLS_SKIP_CHECK=1
files=("$fw/start4.elf" "$fw/fixup4.dat" "$work/bcm2711-rpi-4-b.dtb" "$work/config.txt" "$work/cmdline.txt")
mcopy -i "$fat" "${files[@]}" ::/
mcopy -i "$fat" "$img" ::/kernel8.img
mcopy -i "$fat" "$bundle" ::/bundle.cpio
if [ "$console" = pl011 ]; then
    mmd -i "$fat" ::/overlays
    mcopy -i "$fat" "$overlays/disable-bt.dtbo" ::/overlays/
fi

# ---- the image: table, partition 1, partition 2 -------------------------------
new=$work/sdcard.img
truncate -s "${size}M" "$new"
sfdisk --quiet --no-reread --no-tell-kernel "$new" >/dev/null <<TABLE
label: dos
start=$start1, size=$sectors1, type=c, bootable
start=$start2, size=$((total - start2)), type=da
TABLE
dd if="$fat" of="$new" bs=512 seek="$start1" conv=notrunc,sparse status=none
if [ "$keep" = 1 ] && [ -f "$out" ]; then
    if [ "$(stat -c %s "$out")" = "$(stat -c %s "$new")" ] &&
        [ "$(sfdisk --dump "$out" 2>/dev/null | grep -c "start= *$start2,")" = 1 ]; then
        dd if="$out" of="$new" bs=512 skip="$start2" seek="$start2" conv=notrunc,sparse status=none
        note "kept partition 2 of $out"
    else
        die "--keep-data: $out has another size or layout; not overwriting it"
    fi
fi
mkdir -p "$(dirname "$out")"
mv "$new" "$out"
note "SD card image: $out ($size MiB; boot $boot_size MiB FAT32, data $(( (total - start2) / 2048 )) MiB); console $console; guests: ${configs[*]:-none}"
echo "$out"
