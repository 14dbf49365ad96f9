"""What a configuration reload (SIGHUP) may change in a running proxy, decided without I/O.

``plan_reload(running, loaded)`` compares the configuration in force with the one just read
and returns the configuration to run with from now on, the keys that take effect at once and
the keys that changed but only a restart can apply. The restart-only keys keep their running
values in the returned configuration, so nothing half-applies:

- live: every ``[limits]`` key (new client connections take the new header and body limits;
  the others are read per request), ``api_keys``, ``forward_conversation_id``, every
  ``[policy]`` key (the composition root hands the ``hang_*`` ones to the running hang
  watch), and per slot ``idle_timeout_s``, ``cold_start``, ``max_wait_s`` and its
  load options (``ctx_size``, ``llamacpp_backend``, ``llamacpp_args``, ``pinned``: used at
  the slot's next load);
- restart: ``listen``, ``lemond_url``, the admin token, slots added or removed, a slot's
  ``model`` or ``type``, and ``warm`` (warm loads happen at start).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hal0proxy.config import Config, SlotConfig

__all__ = ["ReloadPlan", "plan_reload"]

_RESTART_SLOT_FIELDS = ("model", "type", "warm")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: Config  # what to run with from now on
    applied: tuple[str, ...]  # dotted keys that changed and take effect now
    needs_restart: tuple[str, ...]  # dotted keys that changed but keep their running value


def _changed_fields(old: object, new: object, prefix: str) -> list[str]:
    return [
        f"{prefix}{f.name}"
        for f in dataclasses.fields(old)  # type: ignore[arg-type]
        if getattr(old, f.name) != getattr(new, f.name)
    ]


def plan_reload(running: Config, loaded: Config) -> ReloadPlan:
    applied: list[str] = []
    restart: list[str] = []
    for key in ("listen", "lemond_url"):
        if getattr(running, key) != getattr(loaded, key):
            restart.append(key)
    if running.admin_token != loaded.admin_token:
        restart.append("admin_token")
    for key in ("api_keys", "forward_conversation_id"):
        if getattr(running, key) != getattr(loaded, key):
            applied.append(key)
    applied += _changed_fields(running.limits, loaded.limits, "limits.")
    applied += _changed_fields(running.policy, loaded.policy, "policy.")

    new_by_name = {s.name: s for s in loaded.slots}
    old_names = {s.name for s in running.slots}
    slots: list[SlotConfig] = []
    for old in running.slots:
        new = new_by_name.get(old.name)
        if new is None:
            restart.append(f"slot {old.name!r} removed")
            slots.append(old)
            continue
        keep = {name: getattr(old, name) for name in _RESTART_SLOT_FIELDS if getattr(old, name) != getattr(new, name)}
        restart += [f"slot {old.name!r}.{name}" for name in keep]
        merged = dataclasses.replace(new, **keep)
        applied += [k for k in _changed_fields(old, merged, f"slot {old.name!r}.")]
        slots.append(merged)
    restart += [f"slot {s.name!r} added" for s in loaded.slots if s.name not in old_names]

    config = dataclasses.replace(
        loaded,
        listen=running.listen,
        lemond_url=running.lemond_url,
        admin_token=running.admin_token,
        slots=tuple(slots),
    )
    return ReloadPlan(config, tuple(applied), tuple(restart))
