"""The in-flight pins as a unit: one call per busy period, one call at a time per model (lemond
serialises /internal/pin behind its load lock, so a later unpin must not overtake a pin), the
last wanted state wins, failures are retried on the next busy period."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from hal0proxy.control.pins import InFlightPins
from hal0proxy.lemond.client import LemondClient
from hal0proxy.lemond.errors import LemondAuthError, LemondError


class FakeLemond:
    """Records pin calls; each call waits until released when ``hold`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    async def pin(self, model: str, pinned: bool, *, timeout: float | None = None) -> dict[str, Any]:
        self.calls.append((model, pinned))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail_with is not None:
                raise self.fail_with
            return {"status": "success"}
        finally:
            self.in_flight -= 1


def make(unpin_after_s: float = 0.05) -> tuple[InFlightPins, FakeLemond]:
    fake = FakeLemond()
    return InFlightPins(cast(LemondClient, fake), lambda: True, unpin_after_s=unpin_after_s), fake


async def settle(seconds: float = 0.0) -> None:
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


def test_one_pin_per_busy_period_and_an_unpin_after_the_quiet_delay() -> None:
    async def main() -> None:
        pins, fake = make()
        pins.busy("alpha")
        await settle()
        pins.quiet("alpha")
        pins.busy("alpha")  # back within the delay: still pinned, no call
        await settle()
        pins.quiet("alpha")
        await settle(0.1)
        assert fake.calls == [("alpha", True), ("alpha", False)]
        assert not pins.pinned("alpha")

    asyncio.run(main())


def test_an_unpin_waits_for_the_pin_still_queued_in_lemond() -> None:
    async def main() -> None:
        pins, fake = make(unpin_after_s=0.01)
        fake.hold = asyncio.Event()  # lemond is busy evicting: the pin waits for its lock
        pins.busy("alpha")
        await settle()
        pins.quiet("alpha")
        await settle(0.05)  # the unpin is due, but the pin has not returned
        assert fake.calls == [("alpha", True)]
        fake.hold.set()
        await settle(0.05)
        assert fake.calls == [("alpha", True), ("alpha", False)]
        assert fake.most_in_flight == 1
        await pins.stop()

    asyncio.run(main())


def test_the_last_wanted_state_wins_after_a_slow_call() -> None:
    async def main() -> None:
        pins, fake = make(unpin_after_s=0.01)
        fake.hold = asyncio.Event()
        pins.busy("alpha")
        await settle()
        pins.quiet("alpha")
        await settle(0.05)  # unpin wanted while the pin is in flight
        pins.busy("alpha")  # and pinned again before the pin returned
        fake.hold.set()
        await settle(0.05)
        assert fake.calls == [("alpha", True)]  # nothing to change: lemond holds the pin
        assert pins.pinned("alpha")
        await pins.stop()

    asyncio.run(main())


def test_a_failed_pin_is_retried_on_the_next_busy_period_and_forget_drops_the_pin() -> None:
    async def main() -> None:
        pins, fake = make()
        fake.fail_with = LemondError("Model not loaded: extra.alpha")
        pins.busy("alpha")
        await settle()
        assert not pins.pinned("alpha") and pins.failures == 1
        fake.fail_with = None
        pins.quiet("alpha")
        pins.busy("alpha")
        await settle()
        assert fake.calls == [("alpha", True), ("alpha", True)]
        pins.forget("alpha")  # the child was replaced: its pin went with it
        pins.quiet("alpha")
        await settle(0.1)
        assert fake.calls == [("alpha", True), ("alpha", True)]  # no unpin for a gone child
        pins.busy("alpha")
        await settle()
        assert fake.calls[-1] == ("alpha", True)

    asyncio.run(main())


def test_an_auth_error_switches_pinning_off() -> None:
    async def main() -> None:
        pins, fake = make()
        fake.fail_with = LemondAuthError("401")
        pins.busy("alpha")
        await settle()
        assert not pins.enabled
        pins.quiet("alpha")
        pins.busy("beta")
        await settle(0.1)
        assert fake.calls == [("alpha", True)]

    asyncio.run(main())
