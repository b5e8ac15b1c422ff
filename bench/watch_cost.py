"""What watching the log costs the daemon per logged request, against raw inotify.

nginx writes one line per request, and each write is an inotify IN_MODIFY event on
the log directory that ingestd watches (through watchdog) to wake up. This measures
the CPU the daemon's watch spends per write at steady write rates, against the
floor: a process that reads the same inotify events itself (``poll`` and ``read``,
nothing else). A writer appends 400-byte lines at the rate, in bursts every
millisecond, for the duration; each watcher runs alone in its own process, and its
CPU is (utime + stime) from /proc/PID/stat over the window.

    .venv/bin/python bench/watch_cost.py              # 1k, 10k, 30k writes/s, 10 s each
    .venv/bin/python bench/watch_cost.py --short      # 3 s each
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_seconds

REPO = Path(__file__).resolve().parent.parent

WATCHDOG = """
import sys, threading, time
from watchdog.observers import Observer
from ingestd.ingest.watch import WAKE_EVENTS, _Wake
observer = Observer()
observer.schedule(_Wake(threading.Event()), sys.argv[1], recursive=False, event_filter=WAKE_EVENTS)
observer.start()
print("ready", flush=True)
time.sleep(3600)
"""

RAW_INOTIFY = """
import ctypes, os, select, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_CLOEXEC)
# modify, attrib, close_write, moved_from, moved_to, create, delete
libc.inotify_add_watch(fd, sys.argv[1].encode(), 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200)
print("ready", flush=True)
poller = select.poll()
poller.register(fd, select.POLLIN)
while True:
    poller.poll()
    os.read(fd, 65536)
"""

WRITER = """
import os, sys, time
path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
line = b"x" * 399 + b"\\n"
per_tick = max(1, rate // 1000)
start = time.perf_counter()
written = 0
while (now := time.perf_counter()) - start < seconds:
    due = int((now - start) * rate)
    while written < due:
        for _ in range(min(per_tick, due - written)):
            os.write(fd, line)
            written += 1
    time.sleep(0.001)
print(written)
"""


def measure(watcher: str, rate: int, seconds: float) -> tuple[int, float]:
    """Writes made and the watcher's CPU seconds while ``rate`` writes/s go to a log."""
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "ingest.log"
        log.touch()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, "-c", watcher, directory], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert process.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            before = cpu_seconds(process.pid)
            writer = subprocess.run(
                [sys.executable, "-c", WRITER, str(log), str(rate), str(seconds)],
                capture_output=True,
                text=True,
                check=True,
            )
            time.sleep(0.2)
            used = cpu_seconds(process.pid) - before
        finally:
            process.kill()
            process.wait()
    return int(writer.stdout), used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="3 s per run (a quick look)")
    parser.add_argument("--seconds", type=float, help="seconds per run [10; --short 3]")
    parser.add_argument("--rates", default="1000,10000,30000", help="writes/s, comma separated")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.short else 10.0)
    print(f"{seconds:g} s per run, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print()
    print("| writes/s | watchdog (ingestd's watch) | µs/write | raw inotify | µs/write | ratio |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for rate in (int(r) for r in args.rates.split(",")):
        writes, watched = measure(WATCHDOG, rate, seconds)
        raw_writes, raw = measure(RAW_INOTIFY, rate, seconds)
        ours, floor = watched / writes * 1e6, raw / raw_writes * 1e6
        ratio = f"{ours / floor:.1f}x" if floor else "n/a"
        print(
            f"| {writes / seconds:,.0f} | {watched / seconds:.2f} cores | {ours:.2f} "
            f"| {raw / seconds:.2f} cores | {floor:.2f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
