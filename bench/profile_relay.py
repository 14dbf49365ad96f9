"""Where the relay's CPU goes: py-spy samples hal0proxy while wrk drives it through the fast child.

    python -m bench.profile_relay [--seconds 8] [--top 25]

Starts the fast child and ``hal0proxy serve --static-route fast=PORT``, records the proxy with
``py-spy record --format raw`` while ``wrk -t1 -c16`` posts non-streaming requests, and prints
the functions with the most samples on the top of the stack (self) and anywhere on it (total).
py-spy comes from PyPI (``pip install py-spy``); it needs ptrace rights (root, or
``kernel.yama.ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.procs import start_proxy
from bench.relay import _WRK_LUA, _start_fast_child

__all__ = ["main", "top_entries"]

NATIVE: list[str] = []


def top_entries(raw: str, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """``(self, total, samples)`` from py-spy's collapsed stacks (``frame;frame;... count``)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return own.most_common(limit), total.most_common(limit), samples


def _short(frame: str) -> str:
    # "data_received (hal0proxy/proxy/upstream.py:98)" -> keep the function and the file tail
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    parts = Path(path).parts[-2:] if path else ()
    return f"{name} ({'/'.join(parts)})" if parts else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_relay", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--native", action="store_true", help="include C frames (uvloop, the kernel boundary)")
    args = parser.parse_args(argv)
    NATIVE[:] = ["--native"] if args.native else []
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() or shutil.which("wrk") is None:
        print("needs py-spy (pip install py-spy) and wrk (bench/install_tools.sh)", file=sys.stderr)
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="hal0prof-"))
    child, child_port = _start_fast_child("fast", log_dir, 0.0)
    try:
        proxy, port = start_proxy("hal0proxy", log_dir, {"fast": child_port})
        try:
            script = log_dir / "fast.lua"
            script.write_text(_WRK_LUA % "fast")
            raw = log_dir / "profile.txt"
            record = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    "500",
                    *NATIVE,
                    "-o",
                    str(raw),
                    "--pid",
                    str(proxy.popen.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(1.0)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            wrk = [
                "wrk",
                "-t1",
                f"-c{args.conns}",
                f"-d{args.seconds}s",
                "-s",
                str(script),
                url,
            ]
            done = subprocess.run(wrk, capture_output=True, timeout=args.seconds + 30, check=False)
            record.send_signal(2)  # SIGINT: py-spy writes its file and exits
            _, err = record.communicate(timeout=30)
            print(done.stdout.decode().strip().splitlines()[-2])
            if not raw.exists():
                print(f"py-spy wrote nothing: {err.decode()[-800:]}", file=sys.stderr)
                return 1
            own, total, samples = top_entries(raw.read_text(), args.top)
        finally:
            proxy.stop()
    finally:
        child.stop()
    print(f"\n{samples} samples; self (top of stack):")
    for name, count in own:
        print(f"{100 * count / samples:5.1f}%  {name}")
    print("\ntotal (anywhere on the stack):")
    for name, count in total:
        print(f"{100 * count / samples:5.1f}%  {name}")
    shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
