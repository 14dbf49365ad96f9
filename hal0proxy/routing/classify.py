"""Which model a ``/v1/*`` request is for, decided from its path and body (pure, no I/O).

The body is parsed only to read ``model``; the bytes forwarded to the child stay untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import orjson

from hal0proxy.http.errors import ProxyError

# hal0's path defaults: a request without a model on these paths goes to the named slot.
_PATH_DEFAULT_SLOTS: tuple[tuple[str, str], ...] = (
    ("/v1/embeddings", "embed"),
    ("/v1/rerank", "rerank"),
    ("/v1/audio/speech", "tts"),
    ("/v1/audio/transcriptions", "stt"),
    ("/v1/audio/translations", "stt"),
    ("/v1/images/", "img"),
)
_CHAT_DEFAULT_SLOTS = ("chat", "primary")
# Only text-generation paths take the chat default. Any other path without a model is refused
# rather than sent to a chat model: a modelless health probe or a typo must never load (and so
# make room by evicting) a model.
_CHAT_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/tokenize",
        "/v1/detokenize",
        "/v1/infill",
    }
)
# lemond's own API (its route table under /v1). None of it is a child's: forwarding it to a model
# server is wrong, and loading or unloading behind the proxy's back would defeat its eviction
# ownership, so these paths are refused with a pointer to lemond (SPEC §2.2).
_LEMOND_OWN_PATHS = frozenset(
    {"health", "load", "unload", "pull", "delete", "params", "install", "uninstall", "log-level", "stats",
     "system-info", "system-stats", "registry", "downloads", "jobs", "cloud"}
)  # fmt: skip

# Path rewrites applied to the upstream request line (hal0 compatibility).
_UPSTREAM_REWRITES = {"/v1/rerankings": "/v1/rerank", "/v1/reranker": "/v1/rerank"}

_MULTIPART_MODEL = re.compile(rb'name="model"\r\n(?:[^\r\n]*\r\n)*\r\n([^\r\n]{1,512})\r\n')


@dataclass(frozen=True, slots=True)
class Classified:
    model: str | None  # what the client asked for (slot name or lemond model name), if anything
    default_slots: tuple[str, ...]  # candidates when ``model`` is None, in order of preference
    upstream_path: bytes  # request target to send to the child
    streaming: bool


def default_slots_for(path: str) -> tuple[str, ...]:
    """The slots a request without a model goes to on this path, in order; none off the known paths."""
    for prefix, slot in _PATH_DEFAULT_SLOTS:
        if path.startswith(prefix):
            return (slot,)
    return _CHAT_DEFAULT_SLOTS if path in _CHAT_PATHS else ()


def refuse_lemond_path(path: str) -> None:
    """Raise 404 for a path of lemond's own API (``/v1/health``, ``/v1/load``, …)."""
    first = path[4:].split("/", 1)[0] if path.startswith("/v1/") else ""
    if first in _LEMOND_OWN_PATHS:
        raise ProxyError(
            404,
            "resource.not_found",
            f"{path} is lemond's own API, which the proxy does not serve: ask lemond directly "
            "(the proxy's own state is at /healthz, /readyz and /api/slots)",
            {"path": path},
        )


def upstream_target(path: str, query: bytes) -> bytes:
    rewritten = _UPSTREAM_REWRITES.get(path, path)
    return rewritten.encode() + (b"?" + query if query else b"")


def model_from_body(content_type: bytes, body: bytes) -> tuple[str | None, bool]:
    """Return ``(model, stream)`` from a request body; raise 400 on malformed JSON."""
    if not body:
        return None, False
    if content_type != b"application/json":  # what SDKs send needs no normalising
        ctype = content_type.split(b";", 1)[0].strip().lower()
        if ctype == b"multipart/form-data":
            match = _MULTIPART_MODEL.search(body)
            return (match.group(1).decode("utf-8", "replace").strip() if match else None), False
        if ctype and ctype != b"application/json" and not ctype.endswith(b"+json") and body.lstrip()[:1] != b"{":
            # Like llama-server, accept a JSON object whatever the declared type (curl -d sends form type).
            return None, False
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProxyError(400, "request.invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProxyError(400, "request.invalid_json", "request body must be a JSON object")
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise ProxyError(400, "request.invalid_json", "'model' must be a string")
    return (model or None), doc.get("stream") is True


# (path, query, model, streaming) -> its Classified: the same few combinations repeat request
# after request, and a Classified is immutable, so one instance serves them all. Bounded in
# entries and in the size of what is kept: a client inventing paths or model names costs a
# clear now and then, and a megabyte-long model name is never kept.
_classified: dict[tuple[str, bytes, str | None, bool], Classified] = {}
_CLASSIFIED_MAX: Final = 1024
_CLASSIFIED_MAX_KEY_CHARS: Final = 512


def classify(path: str, query: bytes, content_type: bytes, body: bytes) -> Classified:
    model, streaming = model_from_body(content_type, body)
    key = (path, query, model, streaming)
    found = _classified.get(key)
    if found is None:
        refuse_lemond_path(path)  # (on a miss only: such a path is never kept)
        found = Classified(
            model=model,
            default_slots=default_slots_for(path),
            upstream_path=upstream_target(path, query),
            streaming=streaming,
        )
        if len(path) + len(query) + len(model or "") <= _CLASSIFIED_MAX_KEY_CHARS:
            if len(_classified) >= _CLASSIFIED_MAX:
                _classified.clear()
            _classified[key] = found
    return found
