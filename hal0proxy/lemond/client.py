"""HTTP client for lemond's control plane (SPEC.md §2).

Every call goes through :meth:`LemondClient._call`, which is where transport
failures and non-2xx answers are mapped to :mod:`hal0proxy.lemond.errors` — once.
Nothing here retries: ``/v1/load`` in particular may spawn a process, evict other
models or trigger lemond's evict-all path, so only the caller may decide to try
again.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from hal0proxy.http import client as http
from hal0proxy.lemond.errors import (
    LemondError,
    LemondTimeout,
    LemondUnavailable,
    PullFailed,
    error_from_response,
)
from hal0proxy.lemond.health import HealthSnapshot, parse_health

__all__ = ["DEFAULT_BASE_URL", "LemondClient", "PullProgress"]

DEFAULT_BASE_URL = "http://127.0.0.1:13305"
# lemond's own global_timeout for a child to become healthy is 600 s (SPEC.md §1.1);
# a load also downloads missing files first, so allow a little more than that.
DEFAULT_LOAD_TIMEOUT_S = 660.0
DEFAULT_TIMEOUT_S = 10.0
# Unload waits for in-flight requests, SIGTERM→SIGKILL (5 s) and a 2 s GPU pause per
# model (SPEC.md §2.5); unload-all pays that per model.
DEFAULT_UNLOAD_TIMEOUT_S = 120.0

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One ``/v1/pull`` SSE event: ``event`` is ``progress`` or ``complete``."""

    event: str
    data: dict[str, Any]

    @property
    def percent(self) -> float | None:
        value = self.data.get("percent")
        return float(value) if isinstance(value, int | float) else None


class LemondClient:
    """Control-plane calls to one lemond instance.

    ``api_key`` defaults to ``$LEMONADE_API_KEY``; pass ``None`` to send no key.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = _UNSET,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT_S,
        unload_timeout: float = DEFAULT_UNLOAD_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"lemond base URL must be http://host:port, got {base_url!r}")
        self.host: str = parts.hostname
        self.port: int = parts.port or 80
        if api_key is _UNSET:
            api_key = os.environ.get("LEMONADE_API_KEY") or None
        self.api_key: str | None = api_key
        self.timeout = timeout
        self.load_timeout = load_timeout
        self.unload_timeout = unload_timeout

    # -- plumbing -------------------------------------------------------------------

    def auth_headers(self) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.api_key}")] if self.api_key else []

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _call(
        self,
        op: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        model: str | None = None,
    ) -> http.Response:
        try:
            resp = await http.request(
                method,
                self.url(path),
                json=json,
                headers=self.auth_headers(),
                timeout=self.timeout if timeout is None else timeout,
            )
        except http.RequestTimeout as exc:
            raise LemondTimeout(f"lemond {op} timed out: {exc}", model=model) from exc
        except http.HTTPClientError as exc:
            raise LemondUnavailable(f"lemond {op} failed: {exc}", model=model) from exc
        if not 200 <= resp.status < 300:
            raise error_from_response(op, resp.status, resp.body, model=model)
        return resp

    @staticmethod
    def _json(op: str, resp: http.Response) -> Any:
        try:
            return resp.json()
        except orjson.JSONDecodeError as exc:
            raise LemondError(f"lemond {op}: response is not JSON", status=resp.status) from exc

    # -- endpoints ------------------------------------------------------------------

    async def live(self) -> bool:
        """``GET /live``: True when lemond answers 200 (no auth needed)."""
        try:
            resp = await http.request("GET", self.url("/live"), timeout=self.timeout)
        except http.HTTPClientError:
            return False
        return resp.status == 200

    async def health(self) -> HealthSnapshot:
        """``GET /v1/health``, parsed. ``observed_at`` is when the request was sent."""
        sent_at = time.monotonic()
        resp = await self._call("health", "GET", "/v1/health")
        try:
            return parse_health(self._json("health", resp), observed_at=sent_at)
        except ValueError as exc:
            raise LemondError(f"lemond health: {exc}", status=resp.status) from exc

    async def load(self, model_name: str, *, timeout: float | None = None, **options: Any) -> dict[str, Any]:
        """``POST /v1/load``; blocks until the child is healthy. Never retried here."""
        body = {"model_name": model_name, **options}
        resp = await self._call(
            "load",
            "POST",
            "/v1/load",
            json=body,
            timeout=self.load_timeout if timeout is None else timeout,
            model=model_name,
        )
        doc = self._json("load", resp)
        return doc if isinstance(doc, dict) else {"status": "success"}

    async def unload(self, model_name: str | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """``POST /v1/unload``; ``None`` unloads every model. Raises ``NotLoaded`` on 404."""
        body = {"model_name": model_name} if model_name else {}
        resp = await self._call(
            "unload",
            "POST",
            "/v1/unload",
            json=body,
            timeout=self.unload_timeout if timeout is None else timeout,
            model=model_name,
        )
        doc = self._json("unload", resp)
        return doc if isinstance(doc, dict) else {"status": "success"}

    async def pin(self, model_name: str, pinned: bool, *, timeout: float | None = None) -> dict[str, Any]:
        """``POST /internal/pin`` (lemond v11+; the admin key, which defaults to the API key).

        Changes only the pin of a loaded model: unlike a second ``/v1/load``, it can never
        turn into an option-change reload. Raises ``LemondError`` (400 when not loaded).
        """
        resp = await self._call(
            "pin",
            "POST",
            "/internal/pin",
            json={"model_name": model_name, "pinned": pinned},
            timeout=timeout,
            model=model_name,
        )
        doc = self._json("pin", resp)
        return doc if isinstance(doc, dict) else {"status": "success"}

    async def models(self, show_all: bool = False) -> list[dict[str, Any]]:
        """``GET /v1/models``: the raw ``data`` list."""
        path = "/v1/models?show_all=true" if show_all else "/v1/models"
        doc = self._json("models", await self._call("models", "GET", path))
        data = doc.get("data") if isinstance(doc, dict) else None
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    async def pull(
        self,
        model_name: str,
        *,
        stream: bool = True,
        idle_timeout: float = 120.0,
        **options: Any,
    ) -> AsyncIterator[PullProgress]:
        """``POST /v1/pull``. Yields progress events, ending with ``complete``.

        An ``error`` event raises :class:`PullFailed`. With ``stream=False`` the one
        synchronous answer is yielded as a ``complete`` event.
        """
        body = {"model_name": model_name, "stream": stream, **options}
        if not stream:
            resp = await self._call("pull", "POST", "/v1/pull", json=body, timeout=self.load_timeout, model=model_name)
            doc = self._json("pull", resp)
            yield PullProgress("complete", doc if isinstance(doc, dict) else {})
            return
        try:
            async for sse in http.stream_sse(
                "POST",
                self.url("/v1/pull"),
                json=body,
                headers=self.auth_headers(),
                timeout=self.timeout,
                idle_timeout=idle_timeout,
            ):
                data = _json_object(sse.data)
                if sse.event == "error":
                    raise PullFailed(f"lemond pull failed: {data.get('error', sse.data)}", model=model_name)
                yield PullProgress(sse.event, data)
                if sse.event == "complete":
                    return
        except http.HTTPStatusError as exc:
            r = exc.response
            raise error_from_response("pull", r.status, r.body, model=model_name) from exc
        except http.RequestTimeout as exc:
            raise LemondTimeout(f"lemond pull timed out: {exc}", model=model_name) from exc
        except http.HTTPClientError as exc:
            raise LemondUnavailable(f"lemond pull failed: {exc}", model=model_name) from exc
        raise PullFailed("lemond pull stream ended without a complete event", model=model_name)


def _json_object(text: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"raw": text}
    return doc if isinstance(doc, dict) else {"value": doc}
