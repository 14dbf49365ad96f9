"""Pure policy decisions, returned as actions for the control coroutine to execute.

The proxy owns eviction (DESIGN.md "The proxy owns eviction"): lemond cannot see the
proxy's in-flight requests because the data plane goes straight to the children, so the
proxy picks every victim itself and never one that is serving. Nothing here performs
I/O or reads a clock; ``now`` is always passed in.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hal0proxy.slots.derive import SlotStatus
from hal0proxy.slots.state import SlotState

__all__ = [
    "DEFAULT_LOAD_S",
    "MAX_RETRY_AFTER_S",
    "LoadTimes",
    "SlotView",
    "UnloadAction",
    "WaitAction",
    "choose_room_victim",
    "idle_unload_candidates",
    "retry_after_s",
]

#: Expected load time before a model has been measured once (a small GGUF on a GPU).
DEFAULT_LOAD_S = 5.0
#: lemond's own ``global_timeout`` (600 s) bounds any load; never tell a client to wait longer.
MAX_RETRY_AFTER_S = 600

S = SlotState
# States whose model counts against lemond's per-type ``max_loaded_models``: it is resident,
# being spawned, or still being torn down.
_OCCUPYING = frozenset({S.STARTING, S.WARMING, S.READY, S.SERVING, S.IDLE, S.UNLOADING})
# States the proxy may unload from without cutting a request off.
_UNLOADABLE = frozenset({S.READY, S.IDLE})


@dataclass(frozen=True, slots=True)
class SlotView:
    """A slot as the policy sees it: its derived status plus its configuration."""

    name: str
    status: SlotStatus
    model_type: str = "llm"
    #: Unload after this long without a request; 0 means never.
    idle_timeout_s: float = 0.0
    #: Never chosen to make room (the operator wants it resident).
    pinned: bool = False

    @property
    def model(self) -> str | None:
        return self.status.model


@dataclass(frozen=True, slots=True)
class UnloadAction:
    """Unload ``slot`` (whose model is ``model``) for ``reason`` (``idle`` or ``room``)."""

    slot: str
    model: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class WaitAction:
    """No victim can be unloaded now; retry when one of ``busy`` goes quiet."""

    busy: tuple[str, ...]
    reason: str = "all candidates are busy"


def _quiet_unloadable(view: SlotView) -> bool:
    return view.status.state in _UNLOADABLE and view.status.in_flight == 0


def idle_unload_candidates(slots: Iterable[SlotView], now: float) -> list[UnloadAction]:
    """Slots quiet for at least their ``idle_timeout_s`` with nothing in flight.

    Longest-quiet first. A timeout of 0 disables the policy for that slot.
    """
    due: list[tuple[float, str, UnloadAction]] = []
    for view in slots:
        if view.idle_timeout_s <= 0 or view.pinned or not _quiet_unloadable(view):
            continue
        since = view.status.quiet_since()
        if now - since >= view.idle_timeout_s:
            due.append((since, view.name, UnloadAction(view.name, view.model, "idle")))
    due.sort(key=lambda item: (item[0], item[1]))
    return [action for _, _, action in due]


def choose_room_victim(
    slots_of_type: Sequence[SlotView], max_models: int, loading_model: str
) -> UnloadAction | WaitAction | None:
    """Decide what to unload before ``loading_model`` is loaded into a pool of ``max_models``.

    ``slots_of_type`` are the slots of the model type (lemond pool) ``loading_model`` goes
    into. Returns ``None`` when there is room (or the model is already resident, or the pool
    is unlimited: ``max_models`` < 1, lemond's -1), the least recently used quiet slot
    otherwise, and ``WaitAction`` when every occupant is serving, loading or unloading.
    Never picks a slot with requests in flight: lemond would wait for them without bound.
    """
    if max_models < 1:
        return None
    occupants = [v for v in slots_of_type if v.status.state in _OCCUPYING]
    if any(v.model == loading_model for v in occupants):
        return None  # already resident or on its way: no new slot is taken
    if len(occupants) < max_models:
        return None
    candidates = [v for v in occupants if _quiet_unloadable(v) and not v.pinned]
    if not candidates:
        return WaitAction(tuple(sorted(v.name for v in occupants)))
    # Never used sorts first; ties broken by name so the choice is deterministic.
    victim = min(candidates, key=lambda v: (v.status.quiet_since(), v.name))
    return UnloadAction(victim.name, victim.model, "room")


def retry_after_s(
    load_history_s: Sequence[float], started_at: float | None, now: float, default_s: float = DEFAULT_LOAD_S
) -> int:
    """Seconds a client should wait for a model that is loading (``Retry-After``).

    The expected load time is the median of the model's measured loads (``default_s``, the
    ``policy.default_load_s`` setting, before the first); the time already spent on the load
    in progress is subtracted.
    Always at least 1 and at most ``MAX_RETRY_AFTER_S``.
    """
    samples = [s for s in load_history_s if s >= 0 and math.isfinite(s)]
    expected = statistics.median(samples) if samples else default_s
    elapsed = max(0.0, now - started_at) if started_at is not None else 0.0
    remaining = expected - elapsed
    if not math.isfinite(remaining):
        return MAX_RETRY_AFTER_S
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(remaining)))


class LoadTimes:
    """Recent load durations per model, bounded in both dimensions.

    Keeps the last ``per_model`` samples of at most ``max_models`` models (the least
    recently recorded model is forgotten first).
    """

    def __init__(self, per_model: int = 8, max_models: int = 256) -> None:
        if per_model < 1 or max_models < 1:
            raise ValueError("LoadTimes bounds must be >= 1")
        self._per_model = per_model
        self._max_models = max_models
        self._samples: OrderedDict[str, deque[float]] = OrderedDict()

    def record(self, model: str, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            return  # a clock glitch must not poison the estimate
        samples = self._samples.get(model)
        if samples is None:
            samples = self._samples[model] = deque(maxlen=self._per_model)
            while len(self._samples) > self._max_models:
                self._samples.popitem(last=False)
        else:
            self._samples.move_to_end(model)
        samples.append(seconds)

    def history(self, model: str) -> tuple[float, ...]:
        return tuple(self._samples.get(model, ()))

    def retry_after_s(self, model: str, started_at: float | None, now: float, default_s: float = DEFAULT_LOAD_S) -> int:
        return retry_after_s(self.history(model), started_at, now, default_s)

    def __len__(self) -> int:
        return len(self._samples)
