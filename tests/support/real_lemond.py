"""Start the real lemond (Lemonade Server) on free ports, with real llama-server children.

    with start_real_lemond("11.7.0", max_loaded_models=1) as lem:
        status, body = lem.post("/v1/load", {"model_name": "alpha"})

Each instance gets a private temporary tree: ``cache/`` (lemond's cache dir, holding
``config.json``), ``run/`` (``XDG_RUNTIME_DIR``, mode 0700), ``models/`` (the
``extra_models_dir``: one copy of the tiny GGUF per model name) and ``bin/`` (a
``llama-server`` link, first on ``PATH``; ``llamacpp.backend = "system"`` makes lemond start
it by its bare name). lemond runs ``offline`` with broadcasting off.

Ports: the main port and ``websocket_port`` are chosen free here and written into the
config. Child ports cannot be chosen: lemond takes the first free port from 8001 upward
at each spawn, so several lemonds on one machine may race for the same port. A spawn that
loses the race fails its health wait and lemond retries or reports the load as failed;
tests therefore read ports only from ``/v1/health``, never assume them.

``stop()`` (also on ``__exit__``) sends SIGTERM, waits, kills the whole process group if
lemond does not exit, and asserts that no child it had spawned outlived it. stdout is
captured as bytes: lemond ends it with a NUL byte after ``Shutdown signal received``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from hal0proxy.emulator.realbin import cache_dir, ensure_llama_server, tiny_model_path
from hal0proxy.lemond.health import port_from_backend_url
from tests.support.emulator import REPO, free_port, http_request, pid_alive, wait_until

SUPPORTED = ("11.7.0", "10.7.0")
DEFAULT_MODELS = ("alpha", "beta")
BUILD_SCRIPT = REPO / "scripts" / "build_lemond.sh"
# A cold 11.7.0 build takes about 9 minutes on two cores when nothing else runs.
BUILD_TIMEOUT_S = 3600.0
STARTUP_TIMEOUT_S = 60.0


class LemondUnavailable(RuntimeError):
    """lemond is not built and could not be built."""


def lemond_binary(version: str) -> Path:
    return cache_dir() / "lemond" / version / "lemond"


def ensure_lemond(version: str) -> Path:
    """The cached lemond for ``version``, built by ``scripts/build_lemond.sh`` when missing."""
    if version not in SUPPORTED:
        raise ValueError(f"unsupported lemond version {version!r}")
    binary = lemond_binary(version)
    if binary.is_file() and (binary.parent / "resources" / "defaults.json").is_file():
        return binary
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), version],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise LemondUnavailable(f"building lemond {version} failed (exit {proc.returncode}):\n{tail}")
    return Path(lines[-1])


def lemond_config(
    version: str, *, port: int, websocket_port: int, models_dir: Path, cache: Path, max_loaded_models: int
) -> dict[str, Any]:
    """The config.json for one run; the keys differ between the two versions (v10.7.0 predates
    ``config_version`` 2: no ``broadcast``/``auto_check_model_updates``/``inhibit_suspend``)."""
    common: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "websocket_port": websocket_port,
        "offline": True,
        "models_dir": str(cache / "hub"),
        "extra_models_dir": str(models_dir),
        "ctx_size": 512,
        "log_level": "info",
        "max_loaded_models": max_loaded_models,
        "llamacpp": {"backend": "system"},
    }
    if version == "10.7.0":
        return {"config_version": 1, "no_broadcast": True, **common}
    return {
        "config_version": 2,
        "broadcast": False,
        "auto_check_model_updates": False,
        "inhibit_suspend": False,
        **common,
    }


class RealLemond:
    def __init__(self, version: str, root: Path, *, max_loaded_models: int, models: tuple[str, ...]) -> None:
        self.version = version
        self.root = root
        self.max_loaded_models = max_loaded_models
        self.models = models
        self.port = free_port()
        self.websocket_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen_child_pids: set[int] = set()
        self.seen_child_ports: set[int] = set()
        self.stdout_path = root / "stdout.log"
        self.runs = 0  # how many times this instance was started (restarts included)

    # -- paths --------------------------------------------------------------------------
    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The log stream: on the main port from v10.8, only on ``websocket_port`` before."""
        port = self.websocket_port if self.version == "10.7.0" else self.port
        return f"ws://127.0.0.1:{port}/logs/stream"

    @property
    def ws_on_main_port(self) -> bool:
        return self.version != "10.7.0"

    # -- lifecycle ----------------------------------------------------------------------
    def prepare(self) -> None:
        binary = ensure_lemond(self.version)
        llama = ensure_llama_server()
        tiny = tiny_model_path()
        for sub in ("cache", "models", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        run = self.root / "run"
        run.mkdir(mode=0o700, exist_ok=True)
        run.chmod(0o700)
        for name in self.models:
            shutil.copyfile(tiny, self.models_dir / f"{name}.gguf")
        link = self.root / "bin" / "llama-server"
        if not link.exists():
            link.symlink_to(llama)
        self.binary = binary
        self.write_config()

    def write_config(self) -> None:
        config = lemond_config(
            self.version,
            port=self.port,
            websocket_port=self.websocket_port,
            models_dir=self.models_dir,
            cache=self.cache,
            max_loaded_models=self.max_loaded_models,
        )
        (self.cache / "config.json").write_text(json.dumps(config, indent=2))

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(os.environ)
        env["XDG_RUNTIME_DIR"] = str(self.root / "run")
        env.pop("RUNTIME_DIRECTORY", None)
        env.pop("LEMONADE_API_KEY", None)
        env["PATH"] = f"{self.root / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        argv = [str(self.binary), str(self.cache), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.version != "10.7.0":
            argv.append("--no-broadcast")  # v10.7.0 exits 109 on this flag; its config says no_broadcast
        log = self.stdout_path.open("ab")
        # Own process group: on failure the group kill reaches the children too.
        self.proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self.runs += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lemond exited with {self.proc.returncode}:\n{self.stdout_text()[-4000:]}")
            with contextlib.suppress(OSError, ValueError):
                status, body = self.get("/v1/health", timeout=2)
                if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                    return
            time.sleep(0.05)
        self.kill_group()
        raise RuntimeError(f"lemond did not come up:\n{self.stdout_text()[-4000:]}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait; the process group is killed if lemond hangs. Asserts no child survives."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.note_children()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self._assert_no_survivors()

    def kill(self) -> None:
        """SIGKILL lemond alone (a crash): its children are orphaned, as they would be for real."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.note_children()
            proc.kill()
            proc.wait(timeout=10)

    def kill_group(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def _assert_no_survivors(self) -> None:
        survivors = [pid for pid in self.seen_child_pids if not wait_until(lambda p=pid: not pid_alive(p), 10.0)]
        for pid in survivors:  # clean up before failing, so no process outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not survivors, f"children outlived lemond {self.version}: {survivors}"

    def reap_orphans(self) -> None:
        """Kill children a crashed lemond left behind (a real crash orphans them)."""
        for pid in self.seen_child_pids:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> RealLemond:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- HTTP ---------------------------------------------------------------------------
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
        self.note_children()
        return status, _json_or_text(data)

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, Any]:
        status, _, data = self.request("GET", path, timeout=timeout)
        return status, _json_or_text(data)

    def health(self) -> dict[str, Any]:
        status, body = self.get("/v1/health")
        assert status == 200, (status, body)
        for entry in body.get("all_models_loaded", []):
            if isinstance(entry.get("pid"), int):
                self.seen_child_pids.add(entry["pid"])
            port = port_from_backend_url(str(entry.get("backend_url", "")))
            if port is not None:
                self.seen_child_ports.add(port)
        return dict(body)

    def loaded(self) -> dict[str, dict[str, Any]]:
        return {m["model_name"]: m for m in self.health()["all_models_loaded"]}

    def note_children(self) -> None:
        with contextlib.suppress(Exception):
            self.health()
        # Children lemond spawned but /health no longer lists (crashed, mid-eviction).
        if self.proc is not None:
            self.seen_child_pids.update(_children_of(self.proc.pid))

    # -- logs ---------------------------------------------------------------------------
    def stdout_bytes(self) -> bytes:
        try:
            return self.stdout_path.read_bytes()
        except FileNotFoundError:
            return b""

    def stdout_text(self) -> str:
        return self.stdout_bytes().replace(b"\x00", b"").decode("utf-8", "replace")

    def log_lines(self) -> list[str]:
        """Every line lemond wrote to stdout over all its runs (NUL bytes dropped)."""
        return self.stdout_text().splitlines()


def _json_or_text(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def _children_of(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def start_real_lemond(
    version: str = "11.7.0",
    *,
    max_loaded_models: int = 1,
    models: tuple[str, ...] = DEFAULT_MODELS,
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> RealLemond:
    root = Path(tempfile.mkdtemp(prefix=f"hal0-lemond-{version}-"))
    lem = RealLemond(version, root, max_loaded_models=max_loaded_models, models=models)
    try:
        lem.prepare()
        lem.start(startup_timeout)
    except BaseException:
        with contextlib.suppress(Exception):
            lem.kill_group()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return lem
