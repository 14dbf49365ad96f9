"""Start the lemond emulator as a real subprocess on free ports and talk to it (stdlib only).

    with start_emulator(max_loaded_models=2) as emu:
        status, body = emu.post("/v1/load", {"model_name": "Qwen3-0.6B-GGUF"})

``stop()`` (also on ``__exit__``) kills the emulator and asserts that every child it had
spawned is gone afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "lemond"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux's default if unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_run(width: int, lowest: int = 10000) -> int:
    """A random base port whose ``width`` ports from it are all free now.

    The run lies below the kernel's ephemeral range: inside it, any outgoing connection on this
    machine may take one of the ports between this check and the emulator's bind, and the tests
    that expect lemond's "lowest free port from the base" choice would then see base + 1.
    """
    top = max(lowest + width, _ephemeral_low() - width)
    for _ in range(100):
        base = random.randrange(lowest, top, width)
        if all(_port_is_free(port) for port in range(base, base + width)):
            return base
    raise RuntimeError(f"no run of {width} free ports below {top}")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh loopback connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _children_of(pid: int) -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in task.read_text().split())
    return pids


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class EmulatorProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path, child_port_base: int) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.child_port_base = child_port_base
        self.seen_child_pids: set[int] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/logs/stream"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.port, method, path, body, headers, timeout)

    def post(self, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode()
        status, _, data = self.request("POST", path, raw, {"Content-Type": "application/json"}, timeout)
        self._note_children()
        return status, json.loads(data) if data else None

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, Any]:
        status, _, data = self.request("GET", path, timeout=timeout)
        return status, json.loads(data) if data else None

    def health(self) -> dict[str, Any]:
        status, body = self.get("/v1/health")
        assert status == 200
        return dict(body)

    def state(self) -> dict[str, Any]:
        status, body = self.get("/_emu/state")
        assert status == 200
        for child in body["children"]:
            self.seen_child_pids.add(child["pid"])
        return dict(body)

    def loaded(self) -> dict[str, dict[str, Any]]:
        return {m["model_name"]: m for m in self.health()["all_models_loaded"]}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _note_children(self) -> None:
        with contextlib.suppress(Exception):
            self.state()

    def stop(self, *, sigkill: bool = False, with_children: bool = False) -> None:
        """Stop the emulator and assert that all of its children died too.

        ``with_children``: SIGKILL the children at the same moment, as a service manager
        killing lemond's whole group does.
        """
        if self.proc.poll() is None:
            self._note_children()
            if with_children:  # its own children only, read from /proc: never a reused pid
                for pid in _children_of(self.proc.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.proc.send_signal(signal.SIGKILL if sigkill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        survivors = [pid for pid in self.seen_child_pids if not wait_until(lambda p=pid: not pid_alive(p), 5.0)]
        for pid in survivors:  # clean up before failing, so no process outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not survivors, f"children outlived the emulator: {survivors}"

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_emulator(
    *args: str,
    children: str = "fake",
    max_loaded_models: int = 1,
    catalog: str | Path | None = None,
    lemond_version: str | None = None,
    unload_pause_seconds: float = 0.05,
    log_level: str = "debug",
    watchdog_poll_seconds: float = 0.5,
    startup_timeout: float = 30.0,
    port: int | None = None,
    child_port_base: int | None = None,
) -> EmulatorProcess:
    """Launch ``python -m hal0proxy.emulator`` on free ports (or the given ones, to restart
    a lemond where a proxy expects it) and wait for ``/live``."""
    port = free_port() if port is None else port
    # One random free run, children's ports first and the websocket's after them, keeps parallel
    # runs (and other users of this machine) from colliding with each other or with the emulator.
    run = free_port_run(60)
    child_base = run if child_port_base is None else child_port_base
    ws_base = run + 50
    argv = [
        sys.executable, "-m", "hal0proxy.emulator",
        "--port", str(port),
        "--child-port-base", str(child_base),
        "--websocket-port-base", str(ws_base),
        "--max-loaded-models", str(max_loaded_models),
        "--children", children,
        "--unload-pause-seconds", str(unload_pause_seconds),
        "--log-level", log_level,
        "--watchdog-poll-seconds", str(watchdog_poll_seconds),
    ]  # fmt: skip
    if catalog is not None:
        argv += ["--catalog", str(catalog)]
    if lemond_version is not None:
        argv += ["--lemond-version", lemond_version]
    argv += list(args)
    fd, log_name = tempfile.mkstemp(prefix="hal0-emulator-", suffix=".log")
    log_file = os.fdopen(fd, "wb")
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log_file.close()
    emu = EmulatorProcess(proc, port, Path(log_name), child_base)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited with {proc.returncode}:\n{emu.log_text()}")
        try:
            status, _, _ = emu.request("GET", "/live", timeout=2)
            if status == 200:
                return emu
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"emulator did not come up:\n{emu.log_text()}")
