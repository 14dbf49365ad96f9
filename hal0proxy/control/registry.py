"""Slots the proxy knows about and their derived status (no I/O).

A slot is either configured (``[[slot]]`` in the config), adopted (lemond has the model
loaded but no slot names it) or on-demand (lemond can load the model; a request named it).
Every status change goes through ``slots.derive.reduce``; this module only routes signals
to the right slots and reports the changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hal0proxy.config import SlotConfig
from hal0proxy.lemond.events import (
    LemondEvent,
    LemondRestarted,
    LoadFailed,
    LoadStarted,
    ModelEvicted,
    ModelLoaded,
    PortChanged,
    ProcessCrashed,
    Resynced,
)
from hal0proxy.slots.derive import SlotStatus, reduce
from hal0proxy.slots.signals import ChildGone, ChildUp, LoadBegan, LoadError, Resync, Signal
from hal0proxy.slots.state import SlotState

_LABEL_TYPES = (
    ("embeddings", "embedding"),
    ("embedding", "embedding"),
    ("reranking", "reranking"),
    ("transcription", "transcription"),
    ("tts", "tts"),
    ("image", "image"),
)


def type_from_labels(labels: Iterable[str]) -> str:
    labels = set(labels)
    for label, mtype in _LABEL_TYPES:
        if label in labels:
            return mtype
    return "llm"


@dataclass(slots=True)
class PolicyDefaults:
    """The ``[policy]`` values a slot that no ``[[slot]]`` names falls back on. The registry's
    slots share one instance, so a configuration reload reaches every one of them."""

    idle_timeout_s: float = 0.0


@dataclass(slots=True)
class Slot:
    name: str
    model: str
    type: str
    config: SlotConfig | None = None
    adopted: bool = False
    status: SlotStatus = field(default_factory=SlotStatus)
    last_used_wall: float | None = None  # epoch seconds, for the admin API
    defaults: PolicyDefaults = field(default_factory=PolicyDefaults)

    @property
    def idle_timeout_s(self) -> float:
        return self.config.idle_timeout_s if self.config else self.defaults.idle_timeout_s

    @property
    def pinned(self) -> bool:
        """Configured ``pinned = true``: lemond keeps it resident by itself, and the proxy never
        unloads it for idleness or to make room."""
        return bool(self.config and self.config.pinned)


StateListener = Callable[[Slot, SlotState], None]


class SlotRegistry:
    def __init__(
        self,
        configured: Iterable[SlotConfig],
        on_change: StateListener | None = None,
        defaults: PolicyDefaults | None = None,
    ) -> None:
        self.defaults = PolicyDefaults() if defaults is None else defaults
        self._slots: dict[str, Slot] = {}
        self._by_model: dict[str, list[Slot]] = {}
        self._on_change = on_change
        self.model_types: dict[str, str] = {}  # lemond model name -> lemond type (pool)
        self.known_models: dict[str, dict[str, Any]] = {}  # lemond's /v1/models entries
        self._last_event_at: dict[str, float] = {}  # model -> observed_at of its newest log event
        for cfg in configured:
            self._add(Slot(name=cfg.name, model=cfg.model, type=cfg.type, config=cfg))
            self.model_types[cfg.model] = cfg.type

    # -- lookup ---------------------------------------------------------------------------
    def get(self, name: str) -> Slot | None:
        return self._slots.get(name)

    def all(self) -> list[Slot]:
        return list(self._slots.values())

    def for_model(self, model: str) -> list[Slot]:
        return self._by_model.get(model, [])

    def resolve(self, name: str, loaded: Callable[[str], bool]) -> Slot | None:
        """Slot name first, then a configured slot's model, then an adoptable/loadable model."""
        slot = self._slots.get(name)
        if slot is not None:
            return slot
        slots = self._by_model.get(name)
        if slots:
            return slots[0]
        if loaded(name) or name in self.known_models:
            return self._add(Slot(name=name, model=name, type=self.type_of(name), adopted=loaded(name)))
        return None

    def type_of(self, model: str) -> str:
        mtype = self.model_types.get(model)
        if mtype is None:
            entry = self.known_models.get(model)
            mtype = type_from_labels(entry.get("labels", ())) if entry else "llm"
        return mtype

    def in_flight(self, model: str) -> int:
        return sum(s.status.in_flight for s in self._by_model.get(model, ()))

    def last_used(self, model: str) -> float:
        return max((s.status.quiet_since() for s in self._by_model.get(model, ())), default=0.0)

    # -- signals --------------------------------------------------------------------------
    def signal(self, slot: Slot, sig: Signal, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        before = slot.status.state
        slot.status = reduce(slot.status, sig, now)
        if slot.status.state is not before and self._on_change is not None:
            self._on_change(slot, before)

    def signal_model(self, model: str, sig: Signal, now: float | None = None) -> None:
        for slot in self._by_model.get(model, ()):
            self.signal(slot, sig, now)

    def apply_event(self, event: LemondEvent) -> None:
        """Map one lemond event onto the slots it concerns (see ``slots.signals``)."""
        now = event.observed_at or time.monotonic()
        model = getattr(event, "model", None)
        if isinstance(model, str):
            self._last_event_at[model] = now
        if isinstance(event, ModelLoaded):
            self._ensure_adopted(event.model)
            self.signal_model(event.model, ChildUp(event.port, event.pid), now)
        elif isinstance(event, PortChanged):
            # Published right after the ModelLoaded of the child on ``new_port``, and it names
            # no PID: a slot already on that port keeps the PID ModelLoaded gave it.
            for slot in self.for_model(event.model):
                pid = slot.status.pid if slot.status.port == event.new_port else None
                self.signal(slot, ChildUp(event.new_port, pid), now)
        elif isinstance(event, LoadStarted):
            self.signal_model(event.model, LoadBegan(), now)
        elif isinstance(event, ModelEvicted):
            self.signal_model(event.model, ChildGone(str(event.reason), crashed=False), now)
        elif isinstance(event, ProcessCrashed):
            if event.model is not None:
                self.signal_model(event.model, ChildGone("crash", crashed=True), now)
        elif isinstance(event, LoadFailed):
            if event.model is not None:
                self.signal_model(event.model, LoadError(event.reason), now)
        elif isinstance(event, LemondRestarted):
            for slot in self.all():
                self.signal(slot, ChildGone("restart", crashed=False), now)
        elif isinstance(event, Resynced):
            self._resync(event, now)

    def _resync(self, event: Resynced, now: float) -> None:
        present = {entry.model: entry for entry in event.loaded}
        for entry in event.loaded:
            self.model_types[entry.model] = entry.type
            self._ensure_adopted(entry.model)
        for slot in self.all():
            if self._last_event_at.get(slot.model, float("-inf")) > now:
                # The log told us about this model after the health request was sent:
                # the snapshot is older than what we know, so it must not undo it.
                continue
            found = present.get(slot.model)
            if found is not None:
                self.signal(slot, Resync(True, found.port, found.pid), now)
            else:
                self.signal(slot, Resync(False), now)

    def _ensure_adopted(self, model: str) -> None:
        if model not in self._by_model:
            self._add(Slot(name=model, model=model, type=self.type_of(model), adopted=True))

    def _add(self, slot: Slot) -> Slot:
        slot.defaults = self.defaults
        slot.status = slot.status._replace(model=slot.model)
        self._slots[slot.name] = slot
        self._by_model.setdefault(slot.model, []).append(slot)
        return slot
