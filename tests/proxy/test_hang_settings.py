"""``HangWatch.update``, as a pure unit: an exchange already watched is judged by the new
thresholds at the next sweep (its silence so far counts), and a probe scheduled further out
than the new interval is brought forward. The same over real processes: tests/test_reload.py."""

from __future__ import annotations

import asyncio

from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.hangwatch import HangSettings, HangWatch
from hal0proxy.proxy.upstream import UpstreamPool
from hal0proxy.routing.contract import Lease, StaticLease, StaticRouter


class SilentExchange:
    def __init__(self, port: int) -> None:
        self.lease = StaticLease(port, "m")
        self.ended = 0

    def progress_mark(self) -> tuple[Lease, tuple[int, int, int]] | None:
        return self.lease, (1, 1, 0)  # never moves

    def end_hung_exchange(self) -> None:
        self.ended += 1


class HungRouter(StaticRouter):
    def __init__(self) -> None:
        super().__init__({})
        self.hung: list[int] = []

    def child_hung(self, lease: Lease) -> None:
        self.hung.append(lease.port)


def _watch(settings: HangSettings, probed: list[int]) -> tuple[HangWatch, HungRouter]:
    router = HungRouter()

    async def failing_probe(port: int, _timeout: float) -> bool:
        probed.append(port)
        return False

    return HangWatch(ProxyContext(router=router, pool=UpstreamPool()), settings, probe=failing_probe), router


async def _sweep(watch: HangWatch, now: float) -> None:
    watch.sweep(now)
    for _ in range(3):  # let a started probe run to its verdict
        await asyncio.sleep(0)


async def test_a_shorter_hang_after_applies_to_an_exchange_already_silent() -> None:
    probed: list[int] = []
    watch, router = _watch(HangSettings(hang_after_s=90.0), probed)
    exchange = SilentExchange(9001)
    watch.ctx.connections.add(exchange)  # type: ignore[arg-type]
    now = asyncio.get_running_loop().time()
    await _sweep(watch, now)
    await _sweep(watch, now + 3.0)
    assert probed == []  # 3 s of silence is nothing under 90 s
    watch.update(HangSettings(hang_after_s=2.0, probe_interval_s=1.0, probe_timeout_s=0.5, probe_failures=1))
    await _sweep(watch, now + 3.1)
    assert probed == [9001] and router.hung == [9001] and exchange.ended == 1


async def test_a_longer_hang_after_stops_probing() -> None:
    probed: list[int] = []
    watch, router = _watch(HangSettings(hang_after_s=1.0, probe_interval_s=0.3, probe_failures=3), probed)
    exchange = SilentExchange(9001)
    watch.ctx.connections.add(exchange)  # type: ignore[arg-type]
    now = asyncio.get_running_loop().time()
    await _sweep(watch, now)
    await _sweep(watch, now + 1.5)
    assert probed == [9001]  # probe 1 of 3 failed
    watch.update(HangSettings(hang_after_s=300.0))
    await _sweep(watch, now + 10.0)
    assert probed == [9001] and router.hung == [] and exchange.ended == 0
    assert watch._ports == {}  # the failed probe no longer counts


async def test_a_shorter_probe_interval_brings_the_next_probe_forward() -> None:
    probed: list[int] = []
    watch, _ = _watch(HangSettings(hang_after_s=1.0, probe_interval_s=60.0, probe_failures=3), probed)
    watch.ctx.connections.add(SilentExchange(9001))  # type: ignore[arg-type]
    now = asyncio.get_running_loop().time()
    await _sweep(watch, now)
    await _sweep(watch, now + 1.5)
    assert probed == [9001]
    assert watch._ports[9001].next_probe_at > now + 50  # next probe a minute out
    watch.update(HangSettings(hang_after_s=1.0, probe_interval_s=1.0, probe_failures=3))
    assert watch._ports[9001].next_probe_at <= asyncio.get_running_loop().time() + 1.0
