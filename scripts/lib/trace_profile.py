#!/usr/bin/env python3
"""Breaks a QEMU instruction trace (`-d exec,nochain` with
`-accel tcg,one-insn-per-tb=on`: one "Trace CPU: HOST [CSBASE/PC/FLAGS/CFLAGS]"
line per instruction) of a hypervisor run into segments and attributes each
segment's instructions to functions of the hypervisor, dom0 and a guest.

usage: trace_profile.py TRACE --hv ELF@BASE --dom0 ELF@BASE --guest ELF@BASE
                        --from SPEC --to SPEC [--top N] [--skip N]

A line belongs to `hv` when its TB flags say EL2 (MMU index field, bits
[7:4], of 6), otherwise to `dom0` if its PC lies in [dom0 BASE, BASE + 256
MiB), otherwise to `guest`. BASE is where the ELF's address 0 runs.
SPEC is DOMAIN:SYMBOL[+0xOFF] or DOMAIN:0xADDR (an ELF address), optionally
followed by @DOMAIN (only when that CPU's previous instruction was in that
domain: hv:el2_vectors+0x400@guest is a trap from the guest); several
SPECs separated by commas match any of them. A segment ends at each line matching --to and starts at the last
line matching --from before it (after the previous segment's end); every
instruction in between, on every CPU, is counted: under -icount the virtual
clock advances with whichever CPU executes, so the sum is the latency.
With --from equal to --to the segments are the cycles between consecutive
matches. --skip drops the first N segments (warm-up).
"""
import argparse
import bisect
import collections
import re
import subprocess
import sys

LINE = re.compile(r"Trace (\d+): \S+ \[([0-9a-f]+)/([0-9a-f]+)/([0-9a-f]+)/([0-9a-f]+)\]")


class Symbols:
    def __init__(self, elf, base, nm):
        out = subprocess.run([nm, "-n", "--demangle", elf], capture_output=True, text=True, check=True).stdout
        self.addrs, self.names = [], []
        for line in out.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] in "tTwW":
                self.addrs.append(int(parts[0], 16) + base)
                self.names.append(short(parts[2]))
        self.base, self.elf = base, elf

    def name(self, pc):
        i = bisect.bisect_right(self.addrs, pc) - 1
        return self.names[i] if i >= 0 else f"?{pc:#x}"

    def addr(self, name):
        for a, n in zip(self.addrs, self.names):
            if n == name or n.endswith("::" + name):
                return a
        raise SystemExit(f"trace_profile: no symbol {name}")


def domain_symbols(args):
    """Each domain's symbols from --hv, --dom0 and --guest (ELF@BASE), and
    the address range dom0's code runs in."""
    syms = {}
    for dom in ("hv", "dom0", "guest"):
        elf, base = getattr(args, dom).rsplit("@", 1)
        syms[dom] = Symbols(elf, int(base, 0), args.nm)
    return syms, (syms["dom0"].base, syms["dom0"].base + (256 << 20))


def short(name):
    """Drops Rust hashes and generic noise: a::b::c::h0123 -> a::b::c."""
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    name = re.sub(r"^_?<(.*) as (.*)>", r"<\1 as \2>", name)
    return name


def inline_report(dom, elf, base, counts, n, top):
    """Per innermost inlined function and per source line, from DWARF line tables."""
    pcs = sorted(counts)
    out = subprocess.run(["llvm-addr2line", "--addresses", "-f", "-i", "-C", "-e", elf] + [hex(p - base) for p in pcs],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    where = {}
    i, cur = 0, None
    while i < len(out):
        if out[i].startswith("0x"):
            cur = int(out[i], 16) + base
            i += 1
            # First frame (innermost): function, then file:line.
            func, loc = out[i], out[i + 1] if i + 1 < len(out) else "?"
            where[cur] = (short(func), re.sub(r"^.*/(hypervisor|host-dom0|guests|abi|vmconfig)/", r"\1/", loc.split(" ")[0]))
            i += 2
            while i < len(out) and not out[i].startswith("0x"):
                i += 1
        else:
            i += 1
    funcs, lines = collections.Counter(), collections.Counter()
    for p, c in counts.items():
        f, l = where.get(p, ("?", "?"))
        funcs[f] += c
        lines[f"{l} ({f.split('::')[-1]})"] += c
    print(f"{dom}, innermost inlined function:")
    for f, c in funcs.most_common(top):
        print(f"{c / n:8.1f}  {f}")
    print(f"{dom}, source lines:")
    for l, c in lines.most_common(top):
        print(f"{c / n:8.1f}  {l}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--hv", required=True)
    ap.add_argument("--dom0", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--from", dest="start", required=True)
    ap.add_argument("--to", dest="end", required=True)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--nm", default="llvm-nm")
    ap.add_argument("--timeline", type=int, metavar="K",
                    help="also print segment K (after --skip) in order, one line per run of a function")
    ap.add_argument("--inlined", metavar="DOMAIN", action="append", default=[],
                    help="also attribute DOMAIN's instructions to the innermost inlined function and to source lines (its ELF needs line tables)")
    ap.add_argument("--assume-inside", action="store_true",
                    help="the trace starts inside a --within window (its log was switched on after the open mark)")
    ap.add_argument("--within", nargs=2, metavar=("OPEN", "CLOSE"),
                    help="only lines between a line matching SPEC OPEN and the next matching SPEC CLOSE")
    args = ap.parse_args()

    syms, (dom0_lo, dom0_hi) = domain_symbols(args)

    def spec(text):
        """A set of (domain, pc, previous domain or None)."""
        out = set()
        for one in text.split(","):
            one, _, prev = one.partition("@")
            dom, what = one.split(":", 1)
            what, _, off = what.partition("+")
            a = int(what, 0) + syms[dom].base if what.startswith("0x") else syms[dom].addr(what)
            out.add((dom, a + (int(off, 0) if off else 0), prev or None))
        return out

    start, end = spec(args.start), spec(args.end)
    within = args.within and (spec(args.within[0]), spec(args.within[1]))
    inside = args.assume_inside
    prev_dom = {}  # cpu -> domain of its previous instruction

    def matches(points, cpu, dom, pc):
        return (dom, pc, None) in points or (dom, pc, prev_dom.get(cpu)) in points

    def domain(pc, flags):
        if (flags >> 4) & 0xF == 6:
            return "hv"
        return "dom0" if dom0_lo <= pc < dom0_hi else "guest"

    # Each line: (domain, pc). Kept in a list since segments look back.
    segments = []  # list of Counter((domain, pc) -> instructions)
    timeline = None  # the lines of segment --timeline, if asked for
    current = []  # lines since the last segment end
    last_start = None  # index into current
    with open(args.trace, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            cpu, pc, flags = int(m.group(1)), int(m.group(3), 16), int(m.group(4), 16)
            dom = domain(pc, flags)
            if within:
                if not inside:
                    inside = matches(within[0], cpu, dom, pc)
                    if not inside:
                        prev_dom[cpu] = dom
                        continue
                elif matches(within[1], cpu, dom, pc):
                    inside = False
                    current, last_start = [], None
                    prev_dom[cpu] = dom
                    continue
            current.append((cpu, dom, pc))
            is_start, is_end = matches(start, cpu, dom, pc), matches(end, cpu, dom, pc)
            prev_dom[cpu] = dom
            if is_end and last_start is not None:
                if args.timeline is not None and len(segments) == args.skip + args.timeline:
                    timeline = current[last_start:-1]
                segments.append(collections.Counter((d, p) for _, d, p in current[last_start:-1]))
                current, last_start = current[-1:], None
            if is_start:
                last_start = len(current) - 1
            elif last_start is None and len(current) > 1_000_000:
                current = current[-1:]  # nothing before a start is kept
    segments = segments[args.skip:]
    if not segments:
        raise SystemExit("trace_profile: no complete segment in the trace")
    totals = sorted(sum(s.values()) for s in segments)
    n = len(segments)
    mean = sum(totals) / n
    print(f"{n} segments {args.start} -> {args.end}: instructions mean {mean:.0f}, "
          f"median {totals[n // 2]}, min {totals[0]}, max {totals[-1]}")
    pc_counts = collections.defaultdict(collections.Counter)  # domain -> pc -> count
    per = collections.Counter()
    for seg in segments:
        for (d, p), c in seg.items():
            pc_counts[d][p] += c
            per[(d, syms[d].name(p))] += c
    by_dom = collections.Counter()
    for (d, _), v in per.items():
        by_dom[d] += v
    print("by domain: " + ", ".join(f"{d} {v / n:.0f}" for d, v in by_dom.most_common()))
    print(f"{'mean':>8}  function")
    for (d, name), v in per.most_common(args.top):
        print(f"{v / n:8.1f}  {d}: {name}")
    if timeline:
        print(f"\nsegment {args.timeline} in order (at, cpu, instructions, function):")
        at, run = 0, None
        for cpu, d, p in timeline + [(None, None, None)]:
            key = (cpu, d, syms[d].name(p) if d else None)
            if run and key[:3] != run[0]:
                print(f"{at - run[1]:6}  cpu{run[0][0]} {run[1]:5}  {run[0][1]}: {run[0][2]}")
                run = None
            if cpu is None:
                break
            run = (key, run[1] + 1) if run else (key, 1)
            at += 1
    for dom in args.inlined:
        print()
        inline_report(dom, syms[dom].elf, syms[dom].base, pc_counts[dom], n, args.top)


if __name__ == "__main__":
    sys.exit(main())
