#!/usr/bin/env python3
"""Differential profile of one bench operation from two block histograms
(tools/insn-count/insn_hist.c): a run with many iterations of the operation
and one with few, otherwise the same. Line by line, the difference divided
by the difference in iterations is what one operation costs, and where:
the guest's loop, the hypervisor, dom0 and any other CPU's work that grows
with the time the loop takes (dom0's periodic wake-ups, say).

usage: hist_profile.py BIG SMALL DELTA --hv ELF@BASE --dom0 ELF@BASE --guest ELF@BASE [--top N] [--lines]

Each block is given to the image whose instruction word at the block's
address is the block's first word (the hypervisor and a guest share
virtual addresses), tried in the order hv, guest, dom0.
"""
import argparse
import collections
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from trace_profile import Symbols  # noqa: E402


class Image:
    def __init__(self, spec, nm, label):
        elf, base = spec.rsplit("@", 1)
        self.label, self.base = label, int(base, 0)
        self.syms = Symbols(elf, self.base, nm)
        data = open(elf, "rb").read()
        # PT_LOAD segments: (vaddr, filesz, offset) of the 64-bit ELF.
        phoff, = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        self.segs = []
        for i in range(phnum):
            p_type, _flags, off, vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
            if p_type == 1:
                self.segs.append((vaddr, filesz, off))
        self.data = data

    def word(self, pc):
        a = pc - self.base
        for vaddr, size, off in self.segs:
            if vaddr <= a and a + 4 <= vaddr + size:
                return struct.unpack_from("<I", self.data, off + a - vaddr)[0]
        return None


def load(path):
    counts = collections.Counter()
    for line in open(path):
        pc, n, word, count = line.split()
        counts[(int(pc, 16), int(n), int(word, 16))] += int(count)
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("big"), ap.add_argument("small"), ap.add_argument("delta", type=int)
    ap.add_argument("--hv", required=True), ap.add_argument("--dom0", required=True), ap.add_argument("--guest", required=True)
    ap.add_argument("--nm", default="nm"), ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--detail", action="append", default=[], help="per-instruction counts of this function (ELF addresses)")
    a = ap.parse_args()
    images = [Image(a.hv, a.nm, "hv"), Image(a.guest, a.nm, "guest"), Image(a.dom0, a.nm, "dom0")]
    big, small = load(a.big), load(a.small)
    per_fn = collections.Counter()
    per_image = collections.Counter()
    per_insn = collections.Counter()
    for key in set(big) | set(small):
        d = big[key] - small[key]
        if d == 0:
            continue
        pc, n, word = key
        image = next((im for im in images if im.word(pc) == word), None)
        label = image.label if image else "?"
        # A block's instructions may run into the next function: each one
        # goes to its own symbol.
        for i in range(n):
            name = image.syms.name(pc + 4 * i) if image else f"{pc:#x}"
            per_fn[(label, name)] += d
            if name in a.detail:
                per_insn[(name, pc + 4 * i - image.base)] += d
        per_image[label] += d * n
    total = sum(per_image.values())
    print(f"per operation ({a.delta} operations apart): {total / a.delta:,.1f} instructions; "
          + ", ".join(f"{k} {v / a.delta:,.1f}" for k, v in per_image.most_common()))
    for (label, name), d in per_fn.most_common(a.top):
        if abs(d) / a.delta < 0.5:
            break
        print(f"  {d / a.delta:8.1f}  {label:5}  {name}")
    for (name, addr), d in sorted(per_insn.items()):
        print(f"  {name} {addr:#x}: {d / a.delta:.2f}")


if __name__ == "__main__":
    main()
