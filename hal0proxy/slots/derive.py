"""Slot state as a function of its history: one pure reducer.

``reduce(status, signal, now)`` is the only place a slot's state is decided. A slot's
status is therefore always ``functools.reduce`` over its signals (lemond's events mapped
to signals, plus the proxy's own requests, load/unload decisions and idle ticks), and
never authored from scattered call sites.

Rules, in words:

* load: ``offline|error|pulling → starting`` (proxy asked) ``→ warming`` (lemond
  spawning) ``→ ready`` (child serves). A child coming up is believed from any
  not-loaded state, walking the legal chain, because lemond also loads on its own.
* requests: the first one moves ``ready|idle → serving``; the last one to finish moves
  ``serving → ready``. ``ready`` quiet past the idle timeout becomes ``idle``.
* eviction and crash: ``→ offline`` (routine; the next request reloads). While a load
  is in progress, the loss of the *old* child does not interrupt it.
* failed load: ``→ error``, the only way into ``error``.
* unload: ``ready|idle → unloading → offline``.

Every state change goes through ``state.apply_transition``; the jumps lemond forces on
the proxy (a loaded model vanishing, a load failing that the proxy did not start) pass
``forced=True`` and are limited to ``state.FORCED_TRANSITIONS``.
"""

from __future__ import annotations

from typing import NamedTuple

from hal0proxy.slots import state as _state
from hal0proxy.slots.signals import (
    ChildGone,
    ChildUp,
    IdleTick,
    LoadBegan,
    LoadError,
    LoadRequested,
    PullBegan,
    RequestFinished,
    RequestStarted,
    Resync,
    Signal,
    UnloadRequested,
)
from hal0proxy.slots.state import SlotState

__all__ = ["LOADED", "MSG_CRASHED", "MSG_EVICTED", "MSG_UNLOADED", "SlotStatus", "reduce"]

S = SlotState

MSG_EVICTED = "model evicted from lemond (auto-reloads on next request)"
MSG_CRASHED = "backend process exited (reloads on next request)"
MSG_UNLOADED = "unloaded"
MSG_PULLING = "downloading model files"
MSG_STARTING = "loading"
MSG_WARMING = "starting backend"
MSG_UNLOADING = "unloading"

#: States in which lemond has the model resident.
LOADED: frozenset[SlotState] = frozenset({S.READY, S.SERVING, S.IDLE})
_NOT_LOADED = frozenset({S.OFFLINE, S.ERROR, S.PULLING, S.STARTING, S.WARMING})
_LOADING = frozenset({S.PULLING, S.STARTING, S.WARMING})

# The legal chain from each not-loaded state up to ``ready``.
_UP_PATH: dict[SlotState, tuple[SlotState, ...]] = {
    S.OFFLINE: (S.STARTING, S.WARMING, S.READY),
    S.ERROR: (S.STARTING, S.WARMING, S.READY),
    S.PULLING: (S.STARTING, S.WARMING, S.READY),
    S.STARTING: (S.WARMING, S.READY),
    S.WARMING: (S.READY,),
}


class SlotStatus(NamedTuple):
    """Everything derived about one slot. Immutable; ``reduce`` returns a new one.

    A named tuple, like ``dispatch.DispatchSlot``: every request builds two (one in flight
    more, one fewer), and a tuple costs a fraction of a frozen dataclass to build."""

    state: SlotState = S.OFFLINE
    model: str | None = None
    port: int | None = None
    pid: int | None = None
    message: str = ""
    in_flight: int = 0
    #: When a request last entered or left the slot's current child (the caller's clock); for
    #: a child that went idle without ever serving, when it came up. ``None``: no request yet
    #: since the child came up. The start of its quiet period either way (``quiet_since``).
    last_used: float | None = None
    #: When ``state`` last changed.
    updated_at: float = 0.0
    #: Reason of the last failed load; cleared once the slot is ready again.
    error: str | None = None

    @property
    def dispatchable(self) -> bool:
        return _state.is_dispatchable(self.state)

    def quiet_since(self) -> float:
        """Start of the current quiet period, for idle timers."""
        return self.last_used if self.last_used is not None else self.updated_at


def _counted(status: SlotStatus, in_flight: int, now: float, state: SlotState | None = None) -> SlotStatus:
    """``status`` with a request more or fewer in flight, used at ``now`` (and moved to
    ``state``, already checked by the caller, when that is a change).

    Every request passes here twice, on the data plane's hot path: one direct constructor
    call per signal (``_replace`` goes through ``_make`` and a dict of the changes).
    """
    if state is None or state is status.state:
        state, updated_at = status.state, status.updated_at
    else:
        updated_at = now
    return SlotStatus(
        state,
        status.model,
        status.port,
        status.pid,
        status.message,
        in_flight,
        now,
        updated_at,
        status.error,
    )


def _move(status: SlotStatus, path: tuple[SlotState, ...], now: float, *, forced: bool = False) -> SlotStatus:
    # Walk ``path`` one checked step at a time; only the last step may be a forced one.
    current = status.state
    for i, step in enumerate(path):
        current = _state.apply_transition(current, step, forced=forced and i == len(path) - 1)
    if current is status.state:
        return status
    return status._replace(state=current, updated_at=now)


def _child_up(status: SlotStatus, port: int | None, pid: int | None, now: float) -> SlotStatus:
    if port is None:  # present without an address: keep the one we had
        port, pid = status.port, status.pid
    if status.state not in _NOT_LOADED:
        # Already loaded (port drift or a heartbeat) or being unloaded: only the address moves.
        return status._replace(port=port, pid=pid)
    path = _UP_PATH[status.state]
    if status.in_flight > 0:
        path = (*path, S.SERVING)
    # A new child is a new life: its quiet period starts when it came up, not at the last
    # request the previous child served.
    return _move(status, path, now)._replace(port=port, pid=pid, message="", error=None, last_used=None)


def _child_gone(status: SlotStatus, crashed: bool, now: float) -> SlotStatus:
    if status.state in LOADED:
        message = MSG_CRASHED if crashed else MSG_EVICTED
        return _move(status, (S.OFFLINE,), now, forced=True)._replace(port=None, pid=None, message=message)
    if status.state is S.UNLOADING:
        message = MSG_CRASHED if crashed else MSG_UNLOADED
        return _move(status, (S.OFFLINE,), now)._replace(port=None, pid=None, message=message)
    # Not loaded, or a load in progress: losing an old child changes nothing but the address.
    return status._replace(port=None, pid=None)


def _resync(status: SlotStatus, signal: Resync, now: float) -> SlotStatus:
    if signal.present:
        return _child_up(status, signal.port, signal.pid, now)
    if status.state in LOADED or status.state is S.UNLOADING:
        return _child_gone(status, False, now)
    # Starting/warming models are not in /v1/health yet; offline/error have nothing to drop.
    return status


def reduce(status: SlotStatus, signal: Signal, now: float) -> SlotStatus:
    """Return the slot's status after ``signal`` observed at ``now`` (monotonic seconds).

    Pure: ``status`` is not modified. Raises ``IllegalTransition`` only on a bug, never
    for any signal sequence (a property test checks this).
    """
    st = status.state
    match signal:
        case RequestStarted():
            serving = _state.apply_transition(st, S.SERVING) if st in (S.READY, S.IDLE) else None
            return _counted(status, status.in_flight + 1, now, serving)
        case RequestFinished():
            left = max(0, status.in_flight - 1)
            ready = _state.apply_transition(st, S.READY) if st is S.SERVING and left == 0 else None
            return _counted(status, left, now, ready)
        case IdleTick(idle_timeout_s=timeout):
            quiet = status.in_flight == 0 and now - status.quiet_since() >= timeout
            if st is S.READY and timeout > 0 and quiet:
                idle = _move(status, (S.IDLE,), now)
                # Going idle does not start a new quiet period: a child that never served keeps
                # the time it came up, else its idle unload would wait a second timeout.
                return idle if status.last_used is not None else idle._replace(last_used=status.updated_at)
            return status
        case ChildUp(port=port, pid=pid):
            return _child_up(status, port, pid, now)
        case ChildGone(crashed=crashed):
            return _child_gone(status, crashed, now)
        case LoadBegan():
            if st in (S.OFFLINE, S.ERROR, S.PULLING):
                return _move(status, (S.STARTING, S.WARMING), now)._replace(message=MSG_WARMING)
            if st is S.STARTING:
                return _move(status, (S.WARMING,), now)._replace(message=MSG_WARMING)
            return status
        case LoadRequested():
            if st in (S.OFFLINE, S.ERROR, S.PULLING):
                return _move(status, (S.STARTING,), now)._replace(message=MSG_STARTING)
            return status
        case PullBegan():
            if st in (S.OFFLINE, S.ERROR):
                return _move(status, (S.PULLING,), now)._replace(message=MSG_PULLING)
            return status
        case LoadError(reason=reason):
            forced = st in (S.OFFLINE, S.IDLE)
            failed = _move(status, (S.ERROR,), now, forced=forced)
            return failed._replace(port=None, pid=None, message=reason, error=reason)
        case UnloadRequested():
            if st in (S.READY, S.IDLE, S.SERVING):
                return _move(status, (S.UNLOADING,), now, forced=st is S.SERVING)._replace(message=MSG_UNLOADING)
            return status
        case Resync():
            return _resync(status, signal, now)
    return status
