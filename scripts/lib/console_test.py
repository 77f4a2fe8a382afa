#!/usr/bin/env python3
r"""Drives a serial console like a user: starts a command (scripts/run.sh
...), waits for texts to appear, types lines, and checks the answers.

usage: console_test.py LOG SCRIPT -- COMMAND...

SCRIPT lines (blank lines and # comments ignored):
  expect TEXT          wait (up to the step timeout) for TEXT in new output
  send TEXT            type TEXT followed by Enter (carriage return)
  type TEXT            type TEXT without Enter, one character at a time
  timeout SECONDS      step timeout for the following expects (default 30)
  monitor TEXT         send TEXT to QEMU's human monitor, at the Unix socket
                       named by $HV_TEST_MONITOR (the command's QEMU must
                       have -monitor unix:PATH,server=on,wait=off)
  pause SECONDS        let the run go on (reading its output) for SECONDS
  every SECONDS TEXT   from now on, type TEXT and Enter every SECONDS while
                       the steps wait (`every off` stops it)
  count N TEXT         wait (up to the step timeout) until TEXT is in the
                       whole transcript N times
  exit                 wait for the command to end; its status must be 0
In send and type TEXT, \xHH is the byte HH and \\ a backslash, e.g.
`type \x01\x01\x01` for Ctrl-a three times (run.sh moves QEMU's own
escape key to Ctrl-t, so Ctrl-a reaches dom0).
Exits 0 if every step passed; otherwise prints the failing step and the
whole transcript. The transcript is always written to LOG, and when each
piece of it arrived to LOG.times: one line per read, "OFFSET SECONDS", the
transcript's length after the read and the seconds since the start (for
checks of what arrived while a command ran, e.g. check_shell_busy.py).
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time


def unescape(text):
    r"""TEXT as bytes, with \xHH a byte and \\ a backslash."""
    return re.sub(rb"\\(x[0-9a-fA-F]{2}|\\)",
                  lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1)[1:], 16)]),
                  text.encode())


def main():
    if len(sys.argv) < 5 or "--" not in sys.argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = sys.argv.index("--")
    log_path, script_path = sys.argv[1], sys.argv[2]
    command = sys.argv[split + 1:]
    steps = []
    with open(script_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            verb, _, arg = line.strip().partition(" ")
            steps.append((verb, arg))

    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    transcript = bytearray()
    start = time.monotonic()
    arrivals = []  # (transcript length after a read, seconds since start)

    def save():
        with open(log_path, "wb") as f:
            f.write(bytes(transcript))
        with open(log_path + ".times", "w") as f:
            f.writelines("%d %.3f\n" % a for a in arrivals)
    seen = 0  # expects search from here
    step_timeout = 30.0
    periodic = None  # [interval, text, when it is next due] (`every`)

    def type_line(data):
        for byte in data:
            proc.stdin.write(bytes([byte]))
            proc.stdin.flush()
            time.sleep(0.02)

    def pump(deadline):
        """Reads output until the deadline; returns False at EOF."""
        while True:
            if periodic and time.monotonic() >= periodic[2]:
                try:
                    type_line(periodic[1])
                except BrokenPipeError:
                    return False
                periodic[2] = time.monotonic() + periodic[0]
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            wait = min(left, 0.2, max(periodic[2] - time.monotonic(), 0.01) if periodic else left)
            ready, _, _ = select.select([proc.stdout], [], [], wait)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    return False
                transcript.extend(chunk)
                arrivals.append((len(transcript), time.monotonic() - start))
                return True

    def fail(why):
        save()
        print(f"      {why}")
        print(f"---- console transcript ({log_path}) ----")
        sys.stdout.write(transcript.decode("utf-8", "replace"))
        print("\n----")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return 1

    for verb, arg in steps:
        if verb == "timeout":
            step_timeout = float(arg)
        elif verb == "expect":
            needle = arg.encode()
            deadline = time.monotonic() + step_timeout
            while True:
                at = transcript.find(needle, seen)
                if at >= 0:
                    seen = at + len(needle)
                    break
                if time.monotonic() >= deadline:
                    return fail(f"timed out after {step_timeout:.0f}s waiting for: {arg}")
                if not pump(deadline) and transcript.find(needle, seen) < 0:
                    return fail(f"the run ended before: {arg}")
        elif verb in ("send", "type"):
            type_line(unescape(arg) + (b"\r" if verb == "send" else b""))
        elif verb == "every":
            if arg == "off":
                periodic = None
            else:
                secs, _, text = arg.partition(" ")
                periodic = [float(secs), unescape(text) + b"\r", time.monotonic()]
        elif verb == "count":
            n, _, text = arg.partition(" ")
            needle, n = text.encode(), int(n)
            deadline = time.monotonic() + step_timeout
            while transcript.count(needle) < n:
                if time.monotonic() >= deadline:
                    return fail(f"timed out after {step_timeout:.0f}s with {transcript.count(needle)} of {n}: {text}")
                if not pump(deadline) and transcript.count(needle) < n:
                    return fail(f"the run ended with {transcript.count(needle)} of {n}: {text}")
        elif verb == "monitor":
            path = os.environ.get("HV_TEST_MONITOR", "")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mon:
                    mon.connect(path)
                    mon.settimeout(5)
                    mon.sendall(arg.encode() + b"\n")
                    answer = b""
                    end = time.monotonic() + 2
                    # The monitor echoes the command and prompts "(qemu) "
                    # again when it is done.
                    while answer.count(b"(qemu)") < 2 and time.monotonic() < end:
                        try:
                            chunk = mon.recv(4096)
                        except socket.timeout:
                            break
                        if not chunk:
                            break
                        answer += chunk
            except OSError as e:
                return fail(f"monitor {arg}: {e} (socket {path!r})")
            # Keep the answer only: not the banner, prompts or echo.
            text = re.sub(rb"\x1b\[[0-9;]*[A-Za-z]", b"", answer).decode("utf-8", "replace")
            lines = [l.strip() for l in text.replace("\r", "\n").split("\n")]
            lines = [l for l in lines if l and "(qemu)" not in l and not l.startswith("QEMU ")]
            transcript.extend(f"\n[monitor] {arg}: {' / '.join(lines) or 'done'}\n".encode())
        elif verb == "pause":
            deadline = time.monotonic() + float(arg)
            while time.monotonic() < deadline and pump(deadline):
                pass
        elif verb == "exit":
            deadline = time.monotonic() + step_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                pump(min(deadline, time.monotonic() + 0.2))
            while pump(time.monotonic() + 0.1):
                if proc.poll() is not None and not select.select([proc.stdout], [], [], 0)[0]:
                    break
            if proc.poll() is None:
                return fail(f"still running {step_timeout:.0f}s after the last step")
            if proc.returncode != 0:
                return fail(f"exit status {proc.returncode}")
        else:
            return fail(f"bad script step: {verb} {arg}")

    save()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
