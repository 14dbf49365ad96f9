"""lemond's router: load, evict, unload, nuclear retry, watchdog — with lemond's log lines.

Loads and unloads are serialized by one lock, as in lemond (router.cpp:794-801), so two spawns
never race for a port. Decisions (LRU victim, port) come from :mod:`pool`; this module does
the I/O and writes the exact lines of ``fixtures/log_lines.txt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hal0proxy.emulator import pool
from hal0proxy.emulator.catalog import CatalogModel
from hal0proxy.emulator.children import ChildProcess, port_is_free, probe_health, spawn
from hal0proxy.emulator.config import EmulatorConfig
from hal0proxy.emulator.launch import ChildSpec, LaunchPlan
from hal0proxy.emulator.logs import LogHub

__all__ = ["Backend", "FaultPlan", "LoadError", "Router"]

SERVER_NAME = "llama-server"
#: child output lines lemond drops before re-logging (process_linux.cpp:32-56)
_DROPPED = ("GET /health", "GET /v1/health", "srv  update_slots: all slots are idle", "Enter 'exit' to stop")
_EXIT_HINTS = (
    "This usually means:",
    "  - Missing required drivers or dependencies",
    "  - Incompatible model file",
    "  - Try running the server manually to see the actual error",
)


class LoadError(Exception):
    """A failed /load: the HTTP status and lemond's error envelope fields."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _StartFailed(Exception):
    def __init__(self, message: str, *, file_not_found: bool = False) -> None:
        super().__init__(message)
        self.file_not_found = file_not_found


@dataclass
class FaultPlan:
    """Injected faults consulted at spawn time."""

    fail_next: dict[str, list[str]] = field(default_factory=dict)
    slow_load_s: dict[str, float] = field(default_factory=dict)

    def take_failure(self, name: str) -> str | None:
        queue = self.fail_next.get(name)
        if not queue:
            return None
        kind = queue.pop(0)
        if not queue:
            del self.fail_next[name]
        return kind


@dataclass
class Backend:
    model: CatalogModel
    child: ChildProcess
    options: dict[str, object]
    pinned: bool
    last_use_ms: int
    status: str = "ready"
    watchdog_reset: bool = False
    listening: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def port(self) -> int:
        return self.child.port


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def _fmt_options(options: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


class Router:
    def __init__(self, config: EmulatorConfig, logs: LogHub, plan: LaunchPlan) -> None:
        self.config = config
        self.release = config.release
        self.logs = logs
        self.plan = plan
        self.catalog: dict[str, CatalogModel] = {m.name: m for m in config.catalog}
        self.downloaded: set[str] = {m.name for m in config.catalog if m.downloaded}
        self.backends: dict[str, Backend] = {}
        self.faults = FaultPlan()
        self.lock = asyncio.Lock()
        self.load_requests: Counter[str] = Counter()
        self.spawns: Counter[str] = Counter()
        self.max_loaded = config.max_loaded_models

    # -- views ------------------------------------------------------------------------------

    def alive(self, backend: Backend) -> bool:
        # Before v10.8 lemond had no watchdog: a dead child stayed "loaded" (SPEC §2.3).
        if not self.release.has_watchdog:
            return True
        return not backend.watchdog_reset and backend.status != "evicting" and backend.child.is_alive()

    def residents(self) -> list[pool.Resident]:
        return [
            pool.Resident(b.name, b.model.type, b.last_use_ms, b.pinned, self.alive(b)) for b in self.backends.values()
        ]

    def effective_options(self, model: CatalogModel, request: dict[str, object]) -> dict[str, object]:
        options: dict[str, object] = {
            "ctx_size": model.ctx_size,
            "llamacpp_args": "",
            "llamacpp_backend": self.plan.backend_name,
        }
        for key, value in request.items():
            if key in ("model_name", "pinned", "save_options") or value is None:
                continue
            if key == "ctx_size" and value == -1:
                continue
            options[key] = value
        return options

    # -- load -------------------------------------------------------------------------------

    async def load(self, name: str, request: dict[str, object]) -> Backend:
        model = self.catalog.get(name)
        self.load_requests[name] += 1
        if model is None:
            raise LoadError(404, "model_not_found", self.not_found_message(name))
        async with self.lock:
            return await self._load_locked(model, request)

    def not_found_message(self, name: str) -> str:
        names = sorted(self.catalog)
        shown = ", ".join(f"'{n}'" for n in names[:3])
        more = f", and {len(names) - 3} more" if len(names) > 3 else ""
        return (
            f"Model '{name}' was not found. Available models include: {shown}{more}. "
            "Use 'lemonade list' or GET /api/v1/models?show_all=true to see all available models."
        )

    async def _load_locked(self, model: CatalogModel, request: dict[str, object]) -> Backend:
        log = self.logs
        options = self.effective_options(model, request)
        log.debug(
            "Router",
            f"Loading model: {model.name} (checkpoint: {model.checkpoint}, recipe: {model.recipe}, "
            f"type: {model.type}, device: gpu, residency: standard)",
        )
        existing = self.backends.get(model.name)
        pinned = bool(request.get("pinned")) if "pinned" in request else bool(existing and existing.pinned)
        if existing is not None:
            if not self.alive(existing) or existing.watchdog_reset:
                await self.prune(existing)
            elif existing.options == options:
                log.log(
                    self.release.already_loaded_severity,
                    "Router",
                    # v10.x had no pinning, so no "and pinned status" (router.cpp:265 in v10.7.0).
                    "Model already loaded, updating access time"
                    + (" and pinned status" if self.release.at_least(11, 0) else ""),
                )
                existing.last_use_ms = _now_ms()
                existing.pinned = pinned
                return existing
            else:
                log.info("Router", f"Options changed, reloading model: {model.name}")
                await self.evict(existing)
        try:
            victim = pool.lru_victim(self.residents(), model.type, self.max_loaded)
        except pool.AllPinnedError as exc:
            raise LoadError(
                409,
                "slots_pinned_error",
                f"All loaded models of type {exc.pool} are pinned. Unload a model first.",
            ) from exc
        if victim is not None:
            log.info("Router", self.release.slot_limit_line(model.type, victim))
            await self.evict(self.backends[victim])
        self.downloaded.add(model.name)
        if "ctx_size" not in request or request.get("ctx_size") in (None, -1):
            log.info("Router", f"Auto-tune ctx_size resolved to {options['ctx_size']}")
        settings = _fmt_options(options)
        log.debug("Router", f"Effective settings: {settings}, pinned={str(pinned).lower()}")
        log.debug("Router", f"Created backend for recipe '{model.recipe}' via registry")
        log.debug("Router", "Starting backend (this may take a moment)...")
        started = time.monotonic()
        try:
            backend = await self.start_backend(model, options, pinned)
        except _StartFailed as exc:
            return await self._recover(model, options, pinned, exc)
        log.debug("Router", f"Backend started successfully in {int((time.monotonic() - started) * 1000)}ms")
        log.info("Router", f"Model loaded successfully. Total loaded: {self._live_count()}")
        return backend

    async def _recover(
        self, model: CatalogModel, options: dict[str, object], pinned: bool, exc: _StartFailed
    ) -> Backend:
        """The failure path of router.cpp:1036-1190: file-not-found rethrows, else nuclear."""
        log = self.logs
        log.error("Router", f"Backend load failed: {exc}")
        if exc.file_not_found:
            log.error("Router", "File not found error, NOT evicting other models")
            raise LoadError(500, "model_load_error", f"Failed to load model '{model.name}': {exc}") from exc
        log.warn("Router", "Load failed with non-file-not-found error, evicting all models and retrying...")
        await self.evict_all()
        log.debug("Router", "Retrying backend load...")
        started = time.monotonic()
        try:
            backend = await self.start_backend(model, options, pinned)
        except _StartFailed as retry_exc:
            log.error("Router", f"Retry also failed: {retry_exc}")
            log.info("LlamaCpp", "Unloading model...")
            log.info("LlamaCpp", "Unloading model...")
            log.error("Router", f"Failed to load model: {retry_exc}")
            raise LoadError(500, "model_load_error", f"Failed to load model '{model.name}': {retry_exc}") from retry_exc
        log.debug("Router", f"Retry successful in {int((time.monotonic() - started) * 1000)}ms!")
        return backend

    def _live_count(self) -> int:
        return sum(1 for b in self.backends.values() if self.alive(b))

    def choose_port(self, exclude: tuple[int, ...] = ()) -> int:
        in_use = tuple(b.port for b in self.backends.values())
        return pool.choose_port(self.config.child_port_base, port_is_free, exclude=in_use + exclude)

    async def start_backend(
        self,
        model: CatalogModel,
        options: dict[str, object],
        pinned: bool,
        *,
        exclude_ports: tuple[int, ...] = (),
        port: int | None = None,
    ) -> Backend:
        log = self.logs
        failure = self.faults.take_failure(model.name)
        ctx_size = int(str(options["ctx_size"]))
        log.info("LlamaCpp", f"Loading model: {model.name}")
        log.debug("LlamaCpp", f"Per-model settings: {_fmt_options(options)}, pinned={str(pinned).lower()}")
        log.info("LlamaCpp", f"Using LlamaCpp Backend: {self.plan.backend_name}")
        if failure == "file_not_found":
            raise _StartFailed(f"GGUF file not found for checkpoint: {model.checkpoint}", file_not_found=True)
        chosen = port if port is not None else self.choose_port(exclude_ports)
        log.debug("WrappedServer", f"{SERVER_NAME} will use port: {chosen}")
        log.info("LlamaCpp", f"Starting {SERVER_NAME}...")
        slow = self.faults.slow_load_s.get(model.name, self.faults.slow_load_s.get("*"))
        spec = ChildSpec(
            load_seconds=model.load_seconds if slow is None else slow,
            tokens_per_second=self.config.fake_tokens_per_second,
            close_after_stream=self.config.fake_close_after_stream,
            fail_start=failure is not None,
        )
        argv = self.plan.argv(model, ctx_size, chosen, spec)
        log.debug("ProcessManager", f"Starting process with filtered output: {' '.join(argv)}")
        listening = asyncio.Event()
        child = await spawn(argv, chosen, self._child_output(listening))
        self.spawns[model.name] += 1
        log.info("ProcessManager", f"Process started successfully, PID: {child.pid}")
        if self.plan.real and slow:
            await asyncio.sleep(slow)
        await self._wait_ready(child)
        with contextlib.suppress(TimeoutError):
            # Keep lemond's order: the child's "listening" line precedes "is ready!".
            await asyncio.wait_for(listening.wait(), 1.0)
        log.info("WrappedServer", f"{SERVER_NAME} is ready!")
        if self.release.has_watchdog:
            log.info(
                "BackendWatchdog",
                f"Started watchdog for {SERVER_NAME} using http://127.0.0.1:{chosen}/health "
                "(streaming=on, non_streaming=on)",
            )
        log.debug("LlamaCpp", f"Model loaded on port {chosen}")
        backend = Backend(model, child, dict(options), pinned, _now_ms(), listening=listening)
        self.backends[model.name] = backend
        return backend

    def _child_output(self, listening: asyncio.Event) -> Callable[[str], None]:
        def on_line(line: str) -> None:
            if not line.strip() or any(marker in line for marker in _DROPPED):
                return
            if "listening on http" in line:  # wording differs between llama.cpp builds
                listening.set()
            self.logs.log("Error" if "error" in line.lower() else "Info", "Process", line)

        return on_line

    async def _wait_ready(self, child: ChildProcess) -> None:
        deadline = time.monotonic() + self.config.load_timeout_s
        while True:
            if not child.is_alive():
                code = child.reap()
                child.close_pipe()
                self.logs.error("WrappedServer", f"{SERVER_NAME} process has terminated with exit code: {code}")
                for hint in _EXIT_HINTS:
                    self.logs.error("WrappedServer", hint)
                raise _StartFailed(f"{SERVER_NAME} failed to start")
            if await probe_health(child.port, 1.0) == 200:
                return
            if time.monotonic() > deadline:
                self.logs.error("WrappedServer", f"{SERVER_NAME} failed to start within timeout")
                await child.terminate()
                raise _StartFailed(f"{SERVER_NAME} failed to start")
            await asyncio.sleep(0.1)

    # -- evict / unload -----------------------------------------------------------------------

    async def evict(self, backend: Backend) -> None:
        log = self.logs
        log.info("Router", f"Evicting model: {backend.name}")
        backend.status = "evicting"
        log.info("LlamaCpp", "Unloading model...")
        if await backend.child.terminate():
            log.warn("ProcessManager", "Process did not respond to SIGTERM, using SIGKILL")
        log.info("ProcessManager", "Process terminated, waiting for GPU driver cleanup...")
        self.backends.pop(backend.name, None)
        await asyncio.sleep(self.config.unload_pause_s)
        # The backend's destructor calls unload() again, after the cleanup pause.
        log.info("LlamaCpp", "Unloading model...")
        log.info("Router", f"Evicted model: {backend.name}")

    async def prune(self, backend: Backend) -> None:
        """Drop a dead backend before reloading it (router.cpp:160-175): no process to stop."""
        log = self.logs
        log.warn("Router", f"Pruning unavailable backend for model: {backend.name} (state=watchdog_reset)")
        log.info("Router", f"Evicting model: {backend.name}")
        log.info("LlamaCpp", "Unloading model...")
        backend.child.reap()
        backend.child.close_pipe()
        self.backends.pop(backend.name, None)
        log.info("LlamaCpp", "Unloading model...")  # the destructor's unload()
        log.info("Router", f"Evicted model: {backend.name}")

    async def evict_all(self) -> None:
        victims = list(self.backends.values())
        self.logs.info("Router", f"Evicting all models ({len(victims)} total)")
        for backend in victims:
            await self.evict(backend)
        self.logs.info("Router", "Evict all completed. Remaining tombstoned models: 0")

    async def unload(self, name: str | None) -> None:
        """Raises KeyError when ``name`` is not loaded."""
        async with self.lock:
            if name is None:
                self.logs.info("Router", "Unload all models called")
                await self.evict_all()
                return
            self.logs.info("Router", f"Unload model called: {name}")
            backend = self.backends.get(name)
            if backend is None:
                raise KeyError(name)
            await self.evict(backend)

    # -- watchdog -----------------------------------------------------------------------------

    def watchdog_pass(self) -> None:
        """Reap exited children; from v10.8 also mark them unavailable with lemond's line."""
        for backend in list(self.backends.values()):
            if backend.status == "evicting" or backend.watchdog_reset or backend.child.is_alive():
                continue
            code = backend.child.reap()
            backend.child.close_pipe()
            if not self.release.has_watchdog:
                continue
            backend.watchdog_reset = True
            self.logs.error(
                "BackendWatchdog",
                f"{SERVER_NAME} backend marked unavailable: backend process exited while watchdog was "
                f"active; reaped exited backend process PID {backend.child.pid} (exit_code={code})",
            )

    async def run_watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.config.watchdog_poll_s)
            try:
                self.watchdog_pass()
            except Exception as exc:  # one bad pass must not stop crash detection for good
                self.logs.error("BackendWatchdog", f"watchdog pass failed: {exc!r}")

    def kill_all_now(self) -> None:
        for backend in list(self.backends.values()):
            backend.child.kill_now()
        self.backends.clear()
