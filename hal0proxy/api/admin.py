"""Admin and ops endpoints on the proxy's own listener.

``/healthz``, ``/readyz``, ``/metrics``, ``/api/slots[/{name}[/load|/unload]]``, the SSE
stream ``/api/v1/adapter/events`` and the status page (``/``, ``/ui``). Every error uses the
envelope; a known path asked with another method is ``405`` with ``Allow``. ``{name}`` is
any name ``/api/slots`` lists, or any model lemond knows (``paths.slot_segment_name``).

Who may ask: mutating endpoints need the admin token (or a loopback peer when no token is
configured), and a browser's cross-origin ``POST`` is refused whatever it carries; a request
trusted only for coming from loopback must name a loopback ``Host`` (DNS rebinding, see
``guard``), for the mutating endpoints and for what the status page reads alike.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from hal0proxy.api import guard, paths, ui
from hal0proxy.control.controller import Controller, LoadFailure, Slot
from hal0proxy.http.errors import ProxyError, json_response, simple_response
from hal0proxy.http.messages import FullResponse, HttpRequest, LocalResponse, StreamResponse
from hal0proxy.lemond.errors import LemondError, ModelNotFound
from hal0proxy.slots.derive import LOADED

KEEPALIVE_S = 15.0


def method_not_allowed(req: HttpRequest, allowed: frozenset[bytes]) -> ProxyError:
    allow = paths.allow_header(allowed)
    return ProxyError(
        405,
        "request.method_not_allowed",
        f"{req.method.decode('latin-1')} is not allowed on {req.path}; use {allow.decode()}",
        {"path": req.path, "allow": allow.decode()},
        headers=((b"allow", allow),),
    )


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
        if path.startswith("/api/slots/"):
            return await self._slot_route(req, path[len("/api/slots/") :].split("/"))
        allowed = paths.STATIC_PATHS.get(path)
        if allowed is None or (path == "/metrics" and self.metrics is None):
            raise ProxyError(404, "resource.not_found", f"no such endpoint: {req.path}", {"path": req.path})
        if req.method not in allowed:
            raise method_not_allowed(req, allowed)
        if path in paths.BROWSER_READABLE:
            self._check_loopback_host(req)
        if path == "/healthz":
            return _json(200, {"status": "ok"})
        if path in ui.UI_PATHS:
            return ui.status_page(req, self.admin_token)
        if path == "/readyz":
            ready, problems = self.controller.ready()
            return _json(200 if ready else 503, {"ready": ready, "problems": problems})
        if path == "/metrics" and self.metrics is not None:
            content_type, body = self.metrics()
            return FullResponse(simple_response(200, body, content_type=content_type))
        if path == "/api/slots":
            return _json(200, [slot_json(s, self.controller) for s in self.controller.slots()])
        return self._events()

    async def _slot_route(self, req: HttpRequest, parts: list[str]) -> LocalResponse:
        name = paths.slot_segment_name(parts[0])
        if name is None:
            raise ProxyError(
                400,
                "slot.invalid_name",
                f"not a slot or model name (1-{paths.MAX_NAME_CHARS} characters, no '/', '\\', whitespace "
                "or control characters, percent-encoded as UTF-8)",
                {"name": parts[0][:64]},
            )
        action = parts[1] if len(parts) == 2 else None
        if len(parts) > 2 or (len(parts) == 2 and action not in paths.SLOT_ACTIONS):
            raise ProxyError(404, "resource.not_found", f"no such endpoint: {req.path}", {"path": req.path})
        if action is None:
            if req.method not in paths.READ_METHODS:
                raise method_not_allowed(req, paths.READ_METHODS)
            self._check_loopback_host(req)
            return _json(200, slot_json(await self._slot(name), self.controller))
        if req.method not in paths.ACTION_METHODS:
            raise method_not_allowed(req, paths.ACTION_METHODS)
        self._authorize(req)
        slot = await self._slot(name)
        try:
            if action == "load":
                await self.controller.load_slot(slot)
            else:
                await self.controller.unload_slot(slot)
        except LoadFailure as exc:  # mapped like the data plane: 404 unknown model, 503 + Retry-After
            retry = self.controller.retry_after(slot) if exc.status == 503 else None
            details = {"slot": slot.name, "state": str(slot.status.state)}
            raise ProxyError(exc.status, exc.code, str(exc), details, retry_after_s=retry) from None
        except ModelNotFound as exc:
            raise ProxyError(404, "slot.not_found", str(exc), {"slot": slot.name, "model": slot.model}) from None
        except LemondError as exc:
            raise ProxyError(503, "lemond.unavailable", str(exc), {"slot": slot.name}, retry_after_s=5) from None
        except Exception as exc:  # a failed load is reported, with the slot's state, not hidden
            details = {"slot": slot.name, "state": str(slot.status.state)}
            raise ProxyError(500, "slot.error", str(exc), details) from None
        return _json(200, slot_json(slot, self.controller))

    async def _slot(self, name: str) -> Slot:
        """The slot ``name`` names: a listed slot, else a model lemond knows (it then gets a
        slot of its own, as a request naming it would)."""
        slot = self.controller.slot(name)
        if slot is not None:
            return slot
        found = await self.controller.find_slot(name)
        if isinstance(found, Slot):
            return found
        if not found.lemond_reachable:
            raise ProxyError(
                503,
                "lemond.unavailable",
                f"lemond is not reachable: cannot tell whether it knows a model named {name!r}",
                {"name": name},
                retry_after_s=found.lemond_retry_after_s,
            )
        raise ProxyError(404, "slot.not_found", f"no slot or lemond model named {name!r}", {"name": name})

    def _token_presented(self, req: HttpRequest) -> bool:
        """Whether the request carries the configured admin token."""
        presented = _bearer(req)
        return self.admin_token is not None and presented is not None and self._token_matches(presented)

    def _token_matches(self, presented: bytes) -> bool:
        assert self.admin_token is not None
        return hmac.compare_digest(presented, self.admin_token.encode())

    def _check_loopback_host(self, req: HttpRequest) -> None:
        """A request trusted only for coming from loopback must name a loopback host: a page
        that rebinds its own domain to 127.0.0.1 still sends that domain as ``Host``."""
        if not req.peer_is_loopback or self._token_presented(req):
            return
        host = req.header(b"host")
        if not guard.is_loopback_host(host):
            raise ProxyError(
                403,
                "auth.forbidden",
                "a request trusted for coming from loopback must name a loopback host (localhost, "
                "127.0.0.1, [::1]) in its Host header, not another name (DNS rebinding); "
                "use the admin token to reach the proxy by another name",
                {"host": (host or b"").decode("latin-1")[:256]},
            )

    def _authorize(self, req: HttpRequest) -> None:
        reason = guard.cross_origin_reason(req.header(b"origin"), req.header(b"host"))
        if reason is not None:  # a browser page on another origin, whatever credential it carries
            origin = (req.header(b"origin") or b"").decode("latin-1")[:256]
            raise ProxyError(403, "auth.forbidden", reason, {"origin": origin})
        if self.admin_token is None:
            if not req.peer_is_loopback:
                raise ProxyError(403, "auth.forbidden", "admin endpoints are loopback-only when no token is configured")
            self._check_loopback_host(req)
            return
        presented = _bearer(req)
        if presented is None:
            raise ProxyError(
                401,
                "auth.required",
                "this endpoint needs the admin bearer token",
                headers=((b"www-authenticate", b"Bearer"),),
            )
        if not self._token_matches(presented):
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


def _bearer(req: HttpRequest) -> bytes | None:
    """The credential of an ``Authorization: Bearer …`` field, or ``None`` without one."""
    value = req.header(b"authorization") or b""
    return value[7:].strip() if value.lower().startswith(b"bearer ") else None


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
