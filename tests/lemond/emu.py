"""The lemond emulator (a real child process on free ports) for the adapter's integration tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from hal0proxy.http import client as http
from tests.support.emulator import EmulatorProcess, start_emulator


@dataclass
class Emu:
    port: int
    proc: EmulatorProcess

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def fault(self, action: str, **body: Any) -> dict[str, Any]:
        resp = await http.request("POST", f"{self.base_url}/_emu/{action}", json=body, timeout=30)
        assert resp.status == 200, (action, resp.status, resp.body)
        doc = resp.json()
        assert isinstance(doc, dict)
        return doc

    async def state(self) -> dict[str, Any]:
        doc = (await http.request("GET", f"{self.base_url}/_emu/state", timeout=10)).json()
        assert isinstance(doc, dict)
        return doc


@contextlib.asynccontextmanager
async def run_emulator(*args: str) -> AsyncIterator[Emu]:
    """The shared ``start_emulator`` (free ports, children checked on stop), made async-friendly."""
    proc = await asyncio.to_thread(
        start_emulator, *args, unload_pause_seconds=0.0, watchdog_poll_seconds=0.2, log_level="info"
    )
    try:
        yield Emu(proc.port, proc)
    finally:
        await asyncio.to_thread(proc.stop)
