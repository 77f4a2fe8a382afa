# shellcheck shell=bash
# The demo's guest configuration, shared by run.sh (virt) and sdcard.sh
# (the Raspberry Pi 4 card). Sourced after deps.sh and linux.sh.

# demo_config FILE: two Debian Linux guests, alpha and beta, each with 2
# vCPUs, a console, a 32 MiB slice of dom0's data disk (alpha at 0, beta
# at 32 MiB) and a port on dom0's switch (10.0.0.1 and 10.0.0.2).
# Fetches the kernel and builds the initramfs on first use.
demo_config() {
    local cfg=$1 g name n img initrd
    LINUX_PKG=${LINUX_PKG:-$(debian_kernel_package)}
    img=$(linux_image) initrd=$(linux_initramfs)
    : >"$cfg"
    for g in alpha:1 beta:2; do
        name=${g%:*} n=${g#*:}
        cat >>"$cfg" <<TOML
[[vm]]
name = "$name"
kernel = "$img"
initrd = "$initrd"
cmdline = "console=ttyAMA0 earlycon hvtest.ip=10.0.0.$n/24"
vcpus = 2
memory = "192M"
autostart = true

[[vm.disk]]
offset = "$(( (n - 1) * 32 ))M"
size = "32M"

[[vm.net]]
mac = "52:54:00:00:00:0$n"

TOML
    done
}
