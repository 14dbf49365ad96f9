"""Real child processes: spawn, watch output, check liveness, terminate, reap.

Children are started with ``PR_SET_PDEATHSIG=SIGTERM`` (as lemond does, process_linux.cpp:
155-157) so they die with the emulator even when it is SIGKILLed. Liveness is checked the way
lemond's ``is_backend_alive`` does: ``waitid(WNOWAIT)`` sees an exited child without reaping it,
so the watchdog can still reap it later and report its exit code.

This module uses ``subprocess.Popen`` rather than asyncio's subprocess support so that nothing
else (asyncio's or uvloop's child watcher) reaps our children behind the watchdog's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence

__all__ = ["ChildProcess", "port_is_free", "probe_health", "spawn"]

_PR_SET_PDEATHSIG = 1
#: lemond escalates SIGTERM to SIGKILL after 5 s (process_linux.cpp:352-358)
TERM_GRACE_S = 5.0


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:  # not Linux: the fake child's parent-pid watch still covers it
        pass


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """lemond's probe: bind on 127.0.0.1, close, report whether the bind worked.

    SO_REUSEADDR, as the children's own listeners use it: a port whose only trace is a
    TIME_WAIT connection is free for them, while a bound or listening socket still blocks it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class _LineReader(asyncio.Protocol):
    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._on_line = on_line
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._on_line(raw.decode("utf-8", "replace").rstrip("\r"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buffer:
            self._on_line(self._buffer.decode("utf-8", "replace"))
            self._buffer = b""


class ChildProcess:
    """One spawned backend process and its port."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int, argv: Sequence[str]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.port = port
        self.argv = list(argv)
        self.exit_code: int | None = None
        self._transport: asyncio.BaseTransport | None = None

    def is_alive(self) -> bool:
        """True until the process has exited (zombies count as exited)."""
        if self.exit_code is not None:
            return False
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self.reap() is None
        return info is None

    def reap(self) -> int | None:
        """Collect the exit status if the process ended: the shell convention, 128+signal."""
        if self.exit_code is None:
            code = self.popen.poll()
            if code is not None:
                self.exit_code = 128 - code if code < 0 else code
        return self.exit_code

    def signal(self, sig: int) -> None:
        if self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    async def wait_exited(self, timeout: float) -> bool:
        """Poll until the process exited (not reaped); True if it did within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def terminate(self, grace: float = TERM_GRACE_S) -> bool:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaps. True if SIGKILL was needed."""
        self.signal(signal.SIGTERM)
        killed = False
        if not await self.wait_exited(grace):
            killed = True
            self.signal(signal.SIGKILL)
            await self.wait_exited(5.0)
        self.reap()
        self.close_pipe()
        return killed

    def kill_now(self) -> None:
        """SIGKILL and reap synchronously (shutdown paths)."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.popen.wait(timeout=5)
        self.reap()
        self.close_pipe()

    def close_pipe(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def spawn(argv: Sequence[str], port: int, on_line: Callable[[str], None]) -> ChildProcess:
    """Start ``argv`` with stdout and stderr merged into ``on_line``, one call per line."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    popen = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_set_pdeathsig,
        env=env,
        close_fds=True,
    )
    child = ChildProcess(popen, port, argv)
    assert popen.stdout is not None
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(lambda: _LineReader(on_line), popen.stdout)
    child._transport = transport
    return child


async def probe_health(port: int, timeout: float = 2.0) -> int | None:
    """GET /health on a child; the HTTP status, or None when it does not answer."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                # Keep-alive on purpose: we close first, so TIME_WAIT stays on our side and
                # never on the child's port.
                writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])
