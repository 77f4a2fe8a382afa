# Sourced by scripts/bench.sh: a guest's virtio-blk throughput and the
# backend hypercalls each request costs. The virtio test guest runs its
# `stress` mode (write a random run of 1..16 sectors, read it back and
# compare, a FLUSH every 8 rounds) for STRESS_MS of its own time on a slice
# of a fresh 16 MiB disk; then dom0's `iostat` gives the hypercalls the
# backends made and the virtio-blk requests they served.
# blk_bench LABEL [run.sh options]: prints one line.
blk_bench() {
    local label=$1; shift
    local dir; dir=$(mktemp -d)
    truncate -s 16M "$dir/disk.img"
    # Build first: the console script's first wait must not include it.
    "$ROOT/scripts/build-guests.sh" virtio >/dev/null
    "$ROOT/scripts/build.sh" >/dev/null
    cat >"$dir/blk.toml" <<TOML
[[vm]]
name = "blkbench"
kernel = "$ROOT/target/guests/virtio.img"
memory = "16M"
cmdline = "virtio.blk=stress:${STRESS_MS:-2000}"
autostart = true
pin = [1]

[[vm.disk]]
offset = "1M"
size = "8M"
TOML
    cat >"$dir/blk.script" <<'SCRIPT'
timeout 300
expect RESULT virtio: blk-stress
expect dom0> 
send iostat
expect virtio-blk requests
expect dom0> 
send poweroff
exit
SCRIPT
    if ! python3 "$ROOT/scripts/lib/console_test.py" "$dir/log" "$dir/blk.script" -- \
            "$ROOT/scripts/run.sh" --timeout 600 --smp 2 --append dom0.vcpus=1 --disk "$dir/disk.img" --config "$dir/blk.toml" "$@" >/dev/null; then
        cat "$dir/log"; rm -rf "$dir"; die "virtio-blk benchmark run failed"
    fi
    local rounds sectors us copy irq complete reqs
    read -r rounds sectors us < <(sed -n 's/.*RESULT virtio: blk-stress rounds=\([0-9]*\) sectors=\([0-9]*\) us=\([0-9]*\).*/\1 \2 \3/p' "$dir/log" | head -n1)
    read -r copy irq complete reqs < <(sed -n 's/.*backend hypercalls: \([0-9]*\) VmCopy, \([0-9]*\) IrqLine, \([0-9]*\) IoComplete; \([0-9]*\) virtio-blk requests.*/\1 \2 \3 \4/p' "$dir/log" | head -n1)
    rm -rf "$dir"
    python3 - "$label" "$rounds" "$sectors" "$us" "$copy" "$irq" "$complete" "$reqs" <<'PY'
import sys
label, rounds, sectors, us, copy, irq, complete, reqs = sys.argv[1], *map(int, sys.argv[2:])
kib = sectors * 512 * 2 / 1024  # written and read back
print(f"  virtio-blk stress ({label}): {rounds} rounds, {reqs} requests, {kib / (us / 1e6):.0f} KiB/s of guest time "
      f"({kib:.0f} KiB in {us / 1000:.0f} ms); backend hypercalls per request: "
      f"{copy / reqs:.2f} VmCopy + {irq / reqs:.2f} IrqLine + {complete / reqs:.2f} IoComplete = {(copy + irq + complete) / reqs:.2f}")
PY
}
