"""The admin listener's paths: which methods each allows, and what a slot segment names.

Pure: the admin API asks, and answers ``405`` with ``Allow`` (RFC 9110 §15.5.6) for a known
path with another method, ``404`` for an unknown path, ``400 slot.invalid_name`` for a slot
segment that cannot name anything.

A slot segment names a configured slot (``primary``) or any model lemond lists
(``nomic-embed-text-v1-GGUF``, ``user.My-Model``), so it is not held to the slot-name
pattern. It is percent-decoded as UTF-8 and refused only when it cannot be a slot or model
name at all: empty, ``.`` or ``..``, over ``MAX_NAME_CHARS``, or containing ``/``, ``\\``,
whitespace or a control character.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

__all__ = [
    "ACTION_METHODS",
    "BROWSER_READABLE",
    "MAX_NAME_CHARS",
    "READ_METHODS",
    "SLOT_ACTIONS",
    "STATIC_PATHS",
    "allow_header",
    "slot_segment_name",
]

READ_METHODS = frozenset({b"GET", b"HEAD"})
ACTION_METHODS = frozenset({b"POST"})

#: Every fixed path of the admin listener and the methods it answers.
STATIC_PATHS: dict[str, frozenset[bytes]] = {
    "/": READ_METHODS,
    "/ui": READ_METHODS,
    "/healthz": READ_METHODS,
    "/readyz": READ_METHODS,
    "/metrics": READ_METHODS,
    "/api/slots": READ_METHODS,
    "/api/v1/adapter/events": READ_METHODS,
}

#: ``/api/slots/{name}/{action}``.
SLOT_ACTIONS = frozenset({"load", "unload"})

#: The read-only paths a page in the user's browser could read through DNS rebinding (the
#: status page and what it reads). ``/healthz``, ``/readyz`` and ``/metrics`` are left out:
#: probes and scrapers name the host as they please, and they hold no slot to act on.
BROWSER_READABLE = frozenset({"/", "/ui", "/api/slots", "/api/v1/adapter/events"})

#: lemond's model names are short (tens of characters); this bounds a name in a log line.
MAX_NAME_CHARS = 256


def allow_header(methods: frozenset[bytes]) -> bytes:
    """The ``Allow`` value for ``methods``, in a stable order."""
    return b", ".join(sorted(methods))


def slot_segment_name(segment: str) -> str | None:
    """The name a ``/api/slots/{segment}`` path segment carries (percent-decoded as UTF-8),
    or ``None`` when it cannot be a slot or model name at all.

    ``segment`` is the raw target decoded as Latin-1 (one character per byte), as the
    request head parser gives it."""
    try:
        name = unquote_to_bytes(segment.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    if not name or name in (".", "..") or len(name) > MAX_NAME_CHARS:
        return None
    for char in name:
        if char in "/\\" or char.isspace() or not char.isprintable():
            return None  # isprintable() is False for control and other invisible characters
    return name
