"""lemond's residency controls beyond the count LRU: ``/internal/pin`` and the eviction engine.

* ``POST /internal/pin`` ``{"model_name"|"model", "pinned": bool}`` (v11+, server.cpp
  ``handle_pin``): sets the pin of a loaded model, waiting for the load lock like
  ``Router::set_model_pinned``; a model that is not loaded is a 400 with lemond's message.
* The eviction engine (v11+, ``eviction_engine.cpp``, SPEC §4.5): every ``interval_s`` it
  looks at each unpinned model that opted in (global ``auto_evict`` or the model's own
  ``auto_evict`` load option). Idle for ``evict_idle_timeout`` (300 s) → full unload; idle for
  ``downsize_idle_timeout`` (60 s) while ready → downsize (KV cache erased; the process stays).
  Idle is measured from lemond's access time, which only traffic *through lemond* and loads
  refresh — a model streaming straight from its child looks idle. The log lines have no tag,
  so the tag is the function name: ``(evaluate_servers)``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson

from hal0proxy.emulator.httpserver import Request, Response, json_response
from hal0proxy.emulator.router import Backend, Router

__all__ = ["EvictionEngine", "EvictionSettings", "handle_pin"]

_TAG = "evaluate_servers"


def _invalid(message: str) -> Response:
    return json_response(400, {"error": {"message": message, "type": "invalid_request_error"}})


async def handle_pin(router: Router, request: Request) -> Response:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        return _invalid(f"Invalid JSON body: {exc}")
    if not isinstance(body, dict) or ("model" not in body and "model_name" not in body):
        return _invalid("Parameter 'model' or 'model_name' is required")
    pinned = body.get("pinned")
    if not isinstance(pinned, bool):
        return _invalid("Parameter 'pinned' is required and must be a boolean")
    name = body.get("model", body.get("model_name"))
    async with router.lock:
        backend = router.backends.get(str(name))
        if backend is None:
            router.logs.error("Server", f"Pin/unpin failed: Model not loaded: {name}")
            return _invalid(f"Model not loaded: {name}")
        backend.pinned = pinned
    return json_response(200, {"model_name": name, "pinned": pinned, "status": "success"})


@dataclass(frozen=True, slots=True)
class EvictionSettings:
    auto_evict: bool = False
    evict_idle_timeout_s: float = 300.0
    downsize_idle_timeout_s: float = 60.0
    interval_s: float = 5.0


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class EvictionEngine:
    def __init__(self, router: Router, settings: EvictionSettings) -> None:
        self.router = router
        self.settings = settings
        self.evictions = 0
        self.downsizes = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_s)
            try:
                await self.evaluate()
            except Exception as exc:  # one bad pass must not stop the engine for good
                self.router.logs.error(_TAG, f"eviction pass failed: {exc!r}")

    def _opted_in(self, backend: Backend) -> bool:
        value = backend.options.get("auto_evict")
        return value if isinstance(value, bool) else self.settings.auto_evict

    def _timeout(self, backend: Backend, key: str, default: float) -> float:
        value = backend.options.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

    async def evaluate(self) -> None:
        router, logs = self.router, self.router.logs
        async with router.lock:
            now_ms = int(time.monotonic() * 1000)
            victim: Backend | None = None
            downsize: list[Backend] = []
            for backend in list(router.backends.values()):
                if backend.pinned or not self._opted_in(backend) or not router.alive(backend):
                    continue
                evict_s = self._timeout(backend, "evict_idle_timeout", self.settings.evict_idle_timeout_s)
                downsize_s = self._timeout(backend, "downsize_idle_timeout", self.settings.downsize_idle_timeout_s)
                idle_ms = now_ms - backend.last_use_ms
                if idle_ms >= evict_s * 1000 and backend.status not in ("evicting", "unloaded", "in_use"):
                    line = f"Model {backend.name} reached evict idle timeout ({_seconds(evict_s)}s). Evicting."
                    logs.info(_TAG, line)
                    victim = backend
                    break
                if idle_ms >= downsize_s * 1000 and backend.status == "ready":
                    logs.info(
                        _TAG,
                        f"Model {backend.name} reached downsize idle timeout ({_seconds(downsize_s)}s). "
                        "Marking for downsize.",
                    )
                    downsize.append(backend)
            if victim is not None:
                logs.info(_TAG, f"Eviction Engine unloading model: {victim.name} due to score/pressure/idle.")
                self.evictions += 1
                await router.evict(victim)
        for backend in downsize:
            if router.backends.get(backend.name) is backend:
                backend.status = "downsized"
                self.downsizes += 1
                logs.info(_TAG, f"Model {backend.name} downsized.")
