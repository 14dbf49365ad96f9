"""Typed events: the contract between the lemond adapter and everything above it.

Every event carries the lemond log ``seq`` it was derived from (0 when it came from a
``/v1/health`` reconciliation rather than a log line) and the local monotonic time at
which the adapter observed it. Events are frozen so they can be shared between
subscribers without copying.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EvictReason(enum.StrEnum):
    LRU = "lru"  # lemond's count-based LRU made room for another load
    IDLE = "idle"  # lemond's eviction engine (auto_evict) or the proxy's idle policy
    NUCLEAR = "nuclear"  # evict-all after a non-file-not-found load failure
    MANUAL = "manual"  # explicit /v1/unload
    PRESSURE = "pressure"  # VRAM pressure or device exclusivity
    UNKNOWN = "unknown"  # vanished from /v1/health without a log line explaining why


@dataclass(frozen=True, slots=True, kw_only=True)
class LemondEvent:
    seq: int = 0
    observed_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadStarted(LemondEvent):
    model: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLoaded(LemondEvent):
    model: str
    port: int
    pid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEvicted(LemondEvent):
    model: str
    reason: EvictReason = EvictReason.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessCrashed(LemondEvent):
    model: str | None
    pid: int | None
    exit_code: int | None = None
    # "exit" when lemond reported it; "refused", "closed" or "hang" when the proxy found the
    # child dead on its own traffic while lemond still listed it (see LemondAdapter.mark_dead).
    cause: str = "exit"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadFailed(LemondEvent):
    model: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PortChanged(LemondEvent):
    model: str
    old_port: int
    new_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LemondRestarted(LemondEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModel:
    """One entry of ``/v1/health`` ``all_models_loaded``, reduced to what routing needs."""

    model: str
    port: int
    pid: int | None = None
    type: str = "llm"
    backend_url: str = ""
    recipe: str = ""
    checkpoint: str = ""
    pinned: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Resynced(LemondEvent):
    """A full ``/v1/health`` reconciliation: ``loaded`` is authoritative."""

    loaded: tuple[LoadedModel, ...] = ()
    max_models: dict[str, int] = field(default_factory=dict)


AnyEvent = (
    LoadStarted | ModelLoaded | ModelEvicted | ProcessCrashed | LoadFailed | PortChanged | LemondRestarted | Resynced
)
