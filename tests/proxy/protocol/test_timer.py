"""The connection's one lazy timer on a mock clock: what is scheduled, what expires, and when."""

from __future__ import annotations

from hal0proxy.proxy.timer import FIRST_BYTE, IDLE, REQUEST, ConnectionTimer
from tests.proxy.protocol.mocks import MockLoop


def _timer() -> tuple[MockLoop, ConnectionTimer, list[int]]:
    loop = MockLoop()
    expired: list[int] = []
    return loop, ConnectionTimer(loop, expired.append), expired  # type: ignore[arg-type]


def test_expires_with_its_kind_at_the_deadline_and_not_before() -> None:
    loop, timer, expired = _timer()
    timer.arm(10.0, REQUEST)
    loop.advance(9.99)
    assert expired == []
    loop.advance(0.02)
    assert expired == [REQUEST] and loop.pending() == 0


def test_a_later_deadline_reuses_the_scheduled_handle() -> None:
    loop, timer, expired = _timer()
    timer.arm(75.0, IDLE)
    loop.advance(10.0)  # a request, answered: the deadline moves twice, later each time
    timer.arm(600.0, FIRST_BYTE)
    timer.arm(75.0, IDLE)
    assert loop.timers_created == 1
    loop.advance(70.0)  # the handle fires at the old deadline and is put off to the new one
    assert expired == [] and loop.timers_created == 2
    loop.advance(5.0)
    assert expired == [IDLE] and loop.pending() == 0


def test_an_earlier_deadline_replaces_the_handle() -> None:
    loop, timer, expired = _timer()
    timer.arm(600.0, FIRST_BYTE)
    timer.arm(30.0, REQUEST)
    assert loop.timers_created == 2 and loop.pending() == 1
    loop.advance(30.0)
    assert expired == [REQUEST]


def test_a_cancelled_expiry_does_nothing_and_drop_leaves_no_handle() -> None:
    loop, timer, expired = _timer()
    timer.arm(5.0, FIRST_BYTE)
    timer.cancel()
    loop.advance(10.0)
    assert expired == [] and loop.pending() == 0
    timer.arm(5.0, IDLE)
    timer.drop()
    assert loop.pending() == 0
    loop.advance(10.0)
    assert expired == []
