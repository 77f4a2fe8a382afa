# shellcheck shell=bash
# Guest material for booting Debian's unmodified arm64 Linux kernel, as a VM
# guest or bare in QEMU. Sourced after deps.sh, never executed.
#
#   linux_image       path of the uncompressed arm64 Image (version to stderr)
#   linux_initramfs   path of a newc cpio: static busybox, the virtio modules
#                     and an /init (see LINUX_INIT below)
#   linux_init_ns LOG nanoseconds from the first kernel log line to
#                     "Run /init as init process", read from a console log
#
# Everything is cached under $CACHE/linux/<kernel version>/; the initramfs is
# rebuilt when the kernel, busybox or this file changes. Needs no root:
# the cpio archive (which must hold /dev/console) is written by python3.
# Resolving the kernel package asks apt-cache (about a second); a caller that
# uses several of these functions may resolve it once into LINUX_PKG.

LINUX_SH=${BASH_SOURCE[0]}

_linux_pkg() { if [ -n "${LINUX_PKG:-}" ]; then echo "$LINUX_PKG"; else debian_kernel_package; fi; }

# Modules /init loads, with their dependencies first; built-in ones are left out.
LINUX_MODULES="virtio virtio_ring virtio_mmio virtio_blk virtio_net virtio_console"

# /init. The kernel command line selects what it does after the marker;
# hvtest= takes a comma-separated list, run in this order:
#   probe       list the drivers bound to virtio devices, the disks and
#               network interfaces, read the first line of /dev/vda
#   interrupts  after a second, each CPU's timer and IPI counts from
#               /proc/interrupts ("LINUX-GUEST: interrupts: cpu0 timer=N ipi=M ...")
#   steal       the kernel's paravirtualised-time line ("LINUX-GUEST: pv:
#               arm-pv: using stolen time PV", or "none"), then every CPU
#               busy for 2 s, then the steal column of /proc/stat
#               ("LINUX-GUEST: steal: N ticks of 1/100 s ...")
#   cpujob      every online CPU busy (one awk loop each, pinned with
#               taskset) for hvtest.margin + hvtest.window + hvtest.margin
#               seconds (defaults 20, 10, 20); each says "cpujob: busy on
#               cpuN" as it starts and "cpujob: idle on cpuN" as it ends,
#               /init "cpujob: spinning done" after them. The middle window is
#               measured: "cpujob: window start" and "window end" at its
#               ends, then "LINUX-GUEST: cpujob: window W s on N CPUs: ran
#               R s (R/W CPUs), steal S s, idle I s; cpu0 ran=R0 ..." (ran:
#               the window less /proc/stat's steal and idle, per CPU and
#               summed; W is as read, a late wake-up makes it shorter). When
#               guests' margins cover the skew between their windows, each
#               measured its window while all were busy. Then the steal
#               column of /proc/stat ("LINUX-GUEST: cpujob steal: N ticks
#               of 1/100 s ..."), and the kernel log's soft lockup and RCU
#               stall lines ("LINUX-GUEST: cpujob stalls: N", then each as
#               "LINUX-GUEST: stall: ...")
#   disk        if /dev/vda starts with "HVTEST-PERSIST <hvtest.id>", say
#               "disk: found"; else write that, sync, say "disk: written" and
#               reboot -f (the VM is restarted and finds it)
#   diskload    for hvtest.secs seconds (default 20): 64 KiB of random data
#               written to /dev/vda at one of 64 places, fsync, the page
#               cache dropped, read back and compared; "diskload: N rounds"
#               each second, then "diskload: PASS N rounds ..." or FAIL
#   (always)    hvtest.ip=ADDR/LEN: eth0 up with that address
#   ping        ping hvtest.peer until
#               it answers (up to 30 s), then 5 pings: "ping: N of 5 replies";
#               hvtest.stay=S: stay up S more seconds (for the peer)
#   poweroff    (implied by any of the above) power off
#   (none)      an interactive shell on the console, prompt "guest# "
# The "LINUX-GUEST: dmesg" lines repeat two kernel log lines so that
# linux_init_ns works with "quiet" too.
# shellcheck disable=SC2016  # expanded by /init, not here
LINUX_INIT='#!/bin/sh
export PATH=/bin HOME=/root PS1="guest# "
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "LINUX-GUEST: init reached, uptime $(cat /proc/uptime)"
echo "LINUX-GUEST: dmesg $(dmesg | head -n1)"
echo "LINUX-GUEST: dmesg $(dmesg | grep -m1 "Run /init as init process")"
modes="" id="" ip="" peer="" stay=0 secs=20 window=10 margin=20
for arg in $(cat /proc/cmdline); do
    case $arg in
    hvtest=*) modes=$(echo "${arg#hvtest=}" | tr , " ") ;;
    hvtest.id=*) id=${arg#hvtest.id=} ;;
    hvtest.ip=*) ip=${arg#hvtest.ip=} ;;
    hvtest.peer=*) peer=${arg#hvtest.peer=} ;;
    hvtest.stay=*) stay=${arg#hvtest.stay=} ;;
    hvtest.secs=*) secs=${arg#hvtest.secs=} ;;
    hvtest.window=*) window=${arg#hvtest.window=} ;;
    hvtest.margin=*) margin=${arg#hvtest.margin=} ;;
    esac
done
has() { case " $modes " in *" $1 "*) return 0 ;; esac; return 1; }
if [ "$modes" = cpujob ]; then
    # Nothing here needs them, and under heavy overcommit loading them
    # takes seconds that differ from guest to guest.
    echo "LINUX-GUEST: modules not loaded (hvtest=cpujob alone)"
else
    ok="" failed=""
    for m in @MODULES@; do
        if insmod "/lib/modules/$m.ko"; then ok="$ok $m"; else failed="$failed $m"; fi
    done
    echo "LINUX-GUEST: modules loaded:${ok:- none}; failed:${failed:- none}"
fi
if [ -n "$ip" ]; then
    ip link set eth0 up && ip addr add "$ip" dev eth0 && echo "LINUX-GUEST: eth0 $ip"
fi
if has probe; then
    sleep 1   # let the drivers finish probing
    echo "LINUX-GUEST: virtio drivers:" $(for d in /sys/bus/virtio/devices/*/driver; do
        [ -e "$d" ] && basename "$(readlink "$d")"; done | sort)
    echo "LINUX-GUEST: disks:" $(cd /dev && ls -d vd* 2>/dev/null)
    echo "LINUX-GUEST: net:" $(ls /sys/class/net)
    [ -b /dev/vda ] && echo "LINUX-GUEST: vda: $(head -n1 /dev/vda)"
fi
if has interrupts; then
    sleep 1
    awk '"'"'NR == 1 { n = NF; next }
         /arch_timer/ { for (i = 2; i <= n + 1; i++) t[i - 2] += $i }
         /^ *IPI[0-9]+:/ { for (i = 2; i <= n + 1; i++) p[i - 2] += $i }
         END { line = "LINUX-GUEST: interrupts:"
               for (c = 0; c < n; c++) line = line " cpu" c " timer=" t[c] + 0 " ipi=" p[c] + 0
               print line }'"'"' /proc/interrupts
fi
if has steal; then
    echo "LINUX-GUEST: pv: $(dmesg | grep -m1 "arm-pv:" || echo none)"
    cpus=$(grep -c ^processor /proc/cpuinfo)
    end=$(( $(date +%s) + 2 ))
    i=0
    while [ $i -lt "$cpus" ]; do
        ( while [ "$(date +%s)" -lt $end ]; do :; done ) &
        i=$((i + 1))
    done
    wait
    awk '"'"'/^cpu / { print "LINUX-GUEST: steal: " $9 " ticks of 1/100 s (user " $2 ", system " $4 ", idle " $5 ")" }'"'"' /proc/stat
fi
if has cpujob; then
    read -r t0 _ </proc/uptime
    w0=$(( ${t0%.*} + margin )); w1=$((w0 + window)); end=$((w1 + margin)); cpus=$(nproc)
    # One awk a CPU, reading the uptime between rounds of arithmetic; the
    # one on CPU 0 also takes the snapshots (uptime, then /proc/stat: $5
    # idle, $6 iowait, $9 steal, in 1/100 s) and reports: no fork or exec
    # at the window edges, which can take seconds here.
    for c in $(seq 0 $((cpus - 1))); do
        taskset -c "$c" awk -v w0="$w0" -v w1="$w1" -v end="$end" -v me="$c" '"'"'
            function up(  l, a) { getline l < "/proc/uptime"; close("/proc/uptime"); split(l, a, " "); return a[1] + 0 }
            function snap(k,  l, f) {
                t[k] = up()
                while ((getline l < "/proc/stat") > 0) {
                    split(l, f, " ")
                    if (f[1] ~ /^cpu[0-9]/) { off[k, f[1]] = f[5] + f[6]; st[k, f[1]] = f[9]; if (k == 1) cpu[++n] = f[1] }
                }
                close("/proc/stat")
            }
            BEGIN {
                k = 0
                print "LINUX-GUEST: cpujob: busy on cpu" me; fflush()
                while ((now = up()) < end) {
                    if (me == 0 && k == 0 && now >= w0) { snap(1); k = 1; print "LINUX-GUEST: cpujob: window start"; fflush() }
                    if (me == 0 && k == 1 && now >= w1) { snap(2); k = 2; print "LINUX-GUEST: cpujob: window end"; fflush() }
                    for (i = 0; i < 2000; i++) s += i
                }
                print "LINUX-GUEST: cpujob: idle on cpu" me; fflush()
                if (me != 0 || k != 2) exit
                w = t[2] - t[1]; line = ""
                for (i = 1; i <= n; i++) {
                    c = cpu[i]; o = (off[2, c] - off[1, c]) / 100; x = (st[2, c] - st[1, c]) / 100
                    r = w - o - x; R += r; S += x; O += o; line = line sprintf(" %s ran=%.2f", c, r)
                }
                printf "LINUX-GUEST: cpujob: window %.2f s on %d CPUs: ran %.2f s (%.3f CPUs), steal %.2f s, idle %.2f s;%s\n", w, n, R, R / w, S, O, line
            }'"'"' &
    done
    echo "LINUX-GUEST: cpujob: spinning on $cpus CPUs"
    wait
    echo "LINUX-GUEST: cpujob: spinning done"
    awk '"'"'/^cpu / { line = "LINUX-GUEST: cpujob steal: " $9 " ticks of 1/100 s (user " $2 ", system " $4 ", idle " $5 ");" }
         /^cpu[0-9]/ { line = line " " $1 "=" $9 }
         END { print line }'"'"' /proc/stat
    stalls=$(dmesg | grep -E "soft lockup|self-detected stall|detected stalls|rcu: INFO")
    echo "LINUX-GUEST: cpujob stalls: $(printf "%s" "$stalls" | grep -c .)"
    [ -z "$stalls" ] || printf "%s\n" "$stalls" | sed "s/^/LINUX-GUEST: stall: /"
fi
if has disk; then
    want="HVTEST-PERSIST $id"
    got=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n1)
    if [ "$got" = "$want" ]; then
        echo "LINUX-GUEST: disk: found $id"
    else
        echo "$want" | dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null
        sync
        echo "LINUX-GUEST: disk: written $id, rebooting"
        reboot -f
    fi
fi
if has diskload; then
    end=$(( $(date +%s) + secs )) last=$(date +%s) n=0 bad=0
    while [ "$(date +%s)" -lt $end ]; do
        at=$(( (n * 37) % 64 ))
        dd if=/dev/urandom of=/tmp/w bs=64k count=1 2>/dev/null
        dd if=/tmp/w of=/dev/vda bs=64k seek=$at count=1 conv=fsync 2>/dev/null
        echo 3 > /proc/sys/vm/drop_caches
        dd if=/dev/vda of=/tmp/r bs=64k skip=$at count=1 2>/dev/null
        cmp -s /tmp/w /tmp/r || bad=$((bad + 1))
        n=$((n + 1))
        now=$(date +%s)
        if [ "$now" -ne "$last" ]; then echo "LINUX-GUEST: diskload: $n rounds"; last=$now; fi
    done
    if [ $bad -eq 0 ] && [ $n -gt 0 ]; then
        echo "LINUX-GUEST: diskload: PASS $n rounds of 64 KiB written, synced, dropped from the cache, read back identical"
    else
        echo "LINUX-GUEST: diskload: FAIL $bad of $n rounds read back different"
    fi
fi
if has ping; then
    tries=0
    until ping -c 1 -W 1 "$peer" >/dev/null 2>&1 || [ $tries -ge 30 ]; do tries=$((tries + 1)); done
    replies=$(ping -c 5 -W 2 "$peer" 2>/dev/null | grep -c "bytes from")
    echo "LINUX-GUEST: ping: $replies of 5 replies from $peer"
    sleep "$stay"
fi
if [ -n "$modes" ]; then echo "LINUX-GUEST: poweroff"; poweroff -f; fi
while :; do setsid cttyhack sh; done
'

linux_image() {
    local pkg kver dir
    pkg=$(_linux_pkg); kver=${pkg#linux-image-}; dir=$(debian_kernel_dir "$pkg")
    note "linux kernel $kver (package version $(dpkg-deb -f "$(fetch_arm64_deb "$pkg")" Version))"
    local out=$CACHE/linux/$kver/Image src=$dir/boot/vmlinuz-$kver
    if [ ! -f "$out" ]; then
        [ -f "$src" ] || die "$src missing"
        mkdir -p "${out%/*}"
        # Debian's arm64 vmlinuz has been a plain Image; older ones were gzip.
        if [ "$(head -c2 "$src" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then
            gzip -dc "$src" > "$out.tmp"
        else
            cp "$src" "$out.tmp"
        fi
        [ "$(dd if="$out.tmp" bs=1 skip=56 count=4 2>/dev/null)" = $'ARM\x64' ] ||
            die "$src: not an arm64 Image (nor gzip of one)"
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}

# Print a (possibly compressed) module file uncompressed.
_linux_ko_cat() {
    case $1 in
    *.ko) cat "$1" ;;
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -dc "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) die "unknown module file $1" ;;
    esac
}

# The dependency order of the modules in $LINUX_MODULES for the kernel tree
# $1/lib/modules/$2, one "name path" a line. Debian's package has no
# modules.dep (depmod runs at install time), so the "depends=" field of each
# module's .modinfo is read instead. Built-in modules are reported and left out.
_linux_module_order() {
    local mdir=$1/lib/modules/$2 f n
    local -A path=() seen=()
    while read -r f; do
        n=${f##*/}; n=${n%%.ko*}; path[${n//-/_}]=$f
    done < <(find "$mdir/kernel" -name '*.ko*')
    _linux_visit() {
        local n=$1 d
        [ -z "${seen[$n]:-}" ] || return 0
        seen[$n]=1
        # Not grep -q: with pipefail, tr would die of SIGPIPE and fail the test.
        if tr - _ < "$mdir/modules.builtin" | grep "/$n\.ko$" >/dev/null; then
            note "module $n is built in"; return 0
        fi
        [ -n "${path[$n]:-}" ] || die "module $n not found in $mdir"
        for d in $(_linux_ko_cat "${path[$n]}" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n1 | tr , ' '); do
            _linux_visit "${d//-/_}"
        done
        echo "$n ${path[$n]}"
    }
    for n in $LINUX_MODULES; do _linux_visit "$n"; done
}

linux_initramfs() {
    local pkg kver kdir bb
    pkg=$(_linux_pkg); kver=${pkg#linux-image-}; kdir=$(debian_kernel_dir "$pkg")
    bb=$(fetch_arm64_deb busybox-static)
    local out=$CACHE/linux/$kver/initramfs.cpio key
    key=$({ echo "$kver"; basename "$bb"; cat "$LINUX_SH"; } | sha256sum | cut -c1-16)
    if [ -f "$out" ] && [ "$(cat "$out.key" 2>/dev/null)" = "$key" ]; then echo "$out"; return; fi
    note "building initramfs for $kver"
    local root=$CACHE/linux/$kver/initramfs.d
    rm -rf "$root" "$root.bb"; mkdir -p "$root"/{bin,dev,proc,sys,tmp,root,lib/modules,usr}
    ln -s bin "$root/sbin"; ln -s ../bin "$root/usr/bin"; ln -s ../bin "$root/usr/sbin"
    { dpkg-deb -x "$bb" "$root.bb" && cp "$root.bb/bin/busybox" "$root/bin/"; } || die "cannot unpack $bb"
    rm -rf "$root.bb"
    # A symlink for every applet: busybox keeps their names as one
    # NUL-separated, sorted table that starts "[", "[[".
    local a applets
    applets=$(tr '\0' '\n' < "$root/bin/busybox" |
        awk 'p && $0 == "" { exit } p { print } $0 == "[" { getline n; if (n == "[[") { p = 1; print "["; print "[[" } }')
    for a in sh mount insmod poweroff setsid cttyhack dmesg; do
        grep -qx -- "$a" <<<"$applets" || die "busybox applet $a missing (applet table: $(wc -l <<<"$applets") names)"
    done
    for a in $applets; do [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"; done
    local mods="" n f order
    order=$(_linux_module_order "$kdir" "$kver") || exit 2
    while read -r n f; do
        _linux_ko_cat "$f" > "$root/lib/modules/$n.ko" || die "cannot unpack $f"
        mods="$mods $n"
    done <<<"$order"
    note "modules, in load order:$mods"
    printf '%s' "${LINUX_INIT/@MODULES@/${mods# }}" > "$root/init"; chmod 755 "$root/init"
    # newc with owner root, mtime 0 and a /dev/console node, which the kernel
    # opens for init's stdin/stdout before init runs (devtmpfs comes later).
    python3 - "$root" "$out.tmp" <<'EOF' || die "cpio failed"
import os, stat, sys
root, out = sys.argv[1], sys.argv[2]
entries = [("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1))]
for d, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(dirs + files):
        p = os.path.join(d, name); st = os.lstat(p); rel = os.path.relpath(p, root)
        if stat.S_ISLNK(st.st_mode): data = os.readlink(p).encode()
        elif stat.S_ISREG(st.st_mode): data = open(p, "rb").read()
        else: data = b""
        entries.append((rel, st.st_mode, data, (0, 0)))
entries.sort(key=lambda e: e[0])
with open(out, "wb") as f:
    def put(ino, name, mode, data, rdev):
        nb = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        hdr = "070701" + "".join("%08x" % v for v in
            (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0))
        f.write(hdr.encode() + nb + b"\0" * (-(110 + len(nb)) % 4))
        f.write(data + b"\0" * (-len(data) % 4))
    for i, (name, mode, data, rdev) in enumerate(entries, 1):
        put(i, name, mode, data, rdev)
    put(0, "TRAILER!!!", 0, b"", (0, 0))
EOF
    mv "$out.tmp" "$out"; echo "$key" > "$out.key"
    echo "$out"
}

# linux_init_ns LOG: nanoseconds between the kernel's first log line and its
# "Run /init as init process" line, from their printk timestamps as /init
# repeats them ("LINUX-GUEST: dmesg [    1.234567] ..."). Both are kernel
# sched_clock readings (arch counter based, counted from sched_clock's start
# during time_init, so an offset of the counter at VM start does not matter).
linux_init_ns() {
    sed -n 's/\r//; s/^.*LINUX-GUEST: dmesg \[ *\([0-9]*\)\.\([0-9]\{6\}\)\].*/\1 \2/p' "$1" |
        awk 'NR == 1 { t0 = $1 * 1000000 + $2 } NR == 2 { printf "%d\n", ($1 * 1000000 + $2 - t0) * 1000; ok = 1 }
             END { if (!ok) exit 1 }'
}
