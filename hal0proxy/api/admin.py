"""Admin and ops endpoints on the proxy's own listener.

``/healthz``, ``/readyz``, ``/metrics``, ``/api/slots[/{name}[/load|/unload]]`` and the SSE
stream ``/api/v1/adapter/events``. Every error uses the envelope; slot names are validated
before anything else; mutating endpoints need the admin token (or a loopback peer when no
token is configured).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from hal0proxy.api import ui
from hal0proxy.control.controller import Controller, LoadFailure, Slot
from hal0proxy.http.errors import ProxyError, json_response, simple_response
from hal0proxy.http.messages import FullResponse, HttpRequest, LocalResponse, StreamResponse
from hal0proxy.lemond.errors import LemondError, ModelNotFound
from hal0proxy.slots.derive import LOADED
from hal0proxy.slots.names import is_valid_slot_name

KEEPALIVE_S = 15.0


class AdminApi:
    def __init__(
        self,
        controller: Controller,
        admin_token: str | None = None,
        metrics: Callable[[], tuple[bytes, bytes]] | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.controller = controller
        self.admin_token = admin_token
        self.metrics = metrics
        self.keepalive_s = keepalive_s

    async def __call__(self, req: HttpRequest) -> LocalResponse:
        path = req.path.rstrip("/") or "/"
        get = req.method in (b"GET", b"HEAD")
        if path == "/healthz" and get:
            return _json(200, {"status": "ok"})
        if path in ui.UI_PATHS and get:
            return ui.status_page(req, self.admin_token)
        if path == "/readyz" and get:
            ready, problems = self.controller.ready()
            return _json(200 if ready else 503, {"ready": ready, "problems": problems})
        if path == "/metrics" and get and self.metrics is not None:
            content_type, body = self.metrics()
            return FullResponse(simple_response(200, body, content_type=content_type))
        if path == "/api/slots" and get:
            return _json(200, [slot_json(s, self.controller) for s in self.controller.slots()])
        if path.startswith("/api/slots/"):
            return await self._slot_route(req, path[len("/api/slots/") :].split("/"))
        if path == "/api/v1/adapter/events" and get:
            return self._events()
        raise ProxyError(404, "resource.not_found", f"no such endpoint: {req.path}", {"path": req.path})

    async def _slot_route(self, req: HttpRequest, parts: list[str]) -> LocalResponse:
        name = parts[0]
        if not is_valid_slot_name(name):
            raise ProxyError(
                400, "slot.invalid_name", "slot names match ^[a-z0-9][a-z0-9_-]{0,31}$", {"name": name[:64]}
            )
        action = parts[1] if len(parts) == 2 else None
        if len(parts) > 2 or action not in (None, "load", "unload"):
            raise ProxyError(404, "resource.not_found", f"no such endpoint: {req.path}", {"path": req.path})
        if action is None:
            if req.method not in (b"GET", b"HEAD"):
                raise ProxyError(405, "request.method_not_allowed", "use GET")
            return _json(200, slot_json(self._slot(name), self.controller))
        if req.method != b"POST":
            raise ProxyError(405, "request.method_not_allowed", "use POST")
        self._authorize(req)
        slot = self._slot(name)
        try:
            if action == "load":
                await self.controller.load_slot(slot)
            else:
                await self.controller.unload_slot(slot)
        except LoadFailure as exc:  # mapped like the data plane: 404 unknown model, 503 + Retry-After
            retry = self.controller.retry_after(slot) if exc.status == 503 else None
            details = {"slot": name, "state": str(slot.status.state)}
            raise ProxyError(exc.status, exc.code, str(exc), details, retry_after_s=retry) from None
        except ModelNotFound as exc:
            raise ProxyError(404, "slot.not_found", str(exc), {"slot": name, "model": slot.model}) from None
        except LemondError as exc:
            raise ProxyError(503, "lemond.unavailable", str(exc), {"slot": name}, retry_after_s=5) from None
        except Exception as exc:  # a failed load is reported, with the slot's state, not hidden
            raise ProxyError(500, "slot.error", str(exc), {"slot": name, "state": str(slot.status.state)}) from None
        return _json(200, slot_json(slot, self.controller))

    def _slot(self, name: str) -> Slot:
        slot = self.controller.slot(name)
        if slot is None:
            raise ProxyError(404, "slot.not_found", f"no slot named {name!r}", {"name": name})
        return slot

    def _authorize(self, req: HttpRequest) -> None:
        if self.admin_token is None:
            if not req.peer_is_loopback:
                raise ProxyError(403, "auth.forbidden", "admin endpoints are loopback-only when no token is configured")
            return
        value = req.header(b"authorization") or b""
        if not value.lower().startswith(b"bearer "):
            raise ProxyError(401, "auth.required", "this endpoint needs the admin bearer token")
        if not hmac.compare_digest(value[7:].strip(), self.admin_token.encode()):
            raise ProxyError(403, "auth.forbidden", "the admin token is not valid")

    def _events(self) -> StreamResponse:
        sub = self.controller.subscribe_events()
        snapshot = [slot_json(s, self.controller) for s in self.controller.slots()]
        keepalive = self.keepalive_s

        async def frames() -> AsyncIterator[bytes]:
            yield b"event: snapshot\ndata: " + orjson.dumps({"slots": snapshot}) + b"\n\n"
            while True:
                try:
                    entry = await asyncio.wait_for(sub.queue.get(), keepalive)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if entry is None:  # dropped for being too slow
                    return
                yield b"event: " + entry["type"].encode() + b"\ndata: " + orjson.dumps(entry) + b"\n\n"

        return StreamResponse(
            status=200,
            headers=[
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
            body=frames(),
            on_close=sub.close,
        )


def _json(status: int, payload: Any) -> FullResponse:
    return FullResponse(json_response(status, payload))


def slot_json(slot: Slot, controller: Controller) -> dict[str, Any]:
    """hal0's ``/api/slots`` entry shape (reference/hal0.md §A.2), from derived state only."""
    status = slot.status
    port = controller.serving_port(slot)
    loaded = status.state in LOADED
    entry: dict[str, Any] = {
        "name": slot.name,
        "state": str(status.state),
        "status": str(status.state),
        "port": status.port if status.port is not None else 0,
        "pid": status.pid,
        "model_id": slot.model,
        "models": [slot.model],
        "type": slot.type,
        "kind": "local",
        "provider": "lemonade",
        "backend": slot.config.llamacpp_backend if slot.config and slot.config.llamacpp_backend else None,
        "in_flight": status.in_flight,
        "last_used_at": slot.last_used_wall,
        "idle_timeout_s": slot.idle_timeout_s,
        "lemonade_state": "loaded" if loaded else "idle",
        "metadata": {
            "message": status.message,
            "adopted": slot.adopted,
            "configured": slot.config is not None,
            "provider": "lemonade",
            "error": status.error,
        },
    }
    if port is not None:
        entry["backend_url"] = f"http://127.0.0.1:{port}/v1"
    return entry
