# shellcheck shell=bash
# Sourced by scripts/bench.sh (--scale): the figures of one VM while
# others are busy, and the time to create and start 16 VMs (issue 15).
#
# QEMU virt, 8 CPUs, GICv3, -icount shift=0,sleep=off. Dom0 has one vCPU
# (dom0.vcpus=1, on CPU 0). The measured VM is the bench guest (2 vCPUs,
# pinned to CPUs 1 and 2; null hypercall, GIC distributor read, virtual
# IPI, forwarded UART read, SCALE_N iterations each, default 500); the
# busy VMs are spin guests (1 vCPU each, pinned to CPUs 3-7, spinning
# for longer than the run, which dom0 powers off once the bench guest is
# done). Runs with 1, 4 and 16 VMs in
# all: the bench guest alone, with 3 and with 15 spinners.
#
# Under -icount QEMU runs the CPUs round-robin in one thread and the
# virtual clock counts every CPU's instructions, so the guest's own clock
# also counts what the spinners execute meanwhile. The figures that
# compare are therefore taken by the tools/insn-count plugin: what CPUs 0-2
# (dom0 and the measured VM) executed between the bench guest's window
# marks, per operation (the guest's empty loop and its waits included).
# The guest's own figures are printed beside them.

# scale_run NAME VMS: one run with VMS VMs; log, marks and config in $dir.
scale_run() {
    local name=$1 vms=$2 i
    {
        cat <<TOML
[[vm]]
name = "bench"
kernel = "$bench_img"
memory = "16M"
vcpus = 2
cmdline = "bench.n=$n bench.ops=hypercall+gicd-read+ipi+uart-fwd"
autostart = true
pin = [1, 2]
TOML
        for ((i = 1; i < vms; i++)); do
            cat <<TOML

[[vm]]
name = "busy-$i"
kernel = "$spin_img"
memory = "8M"
cmdline = "spin.windows=$windows"
autostart = true
pin = [3, 4, 5, 6, 7]
TOML
        done
    } >"$dir/$name.toml"
    # The spinners outlast the bench guest; the run ends when it is done.
    cat >"$dir/$name.script" <<'SCRIPT'
timeout 600
expect GUEST bench: DONE
send poweroff
exit
SCRIPT
    # shellcheck disable=SC2046 # the plugin's arguments split on purpose
    python3 "$ROOT/scripts/lib/console_test.py" "$dir/$name.log" "$dir/$name.script" -- \
        "$ROOT/scripts/run.sh" --icount --timeout 900 --gic 3 --smp 8 --memory 1G \
        --append dom0.vcpus=1 --config "$dir/$name.toml" -- $(io_plugin_args "$dir/$name.marks") >/dev/null || true
    grep -q "GUEST bench: DONE .* 0 failed" "$dir/$name.log" ||
        { note "scale bench: $name: the bench guest did not finish cleanly (log: $dir/$name.log)"; tail -n 20 "$dir/$name.log" >&2; }
}

# scale_bench: the three runs, then the report.
scale_bench() {
    local n=${SCALE_N:-500} windows=1200 dir plugin bench_img spin_img
    ensure_qemu
    bench_img=$("$ROOT/scripts/build-guests.sh" bench)
    spin_img=$("$ROOT/scripts/build-guests.sh" spin)
    "$ROOT/scripts/build.sh" >/dev/null
    plugin=$(io_plugin)
    [ -n "$plugin" ] || die "scale bench: the instruction-count plugin is needed (a C compiler)"
    dir=$(mktemp -d)
    for vms in 1 4 16; do
        scale_run "vms-$vms" "$vms"
    done
    python3 "$ROOT/scripts/lib/scalebench_report.py" "$dir" "$n"
    if [ -n "${SCALE_KEEP:-}" ]; then note "scale bench logs kept in $dir"; else rm -rf "$dir"; fi
}
