"""Where one request goes, decided from plain facts: ``Forward``, ``Wait`` or ``Reject``.

``decide`` is the dispatch decision of DESIGN.md ("Dispatch decision (pure, from the route
table and slot states)"). It reads no clock and does no I/O: the control plane gathers the
facts (the slot's state, its route after any port probe, the slot's cold-start policy, the
time), calls it, and carries the answer out: ``Forward`` becomes a lease on the port,
``Wait`` a bounded wait for the single-flight load, ``Reject`` an error envelope.

The rules, in words:

* a request that names no model and matches no default slot: 400 ``request.missing_model``;
* a name that is no slot and no lemond model: 404 ``dispatch.no_route`` — unless lemond is
  down, when only lemond could tell: 503 ``lemond.unavailable`` with ``Retry-After``;
* a route that is alive and proven, on a slot that is not being unloaded: ``Forward``,
  whatever state the slot shows (lemond may serve a model the proxy still thinks is
  loading; an ``error`` slot whose model answers is served);
* anything else needs a load (the control plane starts at most one per model): ``Wait``
  until the request's deadline (arrival + ``max_wait_s``) under ``cold_start = "wait"``,
  else ``Reject`` 503 ``slot.loading`` with the estimated ``Retry-After`` — the load is
  still started, so the client's retry finds the model loading or ready.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from hal0proxy.slots.state import SlotState

__all__ = [
    "ColdStart",
    "Decision",
    "DispatchPolicy",
    "DispatchSlot",
    "Forward",
    "Reject",
    "RouteFacts",
    "Unresolved",
    "Wait",
    "decide",
    "refuse_unresolved",
]


class ColdStart(enum.StrEnum):
    """What a request for a model that is not ready does (``cold_start`` in the config)."""

    #: Wait for the load, up to ``max_wait_s``.
    WAIT = "wait"
    #: Answer 503 ``slot.loading`` at once (the load still starts).
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    cold_start: ColdStart = ColdStart.WAIT
    max_wait_s: float = 120.0


class DispatchSlot(NamedTuple):
    """The facts about the resolved slot that the decision reads.

    A named tuple, like ``Forward``: both are built once per request on the hot path, where a
    tuple costs a fraction of a frozen dataclass."""

    name: str
    model: str
    state: SlotState
    in_flight: int = 0
    #: lemond keeps a pinned model resident by itself: no need to hold it while serving.
    pinned: bool = False
    #: ``Retry-After`` seconds if the request has to be turned away while the model loads.
    retry_after_s: int = 1


@dataclass(frozen=True, slots=True)
class Unresolved:
    """The request's model did not resolve to a slot; why decides the answer."""

    name: str | None  # None: the request named no model and no default slot applied
    lemond_reachable: bool = True
    lemond_retry_after_s: int = 1


class RouteFacts(Protocol):
    """What the decision reads of a route (``lemond.routes.Route`` has these)."""

    @property
    def port(self) -> int: ...

    @property
    def alive(self) -> bool: ...

    @property
    def proven(self) -> bool: ...


class Forward(NamedTuple):
    port: int
    #: First request in flight on a slot lemond does not keep by itself: ask lemond to
    #: keep the model while it serves (its LRU cannot see the proxy's requests).
    hold_in_lemond: bool


@dataclass(frozen=True, slots=True)
class Wait:
    """Make sure the model is loading, then decide again when the load ends or at ``deadline``."""

    deadline: float


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    code: str
    message: str
    retry_after_s: int | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    #: Start the model's load anyway, so the client's retry finds it loading or ready.
    start_load: bool = False


Decision = Forward | Wait | Reject


def decide(
    slot: DispatchSlot | Unresolved,
    route: RouteFacts | None,
    policy: DispatchPolicy,
    now: float,
    arrived: float | None = None,
) -> Decision:
    """The dispatch decision for one request at time ``now`` (it arrived at ``arrived``,
    default ``now``; its wait ends ``policy.max_wait_s`` after that)."""
    if isinstance(slot, Unresolved):
        return refuse_unresolved(slot)
    if route is not None and route.alive and route.proven and slot.state is not SlotState.UNLOADING:
        return Forward(route.port, hold_in_lemond=slot.in_flight == 0 and not slot.pinned)
    deadline = (now if arrived is None else arrived) + policy.max_wait_s
    if policy.cold_start is ColdStart.REJECT or now >= deadline:
        return _loading(slot)
    return Wait(deadline)


def _loading(slot: DispatchSlot) -> Reject:
    # This very answer starts an offline slot's load, so the client is told what it will find.
    state = str(SlotState.STARTING if slot.state is SlotState.OFFLINE else slot.state)
    return Reject(
        503,
        "slot.loading",
        f"slot {slot.name!r} is {state}, not ready to serve yet",
        slot.retry_after_s,
        {
            "slot": slot.name,
            "state": state,
            "retry_after_s": slot.retry_after_s,
            "progress": {"phase": state, "requested_model": slot.model},
        },
        start_load=True,
    )


def refuse_unresolved(slot: Unresolved) -> Reject:
    """The answer to a request whose model resolved to no slot (``decide`` on an ``Unresolved``)."""
    if slot.name is None:
        return Reject(400, "request.missing_model", "request has no 'model' and no default slot applies")
    if not slot.lemond_reachable:
        return Reject(
            503,
            "lemond.unavailable",
            f"lemond is not reachable: cannot resolve model {slot.name!r} while lemond is down",
            slot.lemond_retry_after_s,
        )
    return Reject(404, "dispatch.no_route", f"no slot or lemond model named {slot.name!r}", None, {"model": slot.name})
