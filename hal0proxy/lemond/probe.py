"""Cheap "is anything listening on this port?" checks for unproven routes.

A route that changed recently has not yet carried a request. Before forwarding to
it the data plane asks :meth:`PortValidator.check`, which opens (and immediately
closes) a TCP connection to ``127.0.0.1:port``. Results are cached for a short TTL
so a burst of requests to a fresh route costs one probe, and concurrent checks of
the same port share one attempt.

A successful connect proves only that *something* listens there; lemond picks the
lowest free port at spawn, so after a crash another child may own it. That is why
routes also carry the pid, and why a failed forward still triggers a health refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

__all__ = ["PortValidator", "probe_health"]


class PortValidator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        ttl_s: float = 1.0,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._cache: dict[int, tuple[bool, float]] = {}
        self._inflight: dict[int, asyncio.Future[bool]] = {}
        self.probes = 0  # how many real connects were made (for tests and metrics)

    def cached(self, port: int) -> bool | None:
        """The cached answer if still fresh, else ``None``."""
        hit = self._cache.get(port)
        if hit is not None and self._clock() - hit[1] < self.ttl_s:
            return hit[0]
        return None

    def invalidate(self, port: int | None = None) -> None:
        """Forget one port (after a route change or failed forward), or all."""
        if port is None:
            self._cache.clear()
        else:
            self._cache.pop(port, None)

    def record(self, port: int, ok: bool) -> None:
        """Feed back what a real forward learned, so the next check needs no probe."""
        self._cache[port] = (ok, self._clock())

    async def check(self, port: int) -> bool:
        hit = self.cached(port)
        if hit is not None:
            return hit
        pending = self._inflight.get(port)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[port] = fut
        try:
            ok = await self._probe(port)
            self.record(port, ok)
            fut.set_result(ok)
            return ok
        except BaseException as exc:
            # Cancelled while probing: let waiters try again rather than inherit it.
            fut.set_exception(exc if isinstance(exc, Exception) else ConnectionError("probe cancelled"))
            fut.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(port, None)

    async def _probe(self, port: int) -> bool:
        self.probes += 1
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(self.host, port)
            return True
        except (OSError, TimeoutError):
            return False
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


async def probe_health(port: int, timeout_s: float, host: str = "127.0.0.1") -> bool:
    """``GET /health`` on a child: True on a 200 status line within ``timeout_s``.

    What lemond's watchdog asks a child it suspects of hanging (SPEC §4.4); a child that is
    busy with a long prompt still answers it, a stopped or wedged one does not.
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
        return line.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
