"""Which slot a request names, and the models lemond knows beyond the configured slots.

A request names a slot (``primary``), a model a slot serves, a model lemond has loaded or
can load (adopted: it gets a slot of its own), or nothing (its path's default slot). Names
the proxy does not know refresh lemond's ``/v1/models``, rate limited. The same list
answers the proxy's own ``GET /v1/models``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hal0proxy.control.registry import Slot, SlotRegistry
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError
from hal0proxy.routing.classify import Classified
from hal0proxy.slots.dispatch import Unresolved

__all__ = ["MODELS_REFRESH_MIN_S", "Catalog"]

#: A name the proxy does not know refreshes lemond's ``/v1/models`` at most this often, so a
#: client repeating an unknown name does not cost lemond a request per request.
MODELS_REFRESH_MIN_S = 5.0


class Catalog:
    """Name resolution over the slot registry and lemond's model list.

    ``lemond_retry_after()`` gives the ``Retry-After`` for a name that cannot be resolved
    because lemond is down (only lemond could say whether it knows the model)."""

    def __init__(
        self,
        adapter: LemondAdapter,
        registry: SlotRegistry,
        clock: Callable[[], float],
        lemond_retry_after: Callable[[], int],
    ) -> None:
        self._adapter = adapter
        self._registry = registry
        self._clock = clock
        self._lemond_retry_after = lemond_retry_after
        self._models_fetched = 0.0

    def lookup(self, request: Classified) -> Slot | None:
        """The slot a request names (or its path's default slot), among the known ones."""
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if self._registry.get(s)), None)
            if name is None:
                return None
        slot = self._registry.get(name)
        if slot is None:
            slots = self._registry.for_model(name)
            return slots[0] if slots else None
        return slot

    async def resolve(self, request: Classified) -> Slot | Unresolved:
        """The request's slot, adopting a model lemond has loaded or can load, else why not."""
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if self._registry.get(s)), None)
            if name is None:
                return Unresolved(None)

        if self._registry.get(name) is None:
            name = self._adapter.names.to_public(name)  # extra.<m> and friends: one model, one slot

        def loaded(model: str) -> bool:
            route = self._adapter.routes.get(model)
            return route is not None and route.alive

        slot = self._registry.resolve(name, loaded)
        if slot is None and await self.refresh():
            slot = self._registry.resolve(name, loaded)
        if slot is None:
            # While lemond is down only lemond could say whether it knows this model.
            return Unresolved(name, self._adapter.reachable, self._lemond_retry_after())
        return slot

    async def refresh(self, force: bool = False) -> bool:
        """Refresh lemond's model list (rate limited); True if it was refreshed."""
        now = self._clock()
        if not force and now - self._models_fetched < MODELS_REFRESH_MIN_S:
            return False
        self._models_fetched = now
        try:
            models = await self._adapter.client.models()
        except LemondError:
            return False
        self._registry.known_models = {m["id"]: m for m in models if isinstance(m, dict) and "id" in m}
        self._adapter.names.learn(self._registry.known_models)
        return True

    def models_payload(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        seen: set[str] = set()
        for slot in self._registry.all():
            if slot.name in seen:
                continue
            seen.add(slot.name)
            data.append(
                {
                    "id": slot.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "hal0proxy",
                    "model": slot.model,
                    "state": str(slot.status.state),
                }
            )
        for name, entry in self._registry.known_models.items():
            if name not in seen:
                seen.add(name)
                data.append({"id": name, "object": "model", "created": entry.get("created", 0), "owned_by": "lemonade"})
        return {"object": "list", "data": data}
