"""The TOML configuration file: parsed once, validated completely, never written.

Every problem is reported with the dotted key it concerns (``slot[2].cold_start: must be one of
...``) so a bad file fails at start with a message that says what to fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hal0proxy.slots.names import SLOT_NAME_RE

DEFAULT_LEMOND_URL = "http://127.0.0.1:13305"
COLD_START_MODES = ("wait", "reject")
MODEL_TYPES = ("llm", "embedding", "reranking", "transcription", "tts", "image", "classification")
# HOST:PORT with an IPv6 host in brackets ([::1]:8080); an empty host means loopback. At most
# five digits, so the range check below sees every port a user may mean (never a wrapped one).
_HOST_PORT_RE = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Za-z:.%]+)\]|(?P<host>[0-9A-Za-z.-]*)):(?P<port>\d{1,5})$")
MAX_PORT = 65535
LISTEN_RULE = "must be HOST:PORT with PORT 1-65535, or 0 for any free port"
URL_RULE = "must be an http:// or https:// URL with a host and PORT 1-65535"


class ConfigError(ValueError):
    """Raised with every problem found, one per line."""


def problem_line(key: str, rule: str, value: object) -> str:
    """One line of a ``ConfigError``: ``key: rule (got value)``."""
    return f"{key}: {rule} (got {value!r})"


def parse_listen(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` as (host, port), or ``None`` when it breaks ``LISTEN_RULE``.

    Port 0 asks the kernel for any free port; the listening line printed at start names the
    port it chose. Nothing above 65535 is accepted: the socket layer would keep only the low
    16 bits and listen somewhere else than the file says.
    """
    found = _HOST_PORT_RE.match(text)
    if found is None or int(found["port"]) > MAX_PORT:
        return None
    return found["ipv6"] or found["host"] or "127.0.0.1", int(found["port"])


def parse_lemond_url(text: str) -> str | None:
    """The base URL without a trailing slash, or ``None`` when it breaks ``URL_RULE``."""
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError when not a number or out of 0-65535
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        return None
    return text.rstrip("/")


@dataclass(frozen=True, slots=True)
class SlotConfig:
    name: str
    model: str
    type: str = "llm"
    warm: bool = False
    idle_timeout_s: float = 0.0
    cold_start: str = "wait"
    max_wait_s: float = 120.0
    ctx_size: int | None = None
    llamacpp_backend: str | None = None
    llamacpp_args: str | None = None
    pinned: bool | None = None

    def load_options(self) -> dict[str, Any]:
        """The lemond ``/v1/load`` options this slot asks for (only the ones it sets)."""
        options: dict[str, Any] = {}
        for key in ("ctx_size", "llamacpp_backend", "llamacpp_args", "pinned"):
            value = getattr(self, key)
            if value is not None:
                options[key] = value
        return options


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    cold_start: str = "wait"
    max_wait_s: float = 120.0
    idle_timeout_s: float = 0.0
    default_load_s: float = 5.0  # Retry-After estimate before a model's first measured load
    load_timeout_s: float = 900.0
    # Hang detection for the proxy's own traffic (lemond's watchdog never sees it): a request
    # with no byte from its child for hang_after_s has the child's /health probed every
    # hang_probe_interval_s (each with hang_probe_timeout_s); hang_probe_failures failures in
    # a row and the child is treated as dead. Defaults are lemond's watchdog's (90 s, 2 s, 3).
    hang_after_s: float = 90.0
    hang_probe_interval_s: float = 5.0
    hang_probe_timeout_s: float = 2.0
    hang_probe_failures: int = 3


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    request_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    upstream_connect_timeout_s: float = 5.0
    upstream_first_byte_timeout_s: float = 600.0
    max_connections: int = 4096  # open client connections; past it: 503 proxy.overloaded
    pipeline_buffer_bytes: int = 256 * 1024  # unparsed input from one client before reading pauses
    shutdown_grace_s: float = 30.0  # SIGTERM: how long responses in flight may take to finish


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    lemond_url: str = DEFAULT_LEMOND_URL
    admin_token: str | None = None
    api_keys: tuple[str, ...] = ()
    forward_conversation_id: bool = False
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    slots: tuple[SlotConfig, ...] = ()

    def slot(self, name: str) -> SlotConfig | None:
        return next((s for s in self.slots if s.name == name), None)


# key -> (accepted python types, validator or None)
_Number = (int, float)


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _one_of(options: tuple[str, ...]) -> Any:
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


_TOP = {
    "listen": ((str,), lambda v: None if parse_listen(v) else LISTEN_RULE),
    "lemond_url": ((str,), lambda v: None if parse_lemond_url(v) else URL_RULE),
    "admin_token_file": ((str,), None),
    "admin_token_env": ((str,), None),
    "api_keys": ((list,), lambda v: None if all(isinstance(k, str) and k for k in v) else "must be non-empty strings"),
    "api_keys_file": ((str,), None),
    "forward_conversation_id": ((bool,), None),
}
_LIMITS = {
    "max_body_bytes": ((int,), _positive),
    "max_header_bytes": ((int,), _positive),
    "request_timeout_s": (_Number, _positive),
    "keepalive_timeout_s": (_Number, _positive),
    "upstream_connect_timeout_s": (_Number, _positive),
    "upstream_first_byte_timeout_s": (_Number, _positive),
    "max_connections": ((int,), _positive),
    "pipeline_buffer_bytes": ((int,), _positive),
    "shutdown_grace_s": (_Number, _non_negative),
}
_POLICY = {
    "cold_start": ((str,), _one_of(COLD_START_MODES)),
    "max_wait_s": (_Number, _non_negative),
    "idle_timeout_s": (_Number, _non_negative),
    "default_load_s": (_Number, _positive),
    "load_timeout_s": (_Number, _positive),
    "hang_after_s": (_Number, _positive),
    "hang_probe_interval_s": (_Number, _positive),
    "hang_probe_timeout_s": (_Number, _positive),
    "hang_probe_failures": ((int,), _positive),
}
_SLOT = {
    "name": ((str,), lambda v: None if SLOT_NAME_RE.match(v) else "must match ^[a-z0-9][a-z0-9_-]{0,31}$"),
    "model": ((str,), lambda v: None if v.strip() else "must not be empty"),
    "type": ((str,), _one_of(MODEL_TYPES)),
    "warm": ((bool,), None),
    "idle_timeout_s": (_Number, _non_negative),
    "cold_start": ((str,), _one_of(COLD_START_MODES)),
    "max_wait_s": (_Number, _non_negative),
    "ctx_size": ((int,), lambda v: None if v == -1 or v > 0 else "must be -1 (auto) or > 0"),
    "llamacpp_backend": ((str,), _one_of(("vulkan", "rocm", "metal", "cpu", "cuda"))),
    "llamacpp_args": ((str,), None),
    "pinned": ((bool,), None),
}


def _check_table(table: Any, schema: dict[str, Any], where: str, errors: list[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        errors.append(f"{where}: must be a table")
        return {}
    clean: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{where}.{key}" if where else key
        if key not in schema:
            errors.append(f"{dotted}: unknown key")
            continue
        types, check = schema[key]
        # bool is an int subclass: never accept true/false where a number is expected.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            errors.append(f"{dotted}: expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}")
            continue
        problem = check(value) if check else None
        if problem:
            errors.append(f"{dotted}: {problem} (got {value!r})")
            continue
        clean[key] = value
    return clean


def _read_secret(path: str, where: str, errors: list[str]) -> str | None:
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        errors.append(f"{where}: cannot read {path}: {exc.strerror}")
        return None
    if not text:
        errors.append(f"{where}: {path} is empty")
        return None
    return text


def parse_config(doc: dict[str, Any], env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    errors: list[str] = []
    sections = {"limits", "policy", "slot"}
    top = _check_table({k: v for k, v in doc.items() if k not in sections}, _TOP, "", errors)
    limits = _check_table(doc.get("limits", {}), _LIMITS, "limits", errors)
    policy = _check_table(doc.get("policy", {}), _POLICY, "policy", errors)
    raw_slots = doc.get("slot", [])
    slots: list[SlotConfig] = []
    if not isinstance(raw_slots, list):
        errors.append("slot: must be an array of tables ([[slot]])")
        raw_slots = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_slots):
        where = f"slot[{i}]"
        entry = _check_table(raw, _SLOT, where, errors)
        for required in ("name", "model"):
            if isinstance(raw, dict) and required not in raw:
                errors.append(f"{where}.{required}: required")
        if "name" in entry and "model" in entry:
            if entry["name"] in seen:
                errors.append(f"{where}.name: duplicate slot name {entry['name']!r}")
            seen.add(entry["name"])
            defaults = PolicyConfig(**policy)
            entry.setdefault("idle_timeout_s", defaults.idle_timeout_s)
            entry.setdefault("cold_start", defaults.cold_start)
            entry.setdefault("max_wait_s", defaults.max_wait_s)
            slots.append(SlotConfig(**entry))

    admin_token = None
    if "admin_token_file" in top:
        admin_token = _read_secret(top["admin_token_file"], "admin_token_file", errors)
    elif env.get(top.get("admin_token_env", "HAL0PROXY_ADMIN_TOKEN")):
        admin_token = env[top.get("admin_token_env", "HAL0PROXY_ADMIN_TOKEN")].strip()
    api_keys = list(top.get("api_keys", []))
    if "api_keys_file" in top:
        text = _read_secret(top["api_keys_file"], "api_keys_file", errors)
        api_keys += [line.strip() for line in (text or "").splitlines() if line.strip()]
    if errors:
        raise ConfigError("\n".join(errors))

    listen = parse_listen(top["listen"]) if "listen" in top else None
    return Config(
        listen=listen or ("127.0.0.1", 8080),
        lemond_url=parse_lemond_url(top.get("lemond_url", DEFAULT_LEMOND_URL)) or DEFAULT_LEMOND_URL,
        admin_token=admin_token,
        api_keys=tuple(api_keys),
        forward_conversation_id=top.get("forward_conversation_id", False),
        limits=LimitsConfig(**limits),
        policy=PolicyConfig(**policy),
        slots=tuple(slots),
    )


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(doc, env)
