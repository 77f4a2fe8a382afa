#!/usr/bin/env python3
"""Checks a console transcript of dom0 serving guests while its shell runs
`sleep 10` (scripts/test.sh: io-busy-shell, linux-io-busy).

usage: check_busy_sleep.py LOG PROGRESS PASSED

PROGRESS: the start of a progress line of the IO guest that must appear
during the sleep; PASSED: its line saying its IO was verified. Also: the
`flood` guest's lines appear during the sleep and all 150 arrive intact
and in order (as many bytes as the guest says it wrote), no ERROR in the hypervisor's log,
no console output dropped. Prints what it found; exits 1 on a problem.
"""
import re
import sys

log, progress, passed = sys.argv[1:4]
text = open(log, "rb").read().decode("utf-8", "replace").replace("\r", "")
lines = text.split("\n")
start = next(i for i, l in enumerate(lines) if l.endswith("dom0> sleep 10"))
# Output that arrives while the command is typed redraws the prompt and the
# typed line ("dom0> sleep 10" again): the sleep ends at the next prompt
# that is not such a redraw.
end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("dom0> ") and lines[i].rstrip() != "dom0> sleep 10")


def clean(l):
    # Output printed above the prompt: "\x1b[K" after the prompt is cleared.
    l = l[len("dom0> "):] if l.startswith("dom0> ") else l
    return l.replace("\x1b[K", "")


during = [clean(l) for l in lines[start + 1:end]]
lines = [clean(l) for l in lines]
problems = []
if not any(l.startswith("flood: FLOOD ") for l in during):
    problems.append("no flood line during sleep 10")
if not any(l.startswith(progress) for l in during):
    problems.append("no '%s' line during sleep 10" % progress)
got = [l[len("flood: "):] for l in lines if l.startswith("flood: FLOOD ")]
want = ["FLOOD %06d %s" % (n, "".join(chr(97 + (n + i) % 26) for i in range(57))) for n in range(150)]
if got != want:
    bad = next((n for n, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    problems.append("flood: %d of 150 lines intact and in order; first difference at line %d" % (sum(g == w for g, w in zip(got, want)), bad))
# Every line the guest wrote ends in CR LF; it reports the bytes it wrote.
flood_bytes = sum(len(g) + 2 for g in got)
sent = re.search(r"flood: RESULT console: flood lines=\d+ bytes=(\d+)", text)
if not sent or int(sent.group(1)) != flood_bytes:
    problems.append("flood: %d bytes arrived, the guest wrote %s" % (flood_bytes, sent.group(1) if sent else "?"))
if passed not in text:
    problems.append("no '%s'" % passed)
if any(" ERROR " in l for l in lines):
    problems.append("errors in the hypervisor's log: " + next(l for l in lines if " ERROR " in l))
if "output bytes dropped" in text:
    problems.append("iostat reports dropped console output")
print("; ".join(problems) if problems else "%d flood lines (%d bytes in all) and %d IO progress lines during the sleep" % (
    sum(l.startswith("flood: FLOOD ") for l in during), flood_bytes, sum(l.startswith(progress) for l in during)))
sys.exit(1 if problems else 0)
