"""``/v1/health`` documents reduced to what routing needs (pure, no I/O).

The shape varies by lemond release (SPEC.md §2.3): ``pid`` arrived in v10.4,
``pinned`` in v10.8, ``audio`` became ``transcription`` in v10.5, and v9-v10.0
report ``log_streaming``. Parsing is lenient: unknown keys are ignored and an entry
without a usable ``backend_url`` port is skipped (cloud models have port 0 and no
process, so there is nothing to route to).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hal0proxy.lemond.events import LoadedModel

__all__ = ["HealthSnapshot", "parse_health", "port_from_backend_url"]

_PORT_RE = re.compile(r"^[a-z][a-z0-9+.-]*://(?:\[[^\]]*\]|[^/:]*):(\d{1,5})(?:/|$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSnapshot:
    version: str = ""
    websocket_port: int | None = None
    max_models: dict[str, int] = field(default_factory=dict)
    loaded: tuple[LoadedModel, ...] = ()
    model_loaded: str | None = None
    # Local monotonic time at which the request was sent: lemond's answer describes
    # its state at some instant after this, never before.
    observed_at: float = 0.0

    def get(self, model: str) -> LoadedModel | None:
        for m in self.loaded:
            if m.model == model:
                return m
        return None


def port_from_backend_url(url: str) -> int | None:
    """``http://127.0.0.1:8001/v1`` → 8001; ``None`` for a missing or zero port."""
    m = _PORT_RE.match(url.strip())
    if not m:
        return None
    port = int(m.group(1))
    return port if 0 < port < 65536 else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _loaded_model(entry: Any) -> LoadedModel | None:
    if not isinstance(entry, dict):
        return None
    name = entry.get("model_name")
    url = entry.get("backend_url")
    if not isinstance(name, str) or not name or not isinstance(url, str):
        return None
    port = port_from_backend_url(url)
    if port is None:
        return None
    pid = _int_or_none(entry.get("pid"))
    return LoadedModel(
        model=name,
        port=port,
        pid=pid if pid else None,
        type=str(entry.get("type") or "llm"),
        backend_url=url,
        recipe=str(entry.get("recipe") or ""),
        checkpoint=str(entry.get("checkpoint") or ""),
        pinned=bool(entry.get("pinned", False)),
    )


def parse_health(doc: Any, *, observed_at: float = 0.0) -> HealthSnapshot:
    """Build a :class:`HealthSnapshot` from a decoded ``/v1/health`` body.

    Raises ``ValueError`` if ``doc`` is not a JSON object.
    """
    if not isinstance(doc, dict):
        raise ValueError("health document is not a JSON object")
    loaded: list[LoadedModel] = []
    seen: set[str] = set()
    entries = doc.get("all_models_loaded")
    for entry in entries if isinstance(entries, list) else ():
        model = _loaded_model(entry)
        if model is not None and model.model not in seen:
            seen.add(model.model)
            loaded.append(model)
    raw_max = doc.get("max_models")
    max_models = {
        str(k): v
        for k, v in (raw_max.items() if isinstance(raw_max, dict) else ())
        if isinstance(v, int) and not isinstance(v, bool)
    }
    ws_port = _int_or_none(doc.get("websocket_port"))
    current = doc.get("model_loaded")
    return HealthSnapshot(
        version=str(doc.get("version") or ""),
        websocket_port=ws_port if ws_port and 0 < ws_port < 65536 else None,
        max_models=max_models,
        loaded=tuple(loaded),
        model_loaded=current if isinstance(current, str) else None,
        observed_at=observed_at,
    )
