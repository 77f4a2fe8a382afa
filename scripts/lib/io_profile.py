#!/usr/bin/env python3
"""Names where the instructions of one window of scripts/bench.sh --io went:
reads the profile tools/insn-count writes with `profile=PATH,from=K` (one
line per translated block and CPU: "block CPU VADDR DELTA INSNS") and
attributes each block to a function of the hypervisor, dom0 or the guest.

usage: io_profile.py PROFILE N --hv ELF@BASE --dom0 ELF@BASE --guest ELF@BASE [--top N]

N is the number of operations in the window (the figures are per
operation). A block belongs to dom0 when its address lies in [dom0 BASE,
BASE + 256 MiB); otherwise to the hypervisor when its DELTA (host address
minus virtual address) is the one most of CPU 0's other blocks have (CPU 0
runs only dom0 and the hypervisor), else to the guest: the hypervisor and
a guest may run code at the same virtual addresses, never from the same
memory. A block is counted whole for the function its first instruction
is in. Under each of the first --callers functions of a CPU: where it was
entered from (the function that ran just before it on that CPU, other
than itself), with how many entries per operation: hints only, as some
entries come out from a function that cannot lead there (docs/perf-notes.md).
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trace_profile import domain_symbols  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("n", type=int)
    ap.add_argument("--hv", required=True)
    ap.add_argument("--dom0", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--callers", type=int, default=8)
    ap.add_argument("--nm", default="llvm-nm")
    args = ap.parse_args()

    syms, (dom0_lo, dom0_hi) = domain_symbols(args)

    blocks, edges = [], []
    with open(args.profile) as f:
        for line in f:
            p = line.split()
            if len(p) == 5 and p[0] == "block":
                blocks.append((int(p[1]), int(p[2], 16), int(p[3], 16), int(p[4])))
            elif len(p) == 5 and p[0] == "edge":
                edges.append((int(p[1]), int(p[2], 16), int(p[3], 16), int(p[4])))
    if not blocks:
        raise SystemExit("io_profile: no blocks in the profile")
    deltas = collections.Counter(d for cpu, pc, d, c in blocks if cpu == 0 and not dom0_lo <= pc < dom0_hi)
    hv_delta = deltas.most_common(1)[0][0] if deltas else None

    def domain(pc, delta):
        if dom0_lo <= pc < dom0_hi:
            return "dom0"
        return "hv" if delta == hv_delta else "guest"

    n = args.n
    per_cpu = collections.defaultdict(collections.Counter)  # cpu -> (dom, function) -> insns
    where = {}  # (cpu, pc) -> (dom, function)
    for cpu, pc, delta, c in blocks:
        d = domain(pc, delta)
        where[(cpu, pc)] = (d, syms[d].name(pc))
        per_cpu[cpu][where[(cpu, pc)]] += c
    callers = collections.defaultdict(collections.Counter)  # (cpu, (dom, function)) -> caller -> entries
    for cpu, src, dst, times in edges:
        a, b = where.get((cpu, src)), where.get((cpu, dst))
        if a and b and a != b:
            callers[(cpu, b)][a] += times
    total = sum(sum(c.values()) for c in per_cpu.values())
    print(f"{total / n:,.0f} instructions per operation, all CPUs")
    for cpu in sorted(per_cpu):
        funcs = per_cpu[cpu]
        doms = collections.Counter()
        for (d, _), c in funcs.items():
            doms[d] += c
        print(f"\ncpu{cpu}: {sum(funcs.values()) / n:,.0f} ("
              + ", ".join(f"{d} {c / n:,.0f}" for d, c in doms.most_common()) + ")")
        for i, ((d, name), c) in enumerate(funcs.most_common(args.top)):
            print(f"{c / n:9.1f}  {d}: {name}")
            if i < args.callers:
                for (cd, cn), t in callers[(cpu, (d, name))].most_common(3):
                    print(f"{'':9}      from {cd}: {cn} ({t / n:.1f} per op)")


if __name__ == "__main__":
    sys.exit(main())
