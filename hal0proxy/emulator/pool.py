"""Pure decisions of lemond's router: which model to evict, which port a child gets.

No I/O here: the caller passes in what it observed (residents, a port probe) and acts on the
answer, so these rules can be tested without sockets or processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["AllPinnedError", "Resident", "choose_port", "lru_victim", "pool_name"]

#: lemond scans 8001, 8002, ... up to 9000 (process_linux.cpp:653-674): a span of 1000 ports.
PORT_SPAN = 1000


class AllPinnedError(Exception):
    """Every live model of the pool is pinned: lemond answers 409 ``slots_pinned_error``."""

    def __init__(self, pool: str) -> None:
        super().__init__(pool)
        self.pool = pool


@dataclass(frozen=True, slots=True)
class Resident:
    name: str
    type: str
    last_use: float
    pinned: bool
    alive: bool


def pool_name(model_type: str) -> str:
    return f"standard/{model_type}"


def lru_victim(residents: Iterable[Resident], model_type: str, max_loaded: int) -> str | None:
    """The one model to evict before loading a model of ``model_type``, or None if there is room.

    Mirrors ``ensure_residency_capacity`` (router.cpp:286-304): only live members of the same
    pool count; the limit applies per type; -1 is unlimited; exactly one victim per load, even
    when the pool is over-full after the limit was lowered.
    """
    if max_loaded < 0:
        return None
    members = [r for r in residents if r.alive and r.type == model_type]
    if len(members) < max_loaded:
        return None
    candidates = [r for r in members if not r.pinned]
    if not candidates:
        raise AllPinnedError(pool_name(model_type))
    return min(candidates, key=lambda r: r.last_use).name


def choose_port(
    base: int,
    is_free: Callable[[int], bool],
    *,
    exclude: Iterable[int] = (),
    span: int = PORT_SPAN,
) -> int:
    """The lowest port >= ``base`` that ``is_free`` accepts and is not excluded.

    ``exclude`` lets a forced respawn land on a different port than the one it leaves, which
    lemond's scan would otherwise hand straight back.
    """
    skipped = set(exclude)
    for port in range(base, min(base + span, 65536)):
        if port in skipped:
            continue
        if is_free(port):
            return port
    raise OSError(f"no free port in {base}..{base + span - 1}")
