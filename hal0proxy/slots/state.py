"""Slot lifecycle: the nine states and the one table of legal transitions.

Rule: every slot state change in the code base goes through :func:`apply_transition`.

``LEGAL_TRANSITIONS`` is hal0's table as the code has it (``reference/hal0.md`` §A.1; the
published docs differ, the code wins). It describes the transitions the proxy *drives*.
lemond, however, can take a model away behind the proxy's back (LRU eviction, a crash,
an out-of-band ``/v1/unload``) or fail a load the proxy never saw start. Those jumps are
not in the table and are not allowed silently either: they are listed, each with its
cause, in ``FORCED_TRANSITIONS`` and only accepted when the caller passes ``forced=True``.
Anything else raises :class:`IllegalTransition`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "DISPATCHABLE",
    "FORCED_TRANSITIONS",
    "LEGAL_TRANSITIONS",
    "IllegalTransition",
    "SlotState",
    "apply_transition",
    "is_dispatchable",
    "is_transition_legal",
]


class SlotState(enum.StrEnum):
    #: Nothing loaded; the next request (or a warm-load) loads it.
    OFFLINE = "offline"
    #: Model files are being downloaded.
    PULLING = "pulling"
    #: A load was asked for; no child process yet.
    STARTING = "starting"
    #: The child process is spawning and loading weights.
    WARMING = "warming"
    #: Loaded and routable, nothing in flight.
    READY = "ready"
    #: Loaded, at least one request in flight.
    SERVING = "serving"
    #: Loaded but quiet past the slot's idle timeout (an idle-unload candidate).
    IDLE = "idle"
    #: An unload is in progress.
    UNLOADING = "unloading"
    #: A load really failed (not an eviction: that is ``offline``).
    ERROR = "error"


_S = SlotState

LEGAL_TRANSITIONS: Mapping[SlotState, frozenset[SlotState]] = {
    _S.OFFLINE: frozenset({_S.PULLING, _S.STARTING}),
    _S.PULLING: frozenset({_S.STARTING, _S.ERROR, _S.OFFLINE}),
    _S.STARTING: frozenset({_S.WARMING, _S.ERROR, _S.OFFLINE}),
    _S.WARMING: frozenset({_S.READY, _S.IDLE, _S.ERROR, _S.OFFLINE}),
    _S.READY: frozenset({_S.SERVING, _S.IDLE, _S.UNLOADING, _S.ERROR}),
    _S.SERVING: frozenset({_S.READY, _S.IDLE, _S.ERROR}),
    _S.IDLE: frozenset({_S.SERVING, _S.UNLOADING, _S.READY}),
    _S.UNLOADING: frozenset({_S.OFFLINE, _S.ERROR}),
    _S.ERROR: frozenset({_S.OFFLINE, _S.PULLING, _S.STARTING}),
}

FORCED_TRANSITIONS: Mapping[SlotState, frozenset[SlotState]] = {
    # lemond evicted the model (LRU, idle engine, nuclear evict-all, an unload the proxy
    # did not issue) or its child crashed: the route is gone whatever the proxy thought.
    _S.READY: frozenset({_S.OFFLINE}),
    _S.SERVING: frozenset({_S.OFFLINE, _S.UNLOADING}),  # UNLOADING: explicit admin unload
    _S.IDLE: frozenset({_S.OFFLINE, _S.ERROR}),
    # A load the proxy did not start (lemond auto-load, another client) failed.
    _S.OFFLINE: frozenset({_S.ERROR}),
}

#: States a request may be forwarded in. ``idle`` here always means "loaded but quiet":
#: the proxy never derives the hal0 "process up, no model" flavour of idle.
DISPATCHABLE: frozenset[SlotState] = frozenset({_S.READY, _S.SERVING, _S.IDLE})


class IllegalTransition(Exception):
    """A state change the transition tables do not allow."""

    def __init__(self, current: SlotState, target: SlotState, *, forced: bool = False) -> None:
        kind = "forced transition" if forced else "transition"
        super().__init__(f"illegal slot {kind} {current.value} -> {target.value}")
        self.current = current
        self.target = target
        self.forced = forced


def is_transition_legal(current: SlotState, target: SlotState, *, forced: bool = False) -> bool:
    """Whether ``current -> target`` is allowed (same state always is)."""
    if current is target or target in LEGAL_TRANSITIONS[current]:
        return True
    return forced and target in FORCED_TRANSITIONS.get(current, frozenset())


def apply_transition(current: SlotState, target: SlotState, *, forced: bool = False) -> SlotState:
    """Return ``target`` if the move is allowed, else raise :class:`IllegalTransition`.

    A same-state transition is a no-op. ``forced=True`` additionally admits the moves in
    ``FORCED_TRANSITIONS`` (and nothing else): use it only where lemond's own events make
    the jump a fact rather than a decision.
    """
    if not is_transition_legal(current, target, forced=forced):
        raise IllegalTransition(current, target, forced=forced)
    return target


def is_dispatchable(state: SlotState) -> bool:
    """Whether a request may be forwarded to a slot in ``state`` right now."""
    return state in DISPATCHABLE
