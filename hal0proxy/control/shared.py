"""What every part of the control plane works on, handed to each part as one value.

``Recovery``, ``Room`` and ``Loading`` are separate objects the ``Controller`` owns; they all
act on the same lemond adapter, slot registry and journal, read the same configuration and
the same clock. ``ControlShared`` carries those five so each part's constructor names only
what is its own (the unload ledger, the callbacks into the others).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from hal0proxy.config import Config
from hal0proxy.control.journal import Journal
from hal0proxy.control.registry import SlotRegistry
from hal0proxy.lemond.adapter import LemondAdapter

__all__ = ["ControlShared"]


class ControlShared(NamedTuple):
    adapter: LemondAdapter
    registry: SlotRegistry
    journal: Journal
    #: Called at each use, never kept: a configuration reload replaces the configuration.
    config: Callable[[], Config]
    clock: Callable[[], float]
