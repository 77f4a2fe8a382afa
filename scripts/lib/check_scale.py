#!/usr/bin/env python3
"""Checks a scale run (scripts/test.sh, scale-*): many VMs with a mixed
load, dom0's shell typing `list` every 2 s meanwhile (console_test.py's
`every`).

usage: check_scale.py LOG CONFIG MAX_GAP

CONFIG is the run's TOML: each VM's weight, pin and command line say what
it is (a `spin` spinner, a `virtio.blk` disk guest, a `virtio.net` sender
or receiver). From LOG (and LOG.times, when each piece arrived):

- dom0's shell answered throughout: a `list` table at least every MAX_GAP
  seconds from the first to the last while guests ran;
- every VM made progress: between two tables at least 2 s apart that
  show it running, its CPU time (the hypervisor's, as `list` shows it)
  grew;
- spinners pinned to the same CPU share it as their weights say: over the
  span in which every spinner's vCPUs all spun (from the first table after
  the last `NOTE spin: N vCPUs spinning` to the last table a second before
  the first `NOTE spin: windows done`; before and after it a spinner's
  vCPU 0 writes its console while the others may spin, and a spinner
  that is done leaves its CPU to its neighbour), each one's share (the
  least-squares slope of its CPU time over the tables' arrival times:
  a vCPU charged for a long overrun pays it back over seconds, so the
  difference between two tables alone depends on where they fall)
  divided by its weight within 10 % of the others' on that CPU (the
  largest and the smallest differ by at most 10 % of their mean);
- every guest's own checks passed: spinners spun on every vCPU, disk
  guests' data read back as written (blk-stress), receivers got every
  frame intact and in order with none dropped (net-recv,
  net-flow-control), senders had every frame acknowledged (net-send);
  each DONE with 0 failed; no FAIL, hypervisor ERROR or panic.

Prints the figures; exits 1 on a problem.
"""
import bisect
import re
import sys
import tomllib

log, config, max_gap = sys.argv[1], sys.argv[2], float(sys.argv[3])
raw = open(log, "rb").read()
arrivals = [tuple(map(float, l.split())) for l in open(log + ".times") if l.strip()]
ends = [int(a[0]) for a in arrivals]
vms = tomllib.load(open(config, "rb"))["vm"]


def arrived(offset):
    return arrivals[min(bisect.bisect_right(ends, offset), len(arrivals) - 1)][1]


ROW = re.compile(r"^\s*(\d+) (\S+)\s+(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\.(\d{3})\s*$")
HEADER = b"  ID NAME "
# Tables: (seconds, {name: (state, cpu ms)}).
tables = []
at = raw.find(HEADER)
while at >= 0:
    nxt = raw.find(HEADER, at + 1)
    block = raw[at:nxt if nxt >= 0 else len(raw)].split(b"dom0> ")[0]
    rows = {}
    for line in block.decode("utf-8", "replace").replace("\r", "").split("\n")[1:]:
        m = ROW.match(line.replace("\x1b[K", ""))
        if m:
            rows[m.group(2)] = (m.group(3), int(m.group(6)) * 1000 + int(m.group(7)))
    if rows:
        tables.append((arrived(at), rows))
    at = nxt

names = [vm["name"] for vm in vms]
problems, figures = [], []
text = raw.decode("utf-8", "replace").replace("\r", "")

# The shell answered throughout: from the first table to the one in which
# every guest had stopped.
running = [t for t in tables if any(r[0] == "running" for r in t[1].values())]
if len(running) < 2:
    problems.append("fewer than two `list` tables while guests ran (%d tables in all)" % len(tables))
else:
    span = [t for t in tables if running[0][0] <= t[0] <= running[-1][0]]
    gaps = [b[0] - a[0] for a, b in zip(span, span[1:])]
    figures.append("%d `list` tables while guests ran, longest gap %.1f s" % (len(span), max(gaps)))
    if max(gaps) > max_gap:
        problems.append("%.1f s without a `list` table from dom0's shell (at most %.1f s)" % (max(gaps), max_gap))

# Progress: over each stretch of at least 2 s between two tables (a
# shell held up answers typed-ahead `list`s together).
for name in names:
    seen = [(t, rows[name]) for t, rows in tables if name in rows]
    if not seen:
        problems.append("%s: in no `list` table" % name)
        continue
    pairs, i = [], 0
    for j in range(1, len(seen)):
        if seen[j][0] - seen[i][0] >= 2.0:
            pairs.append((seen[i], seen[j]))
            i = j
    stuck = [(a[0], b[0]) for a, b in pairs
             if a[1][0] == "running" and b[1][0] == "running" and b[1][1] <= a[1][1]]
    if stuck:
        problems.append("%s: no CPU time between the tables at %.1f s and %.1f s" % (name, *stuck[0]))

# Weights: over the span in which every spinner's vCPUs all spun.
spinners = [vm for vm in vms if "spin." in vm.get("cmdline", "")]


def note_times(note):
    """When each spinner's NOTE line arrived (None if it is missing)."""
    out = []
    for vm in spinners:
        m = re.search(("%s: NOTE spin: [^\n]*%s" % (re.escape(vm["name"]), re.escape(note))).encode(), raw)
        out.append(arrived(m.end()) if m else None)
    return out


began, ended = note_times("vCPUs spinning"), note_times("windows done")
if None in began or None in ended:
    problems.append("spinners without their NOTE lines: %s" % ", ".join(
        vm["name"] for vm, b, e in zip(spinners, began, ended) if b is None or e is None))
    allrun = []
else:
    lo_t, hi_t = max(began), min(ended) - 1.0
    allrun = [(t, rows) for t, rows in tables if lo_t <= t <= hi_t]
by_cpu = {}
for vm in spinners:
    by_cpu.setdefault(tuple(vm.get("pin", [])), []).append(vm)
if len(allrun) < 2:
    problems.append("fewer than two `list` tables while all spinners spun")
else:
    (t0, r0), (t1, r1) = allrun[0], allrun[-1]
    figures.append("shares over %.1f s (%d tables) while all spinners spun" % (t1 - t0, len(allrun)))

    def share(name):
        """CPU time per second (ms/s) over the span: least-squares slope."""
        pts = [(t, rows[name][1]) for t, rows in allrun]
        mt = sum(t for t, _ in pts) / len(pts)
        mc = sum(c for _, c in pts) / len(pts)
        return sum((t - mt) * (c - mc) for t, c in pts) / max(sum((t - mt) ** 2 for t, _ in pts), 1e-9)

    for pin, group in sorted(by_cpu.items()):
        norm = {vm["name"]: share(vm["name"]) / vm.get("weight", 256) for vm in group}
        lo, hi = min(norm.values()), max(norm.values())
        figures.append("CPU %s: %s" % (",".join(map(str, pin)), ", ".join(
            "%s weight %d: %.0f ms/s (%d ms)" % (vm["name"], vm.get("weight", 256), share(vm["name"]),
                                              r1[vm["name"]][1] - r0[vm["name"]][1]) for vm in group)))
        if len(group) < 2 or hi <= 0 or (hi - lo) * 200 > (hi + lo) * 10:
            problems.append("CPU %s: CPU time per unit of weight %s: not within 10 %%" % (
                ",".join(map(str, pin)), ", ".join("%s %.1f" % kv for kv in norm.items())))

# The guests' own verdicts.
for vm in vms:
    name, cmd = vm["name"], vm.get("cmdline", "")
    want = []
    if "spin." in cmd:
        want.append("TEST spin: spun: PASS")
    if "virtio.blk=stress" in cmd:
        want.append("TEST virtio: blk-stress: PASS")
    if "virtio.net=send" in cmd:
        want.append("TEST virtio: net-send: PASS")
    if "virtio.net=recv" in cmd:
        want += ["TEST virtio: net-recv: PASS", "TEST virtio: net-flow-control: PASS"]
    for w in want + ["DONE "]:
        if not re.search(r"%s: [^\n]*%s" % (re.escape(name), re.escape(w)), text):
            problems.append("%s: no '%s'" % (name, w))
    done = re.search(r"%s: GUEST \w+: DONE (\d+) passed, (\d+) failed" % re.escape(name), text)
    if done and done.group(2) != "0":
        problems.append("%s: %s" % (name, done.group(0)))
    m = re.search(r"%s: TEST virtio: (net-recv: PASS \d+ frames|blk-stress: PASS [^\n]*)" % re.escape(name), text)
    if m:
        figures.append("%s: %s" % (name, m.group(1)[:80]))
for bad in (": FAIL", " ERROR ", "*** hypervisor panic", "*** unexpected exception"):
    if bad in text:
        problems.append("in the log: " + next(l for l in text.split("\n") if bad in l)[:160])

print("; ".join(problems + figures))
sys.exit(1 if problems else 0)
