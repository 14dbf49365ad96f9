"""The hang watch's decisions, as a pure unit: sampled progress, probe counting, one verdict."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.hangwatch import HangSettings, HangWatch
from hal0proxy.proxy.upstream import UpstreamPool
from hal0proxy.routing.contract import Lease, StaticLease, StaticRouter


@dataclass(eq=False)
class FakeExchange:
    lease: StaticLease
    progress: int = 0
    ended: int = 0

    def progress_mark(self) -> tuple[Lease, tuple[int, int, int]] | None:
        return self.lease, (1, 1, self.progress)

    def end_hung_exchange(self) -> None:
        self.ended += 1


@dataclass
class RecordingRouter(StaticRouter):
    hung: list[int] = field(default_factory=list)

    def child_hung(self, lease: Lease) -> None:
        self.hung.append(lease.port)


def _rig(answers: list[bool]) -> tuple[HangWatch, RecordingRouter, list[int]]:
    router = RecordingRouter({})
    ctx = ProxyContext(router=router, pool=UpstreamPool())
    probed: list[int] = []

    async def probe(port: int, _timeout: float) -> bool:
        probed.append(port)
        return answers.pop(0) if answers else False

    settings = HangSettings(hang_after_s=1.0, probe_interval_s=0.5, probe_timeout_s=0.1, probe_failures=2)
    return HangWatch(ctx, settings, probe=probe), router, probed


async def _sweep(watch: HangWatch, now: float) -> None:
    watch.sweep(now)
    await asyncio.sleep(0)  # let a started probe run
    await asyncio.sleep(0)


async def test_silent_exchanges_on_a_child_that_fails_its_probes_are_ended_once() -> None:
    watch, router, probed = _rig([False, False])
    stuck = [FakeExchange(StaticLease(9001, "m")), FakeExchange(StaticLease(9001, "m"))]
    moving = FakeExchange(StaticLease(9002, "n"))
    for conn in (*stuck, moving):
        watch.ctx.connections.add(conn)  # type: ignore[arg-type]
    loop_now = asyncio.get_running_loop().time()
    await _sweep(watch, loop_now)  # first sample
    moving.progress += 1
    await _sweep(watch, loop_now + 1.1)  # silent 1.1 s: probe 1 fails
    assert probed == [9001] and router.hung == []
    moving.progress += 1
    watch._ports[9001].next_probe_at = 0.0  # the probe interval has passed
    await _sweep(watch, loop_now + 1.7)  # probe 2 fails: hung
    assert probed == [9001, 9001]
    assert router.hung == [9001]
    assert [c.ended for c in stuck] == [1, 1] and moving.ended == 0


async def test_a_silent_child_that_answers_health_is_not_hung() -> None:
    watch, router, probed = _rig([True, True, True])
    conn = FakeExchange(StaticLease(9001, "m"))
    watch.ctx.connections.add(conn)  # type: ignore[arg-type]
    now = asyncio.get_running_loop().time()
    await _sweep(watch, now)
    for step in range(1, 4):
        if 9001 in watch._ports:
            watch._ports[9001].next_probe_at = 0.0  # the probe interval has passed
        await _sweep(watch, now + 1.0 + step)
    assert len(probed) == 3 and router.hung == [] and conn.ended == 0
    conn.progress += 1  # progress again: the port is forgotten, counting starts over
    await _sweep(watch, now + 10)
    assert 9001 not in watch._ports
