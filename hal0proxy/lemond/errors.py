"""The lemond adapter's exception types, and the one place HTTP answers become them.

lemond has two error shapes (SPEC.md §2.4-2.6): the OpenAI-style
``{"error": {"message", "type", "code", …}}`` of ``/v1/load`` and the bare
``{"error": "text"}`` of ``/v1/unload``, ``/v1/delete`` and auth failures. What a
status means also depends on the operation (404 from ``load`` is an unknown model,
404 from ``unload`` is "not loaded"), so :func:`error_from_response` takes the
operation name. Everything above the adapter catches these types, never statuses.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "BadRequest",
    "LemondAuthError",
    "LemondError",
    "LemondTimeout",
    "LemondUnavailable",
    "LoadFailedError",
    "ModelNotFound",
    "NotLoaded",
    "PullFailed",
    "ResidencyConflict",
    "SlotsPinned",
    "error_from_response",
]


class LemondError(Exception):
    """Base class. ``status``/``code`` are lemond's when the error came from an answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.model = model


class LemondUnavailable(LemondError):
    """lemond could not be reached: connection refused, reset, or not HTTP."""


class LemondTimeout(LemondUnavailable):
    """The call's deadline passed; the operation may still complete inside lemond."""


class LemondAuthError(LemondError):
    """401/403: the API key is missing or wrong, or the Origin was refused."""


class BadRequest(LemondError):
    """400: lemond rejected the request body (a bug on our side, or offline mode for pull)."""


class ModelNotFound(LemondError):
    """404 ``model_not_found``/``model_not_supported`` on load; 422 on delete."""


class LoadFailedError(LemondError):
    """500 ``model_load_error``: the backend failed to start (lemond may have evicted everything)."""


class SlotsPinned(LemondError):
    """409 ``slots_pinned_error``: every model of the pool is pinned."""


class ResidencyConflict(LemondError):
    """409 ``router_residency_conflict``."""


class NotLoaded(LemondError):
    """404 from ``/v1/unload``: the model was not loaded (often: already evicted)."""


class PullFailed(LemondError):
    """A pull ended with an ``error`` event or a failed status."""


def _decode(body: bytes) -> tuple[str, str | None, str | None]:
    """Return (message, code, requested_model) from either error shape."""
    try:
        doc: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace") or "empty body", None, None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            code = err.get("code") or err.get("type")
            model = err.get("requested_model")
            return (
                str(err.get("message", "")),
                str(code) if code else None,
                str(model) if model else None,
            )
        if isinstance(err, str):
            code = doc.get("code")
            return err, str(code) if code else None, None
    return str(doc)[:200], None, None


def error_from_response(op: str, status: int, body: bytes, *, model: str | None = None) -> LemondError:
    """Map one non-2xx lemond answer to the adapter's exception type.

    ``op`` is the operation (``health``, ``load``, ``unload``, ``pull``, ``delete``,
    ``models``); it decides what an ambiguous status such as 404 means.
    """
    message, code, requested = _decode(body)
    model = requested or model
    text = f"lemond {op} failed ({status}): {message}"
    kw: dict[str, Any] = {"status": status, "code": code, "model": model}
    if status in (401, 403):
        return LemondAuthError(text, **kw)
    if op == "unload" and status == 404:
        return NotLoaded(text, **kw)
    if op == "pull":
        if status == 404 or code == "model_not_found":
            return ModelNotFound(text, **kw)
        if status >= 400 and status != 400:
            return PullFailed(text, **kw)
    if status == 404 and code in (None, "model_not_found", "model_not_supported") and op != "health":
        return ModelNotFound(text, **kw)
    if op == "delete" and status == 422:
        return ModelNotFound(text, **kw)
    if status == 409:
        if code == "router_residency_conflict":
            return ResidencyConflict(text, **kw)
        return SlotsPinned(text, **kw)
    if status == 400:
        return BadRequest(text, **kw)
    if op == "load" and status == 500:
        return LoadFailedError(text, **kw)
    if status >= 500:
        return LemondError(text, **kw)
    return LemondError(text, **kw)
