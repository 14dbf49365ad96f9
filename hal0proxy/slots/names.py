"""Slot names: validated before any file path, URL or lookup is built from them."""

from __future__ import annotations

import re

SLOT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")


def is_valid_slot_name(name: str) -> bool:
    return bool(SLOT_NAME_RE.match(name))
