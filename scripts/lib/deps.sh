# shellcheck shell=bash
# Shared helpers for scripts/*.sh: installing QEMU, fetching Debian arm64
# packages into the cache, locating LLVM tools. Sourced, never executed.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CACHE=${HV_CACHE:-$ROOT/.cache}
QEMU_MIN_MAJOR=9

die() { echo "error: $*" >&2; exit 2; }
note() { echo "==> $*" >&2; }

# Run a command as root: directly, or through sudo when it needs no password.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@";
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@";
    else return 1; fi
}

qemu_major() {
    command -v qemu-system-aarch64 >/dev/null || { echo 0; return; }
    qemu-system-aarch64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'
}

# The first Debian archive URI of the machine's own apt configuration
# (deb822 .sources files or one-line .list files), so that backports come
# from the same mirror as everything else.
debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ {u=$2} /^Suites:/ && u != "" { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print u; exit } }' "$f"
    done | head -n1 | grep . && return
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }'
}

# QEMU >= 9 (raspi4b appeared in 9.0). On Debian bookworm the stock package is
# 7.2, so enable bookworm-backports from the machine's own mirror.
ensure_qemu() {
    local major; major=$(qemu_major)
    [ "${major:-0}" -ge "$QEMU_MIN_MAJOR" ] && return 0
    local codename=""; [ -r /etc/os-release ] && codename=$(. /etc/os-release; echo "${VERSION_CODENAME:-}")
    local cmd
    if [ "$codename" = bookworm ]; then
        local mirror; mirror=$(debian_mirror)
        [ -n "$mirror" ] || die "cannot find the bookworm mirror in /etc/apt; add bookworm-backports yourself and install qemu-system-arm from it"
        cmd="printf 'Types: deb\nURIs: $mirror\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > /etc/apt/sources.list.d/bookworm-backports.sources && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y -t bookworm-backports qemu-system-arm"
    elif command -v apt-get >/dev/null; then
        cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-arm"
    else
        die "QEMU >= $QEMU_MIN_MAJOR.0 with qemu-system-aarch64 is required (found major version ${major:-none}); install it with your distribution's package manager"
    fi
    note "installing QEMU >= $QEMU_MIN_MAJOR.0 (found ${major:-none})"
    if ! as_root sh -c "$cmd" >&2; then
        die "QEMU >= $QEMU_MIN_MAJOR.0 is needed and I cannot install it without root. Run as root:
    sh -c \"$cmd\""
    fi
    major=$(qemu_major)
    [ "${major:-0}" -ge "$QEMU_MIN_MAJOR" ] || die "installed QEMU is still too old (major $major)"
}

# ensure_tools CMD:PACKAGE...: installs the Debian packages whose commands
# are missing (sdcard.sh: mkfs.vfat, mcopy, sfdisk), as ensure_qemu does.
ensure_tools() {
    local t pkgs=()
    for t in "$@"; do
        command -v "${t%%:*}" >/dev/null || PATH=$PATH:/usr/sbin:/sbin command -v "${t%%:*}" >/dev/null || pkgs+=("${t#*:}")
    done
    export PATH=$PATH:/usr/sbin:/sbin
    [ ${#pkgs[@]} -eq 0 ] && return 0
    local cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${pkgs[*]}"
    note "installing ${pkgs[*]}"
    as_root sh -c "$cmd" >&2 || die "${pkgs[*]} needed and I cannot install them without root. Run as root:
    sh -c \"$cmd\""
}

# The Raspberry Pi boot firmware from Debian's raspi-firmware package
# (component non-free-firmware, which is enabled from the machine's own
# bookworm mirror if apt does not know the package), unpacked into
# $CACHE/raspi-firmware; prints the folder holding start4.elf.
raspi_firmware_dir() {
    local out=$CACHE/raspi-firmware
    if [ ! -f "$out/.done" ]; then
        if ! apt-cache show raspi-firmware >/dev/null 2>&1; then
            local mirror; mirror=$(debian_mirror)
            [ -n "$mirror" ] || die "cannot find the bookworm mirror in /etc/apt; enable the non-free-firmware component yourself"
            local cmd="printf 'Types: deb\nURIs: $mirror\nSuites: bookworm\nComponents: non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > /etc/apt/sources.list.d/bookworm-non-free-firmware.sources && apt-get update"
            note "enabling Debian's non-free-firmware component (for raspi-firmware)"
            as_root sh -c "$cmd" >&2 || die "raspi-firmware is in non-free-firmware; run as root:
    sh -c \"$cmd\""
        fi
        local dir=$CACHE/debs; mkdir -p "$dir"
        local deb; deb=$(ls "$dir"/raspi-firmware_*.deb 2>/dev/null | head -n1)
        if [ -z "$deb" ]; then
            (cd "$dir" && apt-get download raspi-firmware >&2 2>/dev/null) || die "cannot download raspi-firmware"
            deb=$(ls "$dir"/raspi-firmware_*.deb | head -n1)
        fi
        rm -rf "$out"; mkdir -p "$out"
        dpkg-deb -x "$deb" "$out/pkg" && cp "$out"/pkg/usr/lib/raspi-firmware/{start4.elf,fixup4.dat} "$out"/ &&
            rm -rf "$out/pkg" && touch "$out/.done" || die "raspi-firmware: start4.elf or fixup4.dat missing"
    fi
    echo "$out"
}

# Download one Debian arm64 package (exact name) into $CACHE/debs and print
# the .deb path.
fetch_arm64_deb() {
    local name=$1 dir=$CACHE/debs
    mkdir -p "$dir"
    local found; found=$(ls "$dir/${name}_"*_arm64.deb 2>/dev/null | head -n1)
    if [ -n "$found" ]; then echo "$found"; return; fi
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64 || die "need arm64 packages: run 'dpkg --add-architecture arm64 && apt-get update' as root"
        as_root apt-get update >&2 || die "apt-get update failed"
    fi
    (cd "$dir" && apt-get download "$name:arm64" >&2) || {
        as_root apt-get update >&2 && (cd "$dir" && apt-get download "$name:arm64" >&2)
    } || die "cannot download $name:arm64"
    ls "$dir/${name}_"*_arm64.deb | head -n1
}

# The current Debian arm64 kernel package, resolved through the metapackage
# (superseded versions vanish from the archive, so never hard-code one).
debian_kernel_package() {
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        as_root dpkg --add-architecture arm64 && as_root apt-get update >&2 || die "need arm64 packages: run 'dpkg --add-architecture arm64 && apt-get update' as root"
    fi
    local pkg; pkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*-arm64\)\(:arm64\)\{0,1\}$/\1/p' | head -n1)
    [ -n "$pkg" ] || die "cannot resolve linux-image-arm64:arm64 to a kernel package"
    echo "$pkg"
}

# Extract files matching a path glob from the current Debian arm64 kernel
# package (or of package $1) into $CACHE/kernel/<package>/ and print that folder.
debian_kernel_dir() {
    local pkg=${1:-}; [ -n "$pkg" ] || pkg=$(debian_kernel_package)
    local out=$CACHE/kernel/$pkg
    if [ ! -f "$out/.done" ]; then
        local deb; deb=$(fetch_arm64_deb "$pkg")
        rm -rf "$out"; mkdir -p "$out"
        note "unpacking $pkg"
        dpkg-deb -x "$deb" "$out" && touch "$out/.done"
    fi
    echo "$out"
}

# The Raspberry Pi 4 device tree from Debian's kernel package.
pi4_dtb() {
    local dir; dir=$(debian_kernel_dir)
    local dtb; dtb=$(find "$dir" -name bcm2711-rpi-4-b.dtb | head -n1)
    [ -n "$dtb" ] || die "bcm2711-rpi-4-b.dtb not found in $dir"
    echo "$dtb"
}

llvm_tool() {
    local sysroot host
    sysroot=$(rustc --print sysroot)
    host=$(rustc -vV | sed -n 's/^host: //p')
    echo "$sysroot/lib/rustlib/$host/bin/llvm-$1"
}

# The toolchain rust-toolchain.toml names, with its targets and llvm-tools
# (newer rustup versions no longer install them on first use).
ensure_toolchain() {
    (cd "$ROOT" && rustup toolchain install >&2 2>/dev/null) || rustup show active-toolchain >/dev/null
}

# flat_image ELF IMG: the flat arm64 Image a boot loader takes, checked for
# the header's "ARM\x64" magic at offset 56.
flat_image() {
    "$(llvm_tool objcopy)" -O binary "$1" "$2"
    [ "$(dd if="$2" bs=1 skip=56 count=4 2>/dev/null)" = $'ARM\x64' ] || die "$2: arm64 Image magic missing"
}
