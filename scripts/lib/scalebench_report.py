#!/usr/bin/env python3
"""The table of scripts/bench.sh --scale (scripts/lib/scalebench.sh).

scalebench_report.py DIR N: DIR holds vms-1, vms-4 and vms-16 .log and
.marks files (tools/insn-count: "mark SEQ CPU COUNT0:WAIT0 ..."); N is the
bench guest's iterations per operation.
"""
import re
import sys

RUNS = (1, 4, 16)
# The bench guest's traced windows, in the order it runs them.
OPS = ("hypercall", "gicd-read", "ipi", "uart-fwd")
LABEL = {
    "hypercall": "null hypercall round trip",
    "gicd-read": "trapped GIC distributor read",
    "ipi": "virtual IPI (sent until handled)",
    "uart-fwd": "UART read forwarded to dom0",
}
MEASURED_CPUS = (0, 1, 2)  # dom0 and the measured VM


def marks(path):
    """Per mark, each CPU's executed-instruction count."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "mark":
                    out.append([int(p.split(":")[0]) for p in parts[3:]])
    except OSError:
        pass
    return out


def own_figures(path, n):
    """Per operation, what CPUs 0-2 executed per iteration between its marks."""
    m = marks(path)
    if len(m) < 2 * len(OPS):
        return {}
    return {op: sum(m[2 * i + 1][c] - m[2 * i][c] for c in MEASURED_CPUS) // n for i, op in enumerate(OPS)}


def log_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def guest_figures(text):
    return {k: int(v) for k, v in re.findall(r"RESULT bench: ([a-z-]+)=(\d+)", text)}


def started(text):
    m = re.search(r"vms: autostart: (\d+) of (\d+) VM\(s\) created and started in (\d+) us", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def overlapped(text):
    """Whether every spinner was still running when the bench guest ended."""
    done = text.find("GUEST bench: DONE")
    return done >= 0 and "RESULT spin:" not in text[:done]


def pct(v, base):
    if v is None or base in (None, 0):
        return "?"
    return f"{(v - base) * 100 / base:+.1f} %"


def table(title, figures):
    print(title)
    print()
    print("| operation | 1 VM | 4 VMs | vs 1 VM | 16 VMs | vs 1 VM |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for op in OPS:
        one, four, sixteen = (figures[v].get(op) for v in RUNS)
        cells = [f"{x:,}" if x is not None else "?" for x in (one, four, sixteen)]
        print(f"| {LABEL[op]} | {cells[0]} | {cells[1]} | {pct(four, one)} | {cells[2]} | {pct(sixteen, one)} |")
        for x in (four, sixteen):
            if x is not None and one:
                worst = max(worst, (x - one) * 100 / one)
    print()
    return worst


def main():
    d, n = sys.argv[1], int(sys.argv[2])
    texts = {v: log_text(f"{d}/vms-{v}.log") for v in RUNS}
    own = {v: own_figures(f"{d}/vms-{v}.marks", n) for v in RUNS}
    guest = {v: guest_figures(texts[v]) for v in RUNS}
    print(f"QEMU virt, 8 CPUs, GICv3, -icount shift=0,sleep=off; dom0.vcpus=1 (CPU 0); the bench guest (2 vCPUs, CPUs 1-2)")
    print(f"with 0, 3 and 15 spin guests (CPUs 3-7); {n} iterations an operation")
    print()
    worst = table("Instructions CPUs 0-2 executed per operation (tools/insn-count; the guest's loop included):", own)
    table("The bench guest's own figures (its clock also counts the spinners' instructions under -icount):", guest)
    for v in RUNS[1:]:
        if not overlapped(texts[v]):
            print(f"note: with {v} VMs not every spinner was still running when the bench guest finished")
    print(f"largest growth over 1 VM (instructions on CPUs 0-2): {worst:+.1f} % (aim: within 10 %)")
    s = started(texts[16])
    if s:
        print(f"create and start 16 VMs (dom0's autostart, kernels loaded, 16 configured): {s[0]} of {s[1]} in {s[2]:,} us of virtual time"
              f" (about {s[2] * 1000:,} instructions of all CPUs)")
    else:
        print("create and start 16 VMs: no figure (dom0 printed none)")


if __name__ == "__main__":
    main()
