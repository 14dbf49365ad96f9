"""Inputs of the slot reducer (``derive.reduce``).

``slots/`` imports nothing but the standard library, so lemond's events are not used here
directly; the control plane maps them one to one:

==========================  =========================================
lemond event                signal
==========================  =========================================
``LoadStarted``             ``LoadBegan()``
``ModelLoaded``             ``ChildUp(port, pid)``
``PortChanged``             ``ChildUp(new_port, pid)``
``ModelEvicted``            ``ChildGone(reason, crashed=False)``
``ProcessCrashed``          ``ChildGone("crash", crashed=True)``
``LoadFailed``              ``LoadError(reason)``
``Resynced``                ``Resync(present, port, pid)`` per slot
==========================  =========================================

The rest come from the proxy itself: its own load/unload decisions, requests entering and
leaving a slot, and a periodic tick for the idle timer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ChildGone",
    "ChildUp",
    "IdleTick",
    "LoadBegan",
    "LoadError",
    "LoadRequested",
    "PullBegan",
    "RequestFinished",
    "RequestStarted",
    "Resync",
    "Signal",
    "UnloadRequested",
]


@dataclass(frozen=True, slots=True)
class PullBegan:
    """The proxy started downloading the slot's model."""


@dataclass(frozen=True, slots=True)
class LoadRequested:
    """The proxy asked lemond to load the slot's model (``POST /v1/load`` sent)."""


@dataclass(frozen=True, slots=True)
class LoadBegan:
    """lemond started spawning the model's child (``LoadStarted``)."""


@dataclass(frozen=True, slots=True)
class ChildUp:
    """The model's child serves on ``port`` (``ModelLoaded``/``PortChanged``)."""

    port: int
    pid: int | None = None


@dataclass(frozen=True, slots=True)
class ChildGone:
    """The model's child is gone: evicted (``reason`` is the eviction reason) or crashed."""

    reason: str = "unknown"
    crashed: bool = False


@dataclass(frozen=True, slots=True)
class LoadError:
    """A load of the model really failed (``LoadFailed``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class UnloadRequested:
    """The proxy decided to unload the slot (idle policy, making room, admin)."""


@dataclass(frozen=True, slots=True)
class RequestStarted:
    """A request was dispatched to the slot."""


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """A request dispatched to the slot ended (success, error or client disconnect)."""


@dataclass(frozen=True, slots=True)
class IdleTick:
    """Periodic check of the idle timer; ``idle_timeout_s`` 0 means never idle."""

    idle_timeout_s: float


@dataclass(frozen=True, slots=True)
class Resync:
    """``/v1/health`` says whether lemond has the model loaded, and where."""

    present: bool
    port: int | None = None
    pid: int | None = None


Signal = (
    PullBegan
    | LoadRequested
    | LoadBegan
    | ChildUp
    | ChildGone
    | LoadError
    | UnloadRequested
    | RequestStarted
    | RequestFinished
    | IdleTick
    | Resync
)
