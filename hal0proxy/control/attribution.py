"""Whose doing an eviction was: the proxy's own unload, or lemond's decision.

lemond logs an eviction line for every child that goes away, whoever asked. The proxy's own
unloads (room-making, idle policy, admin, clearing a dead child) are counted as ``proxy``
evictions when they are issued; the line lemond logs afterwards (often after ``/v1/unload``
has returned, several seconds later on a busy child) must then not count a second time as
lemond's. ``UnloadLedger`` remembers when the proxy asked; ``eviction_source`` is the pure
decision of what an event counts as.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal0proxy.lemond.events import LemondEvent, ModelEvicted, ProcessCrashed

__all__ = ["PROXY_UNLOAD_ATTRIBUTION_S", "Eviction", "UnloadLedger", "eviction_source"]

#: An eviction line for a model the proxy asked to unload less than this long ago is the
#: proxy's own doing: lemond logs it after ``/v1/unload`` returned, several seconds later on
#: a busy child (it waits 5 s after SIGTERM), so the window is generous.
PROXY_UNLOAD_ATTRIBUTION_S = 60.0


class UnloadLedger:
    """model -> when the proxy last asked lemond to unload it (until lemond's line arrives)."""

    __slots__ = ("_asked",)

    def __init__(self) -> None:
        self._asked: dict[str, float] = {}

    def asked(self, model: str, now: float) -> None:
        """The proxy is about to send ``/v1/unload`` for ``model``."""
        self._asked[model] = now

    def withdrawn(self, model: str) -> None:
        """The unload did nothing (lemond had no such model): no eviction line will follow."""
        self._asked.pop(model, None)

    def claim(self, model: str, now: float) -> bool:
        """An eviction of ``model`` was observed: True if it was the proxy's recent unload
        (the entry is used up, so a later eviction of the same model is lemond's again)."""
        asked_at = self._asked.pop(model, None)
        return asked_at is not None and now - asked_at <= PROXY_UNLOAD_ATTRIBUTION_S

    def __contains__(self, model: object) -> bool:
        return model in self._asked


@dataclass(frozen=True, slots=True)
class Eviction:
    """One eviction to count: why (``lru``, ``idle``, ``crash``, ``hang``, ...) and by whom."""

    reason: str
    by: str  # "proxy" or "lemond"


def eviction_source(event: LemondEvent, ledger: UnloadLedger, now: float) -> Eviction | None:
    """What ``event`` counts as in the eviction metric, or None when it is not one to count.

    An eviction the proxy asked for was already counted when it was issued; a crash lemond
    saw itself (``exit``) is lemond's; a child the proxy's own traffic found dead while
    lemond still listed it (``refused``, ``closed``, ``hang``) is the proxy's finding."""
    if isinstance(event, ModelEvicted):
        if ledger.claim(event.model, now):
            return None
        return Eviction(str(event.reason), "lemond")
    if isinstance(event, ProcessCrashed):
        if event.cause == "exit":
            return Eviction("crash", "lemond")
        return Eviction("hang" if event.cause == "hang" else "crash", "proxy")
    return None
