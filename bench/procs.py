"""Processes under test: start, wait until they answer, sample CPU/RSS, and always clean up."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import psutil

__all__ = [
    "REPO",
    "Proc",
    "free_port",
    "raise_nofile_preexec",
    "run_loadgen",
    "start_fake_child",
    "start_proxy",
]

REPO = Path(__file__).resolve().parents[1]
NOFILE = 65536


def free_port() -> int:
    """A port the OS just handed out (bind to 0); nothing else on this machine is told to use it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile_preexec() -> None:
    """Run in the child before exec: the 10k-stream test needs ~2 fds per stream in the proxy.

    Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft limit goes up to the
    hard one, and the report shows the limit the proxy actually had.
    """
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(NOFILE, hard)))
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Proc:
    """A started process (its own session, so its whole group can be ended by its id)."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=raise_nofile_preexec,
            start_new_session=True,
        )
        self.ps = psutil.Process(self.popen.pid)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / (1024 * 1024)

    def cpu_s(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()


def wait_ready(proc: Proc, port: int, model: str, timeout: float = 30.0) -> None:
    """Until a real chat request through ``port`` answers 200 (a listening socket is not enough)."""
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready on :{port} after {timeout}s ({last})\n{proc.log_tail()}")


def start_ready(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    ready: Sequence[tuple[int, str]],
    *,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start ``argv`` and return once every ``(port, model)`` in ``ready`` answers a chat request;
    never leave the process behind when it does not."""
    proc = Proc(name, argv, log_dir, env=env)
    try:
        for port, model in ready:
            wait_ready(proc, port, model, timeout=timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_fake_child(
    name: str, log_dir: Path, *, tokens_per_second: float = 0.0, extra: Sequence[str] = ()
) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, "-m", "hal0proxy.emulator.fake_llama_server", "--port", str(port)]
    argv += ["--alias", name, "--tokens-per-second", str(tokens_per_second), *extra]
    return start_ready(name, argv, log_dir, [(port, name)]), port


def start_proxy(name: str, log_dir: Path, routes: dict[str, int], config: str | None = None) -> tuple[Proc, int]:
    """``hal0proxy serve --static-route ...``: exactly the command a user runs; no lemond involved.

    ``config``: the text of a TOML configuration file to serve with (``--config``)."""
    port = free_port()
    argv = [str(Path(sys.executable).with_name("hal0proxy")), "serve", "--listen", f"127.0.0.1:{port}"]
    if not Path(argv[0]).exists():
        argv = [sys.executable, "-m", "hal0proxy", "serve", "--listen", f"127.0.0.1:{port}"]
    if config is not None:
        path = log_dir / f"{name}.toml"
        path.write_text(config)
        argv += ["--config", str(path)]
    for model, child_port in routes.items():
        argv += ["--static-route", f"{model}={child_port}"]
    return start_ready(name, argv, log_dir, [(port, next(iter(routes)))]), port


def run_loadgen(argv: Sequence[str], timeout: float) -> dict[str, object]:
    """Run ``python -m bench.loadgen ARGV`` in its own process and return its JSON result."""
    cmd = [sys.executable, "-m", "bench.loadgen", *argv]
    done = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        timeout=timeout,
        check=False,
        preexec_fn=raise_nofile_preexec,
    )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen {' '.join(argv)} failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    result = orjson.loads(lines[-1])
    assert isinstance(result, dict)
    return result
