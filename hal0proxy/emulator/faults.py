"""The fault API under ``/_emu/``: what tests and benchmarks use to make lemond misbehave.

All POST with a JSON body (``{"model_name": ...}`` where it applies):

* ``crash``: SIGKILL the model's child; answers once the process has exited.
* ``evict``: evict the model as lemond's LRU would, with its log lines.
* ``respawn``: restart the child on a different port (or ``"port"``), as an option-change reload.
* ``fail_next_load``: ``"kind": "file_not_found" | "other"``, ``"count"`` (default 1) spawns fail.
* ``slow_load``: ``"seconds"`` of load time for the model (all models without ``model_name``;
  ``null`` clears it).
* ``ws_drop``: drop every log WebSocket (``"graceful": true`` sends a close frame instead).
* ``restart``: like a lemond restart: children die, state clears, ``seq`` starts at 1.
* ``hang``: the child stops answering but keeps its socket (see :mod:`churn_faults`).

``GET /_emu/state`` returns counters for tests.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import orjson

from hal0proxy.emulator import churn_faults
from hal0proxy.emulator.httpserver import Request, Response, WebSocket, json_response
from hal0proxy.emulator.router import Router

__all__ = ["FaultApi"]

Json = dict[str, object]


def _ok(payload: Json | None = None) -> Response:
    return json_response(200, {"status": "success", **(payload or {})})


def _bad(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


class FaultApi:
    def __init__(
        self,
        router: Router,
        sockets: set[WebSocket],
        restart: Callable[[], Awaitable[None]],
    ) -> None:
        self.router = router
        self.sockets = sockets
        self._restart = restart
        self.restarts = 0
        self.ws_drops = 0

    async def handle(self, request: Request) -> Response:
        action = request.path.removeprefix("/_emu/")
        if request.method == "GET" and action == "state":
            return json_response(200, self.state())
        if request.method != "POST":
            return _bad(405, "Use POST for fault endpoints")
        try:
            body = orjson.loads(request.body) if request.body.strip() else {}
        except orjson.JSONDecodeError:
            return _bad(400, "Invalid JSON")
        if not isinstance(body, dict):
            return _bad(400, "Expected a JSON object")
        handler = {
            "crash": self.crash,
            "evict": self.evict,
            "respawn": self.respawn,
            "fail_next_load": self.fail_next_load,
            "slow_load": self.slow_load,
            "ws_drop": self.ws_drop,
            "restart": self.restart,
            "hang": lambda b: churn_faults.hang(self.router, b),
        }.get(action)
        if handler is None:
            return _bad(404, f"Unknown fault: {action}")
        return await handler(body)

    def state(self) -> Json:
        router = self.router
        children = [
            {
                "alive": b.child.is_alive(),
                "model_name": b.name,
                "pid": b.child.pid,
                "port": b.port,
                "watchdog_reset": b.watchdog_reset,
            }
            for b in router.backends.values()
        ]
        return {
            "children": children,
            "load_requests": dict(router.load_requests),
            "log_seq": router.logs.last_seq,
            "restarts": self.restarts,
            "spawns": sum(router.spawns.values()),
            "spawns_by_model": dict(router.spawns),
            "ws_connections": len(self.sockets),
            "ws_drops": self.ws_drops,
            "ws_subscribers": router.logs.subscriber_count,
        }

    def _model_name(self, body: Json) -> str | None:
        name = body.get("model_name")
        return name if isinstance(name, str) and name else None

    async def crash(self, body: Json) -> Response:
        name = self._model_name(body)
        backend = self.router.backends.get(name or "")
        if backend is None or not backend.child.is_alive():
            return _bad(404, f"Model not loaded: {name}")
        backend.child.signal(signal.SIGKILL)
        await backend.child.wait_exited(5.0)
        return _ok({"model_name": backend.name, "pid": backend.child.pid, "port": backend.port})

    async def evict(self, body: Json) -> Response:
        name = self._model_name(body)
        router = self.router
        async with router.lock:
            backend = router.backends.get(name or "")
            if backend is None:
                return _bad(404, f"Model not loaded: {name}")
            router.logs.info("Router", router.release.slot_limit_line(backend.model.type, backend.name))
            await router.evict(backend)
        return _ok({"model_name": backend.name})

    async def respawn(self, body: Json) -> Response:
        name = self._model_name(body)
        port = body.get("port")
        if port is not None and not isinstance(port, int):
            return _bad(400, "port must be an integer")
        router = self.router
        async with router.lock:
            backend = router.backends.get(name or "")
            if backend is None:
                return _bad(404, f"Model not loaded: {name}")
            old_port, old_pid = backend.port, backend.child.pid
            router.logs.info("Router", f"Options changed, reloading model: {backend.name}")
            await router.evict(backend)
            fresh = await router.start_backend(
                backend.model, backend.options, backend.pinned, exclude_ports=(old_port,), port=port
            )
            router.logs.info("Router", f"Model loaded successfully. Total loaded: {len(router.backends)}")
        return _ok(
            {
                "model_name": fresh.name,
                "old_pid": old_pid,
                "old_port": old_port,
                "pid": fresh.child.pid,
                "port": fresh.port,
            }
        )

    async def fail_next_load(self, body: Json) -> Response:
        name = self._model_name(body)
        kind = body.get("kind", "other")
        count = body.get("count", 1)
        if name is None or kind not in ("file_not_found", "other") or not isinstance(count, int) or count < 1:
            return _bad(400, "need model_name, kind in file_not_found|other, count >= 1")
        self.router.faults.fail_next.setdefault(name, []).extend([str(kind)] * count)
        return _ok({"model_name": name, "kind": kind, "count": count})

    async def slow_load(self, body: Json) -> Response:
        key = self._model_name(body) or "*"
        seconds = body.get("seconds")
        if seconds is None:
            if key == "*":  # no model named: clear every slow load, not only the default one
                self.router.faults.slow_load_s.clear()
            else:
                self.router.faults.slow_load_s.pop(key, None)
        elif isinstance(seconds, int | float) and seconds >= 0:
            self.router.faults.slow_load_s[key] = float(seconds)
        else:
            return _bad(400, "seconds must be a number >= 0 or null")
        return _ok({"model_name": key, "seconds": seconds})

    async def ws_drop(self, body: Json) -> Response:
        sockets = list(self.sockets)
        for ws in sockets:
            if body.get("graceful") is True:
                ws.close(1001, "going away")
            else:
                ws.abort()
        self.ws_drops += 1
        return _ok({"dropped": len(sockets)})

    async def restart(self, body: Json) -> Response:
        await self._restart()
        self.restarts += 1
        return _ok()
