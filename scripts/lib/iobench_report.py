#!/usr/bin/env python3
"""The report of scripts/bench.sh --io (scripts/lib/iobench.sh): reads the
runs' console logs and the instruction-count plugin's marks in DIR.

usage: iobench_report.py DIR N FRAMES
"""
import os
import re
import sys

RESULT = re.compile(r"RESULT virtio: blk-bench op=(\S+) wait=(\S+) n=(\d+) ns=(\d+) mark=(\d+)")
IOSTAT = re.compile(r"backend hypercalls: (\d+) VmCopy, (\d+) IrqLine, (\d+) IoComplete; (\d+) virtio-blk requests")
WORKER = re.compile(r"IO worker: guests' disk IO on cpu(\d+)")
NET_BENCH = re.compile(r"RESULT virtio: net-bench frames=(\d+) transmissions=(\d+) mark=(\d+)")
NET_SENT = re.compile(r"RESULT virtio: net-sent frames=\d+ transmissions=\d+ retransmitted=(\d+) stalls=\d+ us=(\d+)")
AIM_READ_4K = 12_000


def text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def results(log):
    """{(op, wait): (n, ns, mark)} from a disk run's log."""
    return {(m[1], m[2]): (int(m[3]), int(m[4]), int(m[5])) for m in RESULT.finditer(text(log))}


def marks(path):
    """The plugin's marks: {seq: [(count, waiting) per CPU]}."""
    out = {}
    for line in text(path).splitlines():
        f = line.split()
        if len(f) >= 4 and f[0] == "mark":
            out[int(f[1])] = [tuple(map(int, c.split(":"))) for c in f[3:]]
    return out


def window(mk, k, n):
    """Per CPU (executed, waiting) per operation between marks k and k+1."""
    if k not in mk or k + 1 not in mk:
        return None
    return [((b[0] - a[0]) / n, (b[1] - a[1]) / n) for a, b in zip(mk[k], mk[k + 1])]


def num(v):
    return "?" if v is None else f"{v:,.0f}"


def main():
    d, n, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    hv_log = os.path.join(d, "hv-icount.log")
    hv, bare = results(hv_log), results(os.path.join(d, "bare-icount.log"))
    hv_rt, bare_rt = results(os.path.join(d, "hv-real.log")), results(os.path.join(d, "bare-real.log"))
    hv_mk, bare_mk = marks(os.path.join(d, "hv-icount.marks")), marks(os.path.join(d, "bare-icount.marks"))
    w = WORKER.search(text(hv_log))
    worker = int(w[1]) if w else None
    cpu_names = [f"cpu{i}" + (" (dom0's IO worker)" if i == worker else " (dom0)" if i < 2 else " (the guest)")
                 for i in range(3)]
    rows = [(op, wait) for wait in ("poll", "irq") for op in ("read-4k", "write-4k", "read-1m", "write-1m")]

    print(f"Guest disk IO: the virtio guest's bench mode, one request at a time, {n} x 4 KiB and "
          f"{max(n // 8, 2)} x 1 MiB a row; the guest polls its used ring (poll) or sleeps in WFI for the "
          "used-buffer interrupt (irq)")
    print("Under -icount shift=0: hypervisor on QEMU virt with 3 CPUs (dom0 on cpu0 and cpu1, dom0.vcpus=2; "
          "the guest pinned to cpu2); bare: the same guest on QEMU's own virtio-blk, 1 CPU.")
    print("guest time: the guest's counter per request in ns = instructions, idle warps and spinning included;")
    print("executed: what all CPUs executed per request (tools/insn-count); waiting: the part spent in spin-wait loops;")
    print("work = executed - waiting, also per CPU: " + " / ".join(cpu_names))
    print()
    print("| request | wait | guest time | executed | waiting | work | work per CPU | bare: guest time | bare: work |")
    print("|---|---|---|---|---|---|---|---|---|")
    work = {}
    for key in rows:
        op, wait = key
        t, wb = hv.get(key), bare.get(key)
        win = window(hv_mk, t[2], t[0]) if t else None
        bwin = window(bare_mk, wb[2], wb[0]) if wb else None
        ex = sum(c[0] for c in win) if win else None
        wt = sum(c[1] for c in win) if win else None
        work[key] = ex - wt if win else None
        per_cpu = " / ".join(num(c[0] - c[1]) for c in win) if win else "?"
        bwork = sum(c[0] - c[1] for c in bwin) if bwin else None
        print(f"| {op} | {wait} | {num(t[1] if t else None)} | {num(ex)} | {num(wt)} | {num(work[key])} | {per_cpu} "
              f"| {num(wb[1] if wb else None)} | {num(bwork)} |")
    print()

    stats = [tuple(map(int, m.groups())) for m in IOSTAT.finditer(text(hv_log))]
    if len(stats) >= 2:
        halves = {"poll": stats[0], "irq": tuple(b - a for a, b in zip(stats[0], stats[1]))}
    else:
        halves = {}
    # The notification is a trapped write, not a hypercall; the completion
    # is one IrqLine (the interrupt raised) or IoComplete, or none when the
    # guest polls: everything past that one is on the data path.
    beyond = {}
    for wait, (copy, irq, complete, reqs) in halves.items():
        if reqs == 0:
            continue
        total = (copy + irq + complete) / reqs
        beyond[wait] = max(total - 1, 0) if wait == "irq" else total
        print(f"Backend hypercalls per virtio-blk request ({wait}, {reqs} requests, dom0's iostat): "
              f"{copy / reqs:.2f} VmCopy + {irq / reqs:.2f} IrqLine + {complete / reqs:.2f} IoComplete "
              f"= {total:.2f}, {beyond[wait]:.2f} besides the completion")
    if not halves:
        print("Backend hypercalls: dom0's iostat was not read (see the log)")
    best = [v for k, v in work.items() if k[0] == "read-4k" and v is not None]
    if best:
        got = min(best)
        print(f"Aim: <= {AIM_READ_4K:,} instructions per 4 KiB read end to end: "
              f"{'met' if got <= AIM_READ_4K else 'missed'} (work {num(work.get(('read-4k', 'poll')))} polled, "
              f"{num(work.get(('read-4k', 'irq')))} with the interrupt)")
    if beyond:
        print("Aim: <= 1 hypercall per request besides the notification (a trapped write) and the completion "
              f"(one IrqLine or IoComplete): {'met' if max(beyond.values()) <= 1 else 'missed'} "
              f"({', '.join(f'{v:.2f} {k}' for k, v in beyond.items())})")
    print()

    print("Real time (no -icount; this machine's load included): microseconds per request")
    print()
    print("| request | wait | hypervisor | bare QEMU | hypervisor / bare |")
    print("|---|---|---|---|---|")
    for key in rows:
        h, b = hv_rt.get(key), bare_rt.get(key)
        ratio = f"{h[1] / b[1]:.1f}" if h and b and b[1] else "?"
        print(f"| {key[0]} | {key[1]} | {num(h[1] / 1000 if h else None)} | {num(b[1] / 1000 if b else None)} | {ratio} |")
    print()

    net = text(os.path.join(d, "net-icount.log"))
    nb, ns = NET_BENCH.search(net), NET_SENT.search(net)
    nmk = marks(os.path.join(d, "net-icount.marks"))
    print(f"Frames through dom0's switch, -icount shift=0: {frames} frames from one virtio guest to another "
          "(QEMU virt, 4 CPUs: dom0 on cpu0 and cpu1, sender on cpu2, receiver on cpu3), payloads of "
          "46..1500 bytes, window 32, an acknowledgement frame back every few; both guests poll their queues. "
          "The guests' work includes making and checking each payload byte by byte (the test's own work)")
    if nb and ns:
        sent = int(nb[2])
        win = window(nmk, int(nb[3]), sent)
        line = (f"  per frame sent ({sent} sent, {ns[1]} retransmitted): guest time {num(int(ns[2]) * 1000 / sent)}")
        if win:
            ex, wt = sum(c[0] for c in win), sum(c[1] for c in win)
            cpus = " / ".join(num(c[0] - c[1]) for c in win)
            line += (f"; executed {num(ex)}, waiting {num(wt)}, work {num(ex - wt)} "
                     f"(per CPU, dom0 cpu0 / dom0 cpu1 / sender / receiver: {cpus})")
        print(line)
    else:
        print("  the frame run did not finish (see its log)")


if __name__ == "__main__":
    main()
