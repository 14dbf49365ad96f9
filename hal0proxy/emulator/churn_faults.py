"""Faults for churn tests that lemond's own watchdog cannot see.

* ``hang``: the model's child is stopped (SIGSTOP): it keeps its listening socket, so
  connects still succeed, but it answers nothing — neither requests nor ``/health``.
  ``"seconds"`` resumes it (SIGCONT) after that long; without it, it stays stopped until
  it is unloaded (SIGTERM waits in the kernel; lemond's SIGKILL after 5 s ends it).
  lemond's watchdog only watches requests that pass through lemond, so it does not react.
"""

from __future__ import annotations

import asyncio
import signal

from hal0proxy.emulator.httpserver import Response, json_response
from hal0proxy.emulator.router import Router

__all__ = ["hang"]

Json = dict[str, object]


async def hang(router: Router, body: Json) -> Response:
    name = body.get("model_name")
    seconds = body.get("seconds")
    if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
        return json_response(400, {"error": "seconds must be a number > 0 or absent"})
    backend = router.backends.get(name) if isinstance(name, str) else None
    if backend is None or not backend.child.is_alive():
        return json_response(404, {"error": f"Model not loaded: {name}"})
    child = backend.child
    child.signal(signal.SIGSTOP)
    if seconds is not None:
        asyncio.get_running_loop().call_later(float(seconds), child.signal, signal.SIGCONT)
    return json_response(200, {"status": "success", "model_name": backend.name, "pid": child.pid, "port": backend.port})
