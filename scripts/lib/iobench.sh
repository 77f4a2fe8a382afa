# shellcheck shell=bash
# Sourced by scripts/bench.sh (--io): guest IO figures, printed by
# scripts/lib/iobench_report.py.
#
# Disk: the `virtio` test guest's `bench:N` mode (guests/virtio/src/bench.rs:
# N 4 KiB and max(N/8, 2) 1 MiB reads and writes, one at a time, first
# polling the used ring, then sleeping in WFI for the used-buffer
# interrupt) on a slice of a fresh 16 MiB disk, on QEMU virt with 3 CPUs:
# dom0 on CPUs 0 and 1 (dom0.vcpus=2: its IO worker, which serves guests'
# disk turns, on CPU 1), the guest pinned to CPU 2. Dom0's `iostat` is read
# after the polled requests and at the end: backend hypercalls and
# virtio-blk requests of each half. The same guest and workload also run
# bare on QEMU's own virtio-blk (no hypervisor, 1 CPU).
# Frames: two virtio guests on dom0's switch (QEMU virt, 4 CPUs, dom0 on
# CPUs 0 and 1, sender on 2, receiver on 3), IO_FRAMES frames, windowed
# and acknowledged (guests/virtio/src/net.rs).
#
# Each disk run is made twice: under -icount shift=0 (guest time is
# instructions, but a CPU idling in WFI warps time to its next timer, and
# a wait for QEMU's disk thread turns host time into spun instructions),
# with the tools/insn-count plugin counting what each CPU executed between
# the guest's markers and how much of it was spin-waiting; and in real time
# (this machine's load included), for the bare-versus-hypervisor
# comparison. The frame run is made under -icount with the plugin.
#
# IO_N (default 100) 4 KiB requests a row; IO_FRAMES (default 2000) frames.
#
# io_profile OP WAIT (scripts/bench.sh --io-profile): only the disk run
# under -icount, with the plugin also profiling the row OP (read-4k,
# write-4k, read-1m, write-1m) WAIT (poll, irq): per CPU, the functions of
# the hypervisor, dom0 and the guest that row's instructions ran in, per
# request (scripts/lib/io_profile.py).

# io_plugin: builds the plugin into target/ (a C compiler is needed) and
# prints its path, or nothing when it cannot be built.
io_plugin() {
    local src=$ROOT/tools/insn-count/insn_count.c so=$ROOT/target/insn_count.so
    if [ ! -f "$so" ] || [ "$src" -nt "$so" ] || [ "$ROOT/tools/insn-count/qemu_plugin_api.h" -nt "$so" ]; then
        mkdir -p "$ROOT/target"
        cc -shared -fPIC -O2 -fvisibility=hidden -o "$so" "$src" >&2 || { note "no instruction counts: cannot build $src"; return 0; }
    fi
    echo "$so"
}

# io_plugin_args OUT: QEMU arguments that count into OUT (none without it).
io_plugin_args() {
    [ -n "$plugin" ] && echo "-plugin $plugin,out=$1"
}

# io_blk_hv NAME [run.sh options]: the disk bench under the hypervisor;
# the console log in $dir/NAME.log.
io_blk_hv() {
    local name=$1; shift
    truncate -s 16M "$dir/$name.img"
    cat >"$dir/$name.toml" <<TOML
[[vm]]
name = "blkbench"
kernel = "$guest"
memory = "16M"
cmdline = "virtio.blk=bench:$n"
autostart = true
pin = [2]

[[vm.disk]]
offset = "1M"
size = "8M"
TOML
    cat >"$dir/$name.script" <<'SCRIPT'
timeout 900
expect RESULT virtio: blk-bench op=write-1m wait=poll
send iostat
expect virtio-blk requests
expect TEST virtio: blk-bench
expect dom0> 
send iostat
expect virtio-blk requests
expect dom0> 
send poweroff
exit
SCRIPT
    # shellcheck disable=SC2046 # the plugin's arguments split on purpose
    python3 "$ROOT/scripts/lib/console_test.py" "$dir/$name.log" "$dir/$name.script" -- \
        "$ROOT/scripts/run.sh" --timeout 1200 --smp 3 --append dom0.vcpus=2 --disk "$dir/$name.img" \
        --config "$dir/$name.toml" "$@" >/dev/null ||
        { note "io bench: $name failed (log: $dir/$name.log)"; tail -n 20 "$dir/$name.log" >&2; }
    rm -f "$dir/$name.img"
}

# io_blk_bare NAME [QEMU options]: the same guest on QEMU's virtio-blk.
io_blk_bare() {
    local name=$1; shift
    truncate -s 16M "$dir/$name.img"
    timeout 1200 qemu-system-aarch64 -machine virt,gic-version=3 -cpu cortex-a72 -smp 1 -m 64M \
        -display none -monitor none -serial stdio -global virtio-mmio.force-legacy=false \
        -drive "file=$dir/$name.img,if=none,format=raw,id=hd0" -device virtio-blk-device,drive=hd0 \
        -kernel "$guest" -append "virtio.blk=bench:$n" "$@" </dev/null >"$dir/$name.log" 2>&1 ||
        note "io bench: $name failed (log: $dir/$name.log)"
    rm -f "$dir/$name.img"
}

# io_net NAME [run.sh options]: FRAMES frames between two guests.
io_net() {
    local name=$1; shift
    cat >"$dir/$name.toml" <<TOML
[[vm]]
name = "send"
kernel = "$guest"
memory = "16M"
cmdline = "virtio.net=send:$frames"
autostart = true
pin = [2]

[[vm.net]]
mac = "52:54:00:00:10:01"

[[vm]]
name = "recv"
kernel = "$guest"
memory = "16M"
cmdline = "virtio.net=recv:$frames"
autostart = true
pin = [3]

[[vm.net]]
mac = "52:54:00:00:10:02"
TOML
    "$ROOT/scripts/run.sh" --until-idle --timeout 1200 --smp 4 --append dom0.vcpus=2 --config "$dir/$name.toml" "$@" \
        </dev/null >"$dir/$name.log" 2>&1 || note "io bench: $name failed (log: $dir/$name.log)"
}

# io_bench: every run, then the report.
io_bench() {
    local n=${IO_N:-100} frames=${IO_FRAMES:-2000} dir plugin guest
    ensure_qemu
    guest=$("$ROOT/scripts/build-guests.sh" virtio)
    "$ROOT/scripts/build.sh" >/dev/null
    plugin=$(io_plugin)
    dir=$(mktemp -d)
    # shellcheck disable=SC2046
    io_blk_hv hv-icount --icount -- $(io_plugin_args "$dir/hv-icount.marks")
    # shellcheck disable=SC2046
    io_blk_bare bare-icount -icount shift=0,sleep=off $(io_plugin_args "$dir/bare-icount.marks")
    io_blk_hv hv-real
    io_blk_bare bare-real
    # shellcheck disable=SC2046
    io_net net-icount --icount -- $(io_plugin_args "$dir/net-icount.marks")
    python3 "$ROOT/scripts/lib/iobench_report.py" "$dir" "$n" "$frames"
    if [ -n "${IO_KEEP:-}" ]; then note "io bench logs kept in $dir"; else rm -rf "$dir"; fi
}

# io_profile OP WAIT: see the header.
io_profile() {
    local op=${1:-read-4k} wait=${2:-poll} n=${IO_N:-100} dir plugin guest k=-1 i=0 o w reqs
    for w in poll irq; do
        for o in read-4k write-4k read-1m write-1m; do
            [ "$o/$w" = "$op/$wait" ] && k=$((2 * i))
            i=$((i + 1))
        done
    done
    [ "$k" -ge 0 ] || die "usage: scripts/bench.sh --io-profile [read-4k|write-4k|read-1m|write-1m] [poll|irq]"
    reqs=$n; [[ $op = *-1m ]] && reqs=$((n / 8 > 2 ? n / 8 : 2))
    ensure_qemu
    guest=$("$ROOT/scripts/build-guests.sh" virtio)
    "$ROOT/scripts/build.sh" >/dev/null
    plugin=$(io_plugin)
    [ -n "$plugin" ] || die "io profile: the plugin did not build"
    dir=$(mktemp -d)
    io_blk_hv hv-icount --icount -- -plugin "$plugin,out=$dir/marks,profile=$dir/profile,from=$k"
    local T=$ROOT/target
    python3 "$ROOT/scripts/lib/io_profile.py" "$dir/profile" "$reqs" --nm "$(llvm_tool nm)" --top "${IO_TOP:-25}" \
        --hv "$T/aarch64-unknown-none-softfloat/release/hypervisor@0x40080000" \
        --dom0 "$T/aarch64-unknown-none/release/host-dom0@0x50080000" \
        --guest "$T/aarch64-unknown-none/release/guest-virtio@0x40080000"
    if [ -n "${IO_KEEP:-}" ]; then note "io profile kept in $dir"; else rm -rf "$dir"; fi
}
