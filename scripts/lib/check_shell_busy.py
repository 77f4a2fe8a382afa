#!/usr/bin/env python3
"""Checks, from when each line of a console transcript arrived, that dom0's
services went on while its shell ran `sleep 10` and `cycle` (scripts/test.sh,
shell-busy; scripts/tests/shell-busy.script drives it).

usage: check_shell_busy.py LOG MAX_GAP

LOG.times (console_test.py) says when each piece of LOG arrived. A
command's window runs from its echoed line to the line that marks its end
(`list`'s table after `sleep 10`, cycle's report after `cycle`). In each
window the `flood` guest's lines must keep arriving: no gap longer than
MAX_GAP seconds between two of them, nor from the window's start to the
first or from the last to its end (output held back until the command
ended would leave one gap as long as the window). The `bouncer` guest,
which resets itself, must have been restarted by dom0 at least twice
during the sleep and at least once during the cycle. Prints the figures;
exits 1 on a problem.
"""
import bisect
import sys

log, max_gap = sys.argv[1], float(sys.argv[2])
raw = open(log, "rb").read()
arrivals = [tuple(map(float, l.split())) for l in open(log + ".times") if l.strip()]
ends = [int(a[0]) for a in arrivals]


def arrived(offset):
    """Seconds since the start at which the byte at offset arrived."""
    return arrivals[bisect.bisect_right(ends, offset)][1]


# (text, arrival of its last byte), text without CR, erase-line or prompt.
lines, at = [], 0
for piece in raw.split(b"\n"):
    text = piece.decode("utf-8", "replace").replace("\r", "")
    lines.append((text, arrived(min(at + len(piece), len(raw) - 1))))
    at += len(piece) + 1


def clean(text):
    text = text.replace("\x1b[K", "")
    return text[len("dom0> "):] if text.startswith("dom0> ") else text


def window(command, marker):
    """(start, end) lines of the command: its last echo before the marker
    (guest output printed while it was typed redraws the prompt and the
    line typed so far, so the echo may be split over several lines: the
    last one ends with the whole command once Enter was typed)."""
    end = next(i for i, (t, _) in enumerate(lines) if marker in t)
    start = max(i for i in range(end) if clean(lines[i][0]).endswith(command))
    return start, end


problems, figures = [], []
for command, marker, min_restarts in (("sleep 10", "  ID NAME", 2),
                                      ("cycle 600 cyc", "create/destroy cycles of cyc", 1)):
    try:
        s, e = window(command, marker)
    except (StopIteration, ValueError):
        problems.append("%s: its window (echo, then '%s') is not in the transcript" % (command, marker))
        continue
    t0, t1 = lines[s][1], lines[e][1]
    inside = [clean(t) for t, _ in lines[s + 1:e]]
    flood = [when for t, when in lines[s + 1:e] if clean(t).startswith("flood: FLOOD ")]
    gaps = [b - a for a, b in zip([t0] + flood, flood + [t1])]
    restarts = sum("bouncer) reset itself: restarted as VM" in t for t in inside)
    figures.append("%s: %.1f s, %d flood lines (longest gap %.2f s), %d restarts" % (
        command, t1 - t0, len(flood), max(gaps), restarts))
    if max(gaps) > max_gap:
        problems.append("%s: %.2f s without a flood line (at most %.1f s allowed)" % (command, max(gaps), max_gap))
    if restarts < min_restarts:
        problems.append("%s: %d restarts of bouncer during it, want %d or more" % (command, restarts, min_restarts))
if any(" ERROR " in t for t, _ in lines):
    problems.append("errors in the log: " + next(t for t, _ in lines if " ERROR " in t))
print("; ".join(problems + figures))
sys.exit(1 if problems else 0)
