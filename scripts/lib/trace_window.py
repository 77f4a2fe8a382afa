#!/usr/bin/env python3
"""Runs a command that starts QEMU with a QMP socket and switches QEMU's
instruction log (`-d exec`) on when a text appears in the command's output
and off when another appears, so only a window of a long run is traced.

usage: trace_window.py SOCKET START STOP LOG -- COMMAND...

STOP is a text, or +SECONDS: wall-clock time after START (for a loop long
enough that it is still running when the log switches on).

COMMAND must give QEMU `-qmp unix:SOCKET,server=on,wait=off -d nochain -D
TRACE` (and `-accel tcg,one-insn-per-tb=on` for one line per instruction).
The command's output goes to LOG. Exits with the command's status.
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time


class Qmp:
    def __init__(self, path):
        for _ in range(200):
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"trace_window: no QMP socket at {path}")
        self.file = self.sock.makefile("rw")
        self.file.readline()  # greeting
        self.call("qmp_capabilities")

    def call(self, cmd, **args):
        self.file.write(json.dumps({"execute": cmd, "arguments": args}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "return" in reply or "error" in reply:
                return reply

    def hmp(self, line):
        return self.call("human-monitor-command", **{"command-line": line})


def main():
    if len(sys.argv) < 7 or sys.argv[5] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    sock, start, stop, log_path = sys.argv[1:5]
    # Its own process group, so that it can be ended as a whole (below).
    proc = subprocess.Popen(sys.argv[6:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    qmp = None
    state = "before"
    with open(log_path, "wb") as log:
        closed_at = None
        while True:
            # After the window closed, the run gets 30 s to end by itself
            # (under sleep=on its power-off can take much longer).
            if closed_at is not None and time.monotonic() - closed_at > 30:
                print("trace_window: ending the run (30 s after the window closed)", file=sys.stderr)
                os.killpg(proc.pid, signal.SIGTERM)
                break
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                break
            log.write(line)
            log.flush()
            text = line.decode(errors="replace")
            if state == "before" and start in text:
                qmp = qmp or Qmp(sock)
                print("trace_window: log on:", qmp.hmp("log exec,nochain"), file=sys.stderr)
                state = "on"
                if stop.startswith("+"):
                    time.sleep(float(stop[1:]))
                    print("trace_window: log off:", qmp.hmp("log nochain"), file=sys.stderr)
                    state, closed_at = "after", time.monotonic()
            elif state == "on" and stop in text:
                print("trace_window: log off:", qmp.hmp("log nochain"), file=sys.stderr)
                state, closed_at = "after", time.monotonic()
    status = proc.wait()
    if state != "after":
        print(f"trace_window: the window never {'opened' if state == 'before' else 'closed'}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
