"""Run ``hal0proxy serve`` as a real subprocess in front of an emulator (stdlib only)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.emulator import REPO, free_port, wait_until


class ProxyProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], bytes]:
        raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(
                method, path, body=raw or None, headers={"Content-Type": "application/json", **(headers or {})}
            )
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str) -> Any:
        status, _, data = self.request("GET", path)
        assert status == 200, (status, data)
        return json.loads(data)

    def slots(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.get_json("/api/slots")}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        terminate(self.proc)

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_proxy(lemond_url: str, config_toml: str = "", *extra: str, startup_timeout: float = 20.0) -> ProxyProcess:
    port = free_port()
    with tempfile.NamedTemporaryFile("w", prefix="hal0proxy-", suffix=".toml", delete=False) as cfg:
        cfg.write(config_toml)
    fd, log_name = tempfile.mkstemp(prefix="hal0proxy-", suffix=".log")
    log_file = os.fdopen(fd, "wb")
    argv = [sys.executable, "-m", "hal0proxy", "serve", "--listen", f"127.0.0.1:{port}", "--lemond", lemond_url]
    argv += ["--config", cfg.name, *extra]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log_file.close()
    proxy = ProxyProcess(proc, port, Path(log_name))
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}:\n{proxy.log_text()}")
        with contextlib.suppress(OSError):
            status, _, _ = proxy.request("GET", "/healthz", timeout=2)
            if status == 200:
                return proxy
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"proxy did not come up:\n{proxy.log_text()}")


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


wait_for = wait_until  # the name the policy tests read best with
