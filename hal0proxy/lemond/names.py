"""One name per model: lemond's internal (canonical) names mapped to the public ones.

lemond keys models by a canonical name: ``extra.<name>`` for models discovered in
``extra_models_dir``, ``user.<name>`` for registered or pulled ones, ``builtin.<name>`` for
its own registry; clients, ``/v1/models`` and ``/v1/health`` use the public alias, normally
the bare name (model_manager.cpp, ``rebuild_public_model_aliases_locked``). Log lines print
the canonical name, so without this mapping one child would appear as two models.

Rule: a name lemond has shown publicly stays as it is; otherwise a prefixed name whose bare
form is public maps to the bare form; ``extra.`` is always dropped (discovered models are
public under their bare name unless it collides, and then lemond lists the prefixed one).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["INTERNAL_PREFIXES", "ModelNames"]

INTERNAL_PREFIXES = ("extra.", "user.", "builtin.")


class ModelNames:
    def __init__(self) -> None:
        self.public: set[str] = set()

    def learn(self, names: Iterable[str]) -> None:
        """Names lemond (or the configuration) uses publicly."""
        self.public.update(names)

    def to_public(self, name: str) -> str:
        if name in self.public:
            return name
        for prefix in INTERNAL_PREFIXES:
            if name.startswith(prefix):
                bare = name[len(prefix) :]
                if bare and (bare in self.public or prefix == "extra."):
                    return bare
        return name
