"""lemond's JSON bodies, built from the router's state (pure: no I/O).

Shapes follow the fixtures per release: v11.7 is ``health_two_loaded.json`` without the
HEAD-only ``launch_command``; v10.8 is ``health_v10_8.json``; v10.7 predates the watchdog
fields and lists dead children too.
"""

from __future__ import annotations

from collections.abc import Iterable

from hal0proxy.emulator.catalog import CatalogModel
from hal0proxy.emulator.config import Release

__all__ = [
    "BackendView",
    "error_envelope",
    "health_body",
    "model_entry",
    "not_found_body",
    "pull_progress_events",
]

#: lemond's /v1/models ``created`` is a constant (server.cpp:2647-2694)
MODELS_CREATED = 1234567890


class BackendView:
    """What /health needs to know about one loaded backend."""

    __slots__ = ("last_use_ms", "model", "options", "pid", "pinned", "port", "status")

    def __init__(
        self,
        model: CatalogModel,
        port: int,
        pid: int,
        options: dict[str, object],
        pinned: bool,
        last_use_ms: int,
        status: str,
    ) -> None:
        self.model = model
        self.port = port
        self.pid = pid
        self.options = options
        self.pinned = pinned
        self.last_use_ms = last_use_ms
        self.status = status


def _entry(view: BackendView, release: Release) -> dict[str, object]:
    model = view.model
    options = dict(view.options)
    if view.pinned:
        options["pinned"] = True
    entry: dict[str, object] = {
        "backend_url": f"http://127.0.0.1:{view.port}/v1",
        "checkpoint": model.checkpoint,
        "device": "gpu",
        "last_use": view.last_use_ms,
        "model_name": model.name,
        "pid": view.pid,
        "recipe": model.recipe,
        "recipe_options": options,
        "type": model.type,
    }
    if release.has_watchdog:
        entry |= {
            "backend_alive": True,
            "backend_health": "ready",
            "loaded": True,
            "pinned": view.pinned,
            "status": view.status,
            "watchdog_reset": False,
        }
    if release.has_residency:
        entry |= {
            "is_busy": False,
            "is_streaming": False,
            "residency_class": "standard",
            "slot_pool": f"standard/{model.type}",
        }
        if model.max_context_window is not None:
            entry["max_context_window"] = model.max_context_window
    return entry


def health_body(
    views: Iterable[BackendView], release: Release, max_loaded: int, websocket_port: int | None
) -> dict[str, object]:
    loaded = sorted(views, key=lambda v: v.last_use_ms, reverse=True)
    types = release.model_types
    body: dict[str, object] = {
        "all_models_loaded": [_entry(v, release) for v in loaded],
        "max_models": dict.fromkeys(types, max_loaded),
        "model_loaded": loaded[0].model.name if loaded else None,
        "status": "ok",
        "version": release.version,
    }
    if release.has_watchdog:
        pinned = dict.fromkeys(types, 0)
        for view in loaded:
            if view.pinned and view.model.type in pinned:
                pinned[view.model.type] += 1
        body["pinned_models"] = pinned
    if release.has_residency:
        body["pinned_helper_models"] = dict.fromkeys(types, 0)
        body["telemetry"] = {"enabled": False}
        body["update_check_done"] = True
    if websocket_port is not None:
        body["websocket_port"] = websocket_port
    return body


def model_entry(model: CatalogModel, downloaded: bool) -> dict[str, object]:
    entry: dict[str, object] = {
        "checkpoint": model.checkpoint,
        "checkpoints": {"main": model.checkpoint},
        "components": [],
        "created": MODELS_CREATED,
        "downloaded": downloaded,
        "id": model.name,
        "labels": list(model.labels),
        "object": "model",
        "owned_by": "lemonade",
        "recipe": model.recipe,
        "recipe_options": {},
        "registry_source": "huggingface",
        "size": model.size,
        "source": "huggingface",
        "suggested": model.suggested,
        "update_available": False,
    }
    if model.max_context_window is not None:
        entry["max_context_window"] = model.max_context_window
    return entry


def error_envelope(code: str, message: str, requested: str) -> dict[str, object]:
    """The ``/load`` error shape (fixtures ``load_error_*.json``)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "param": "model",
            "requested_model": requested,
            "type": code,
        }
    }


def not_found_body(path: str) -> dict[str, object]:
    return {"error": {"message": "The requested endpoint does not exist", "path": path, "type": "not_found"}}


def pull_progress_events(model: CatalogModel) -> list[tuple[str, dict[str, object]]]:
    """Named SSE events of a streamed pull that downloads ``model`` (fixture ``pull_stream.sse``)."""
    total = max(int(model.size * 1024**3), 1024) + 1024
    weights = total - 1024
    first = {
        "bytes_downloaded": weights,
        "bytes_previously_downloaded": 0,
        "bytes_total": weights,
        "file": model.file_name,
        "file_index": 1,
        "percent": 100,
        "total_download_size": total,
        "total_files": 2,
    }
    second = {
        "bytes_downloaded": 1024,
        "bytes_previously_downloaded": 0,
        "bytes_total": 1024,
        "file": "config.json",
        "file_index": 2,
        "percent": 100,
        "total_download_size": total,
        "total_files": 2,
    }
    return [("progress", first), ("progress", second), ("complete", second)]
