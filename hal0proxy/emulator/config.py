"""The emulator's settings, and the lemond release differences it reproduces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hal0proxy.emulator.catalog import DEFAULT_CATALOG, CatalogModel

__all__ = ["SUPPORTED_VERSIONS", "EmulatorConfig", "Release"]

ChildKind = Literal["fake", "llama-server"]
SUPPORTED_VERSIONS = ("11.7", "10.8", "10.7")


@dataclass(frozen=True, slots=True)
class Release:
    """Behaviour switches keyed by lemond release (SPEC §0)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Release:
        parts = text.split(".")
        if len(parts) < 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"bad lemond version: {text!r}")
        return cls(int(parts[0]), int(parts[1]))

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.0"

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)

    @property
    def has_watchdog(self) -> bool:
        """v10.8+: crashed children are reaped and dropped from /health."""
        return self.at_least(10, 8)

    @property
    def ws_on_main_port(self) -> bool:
        """v10.8+: /logs/stream is also served on the main HTTP port, under every prefix."""
        return self.at_least(10, 8)

    @property
    def has_residency(self) -> bool:
        """v11.5+: residency pools and their /health fields."""
        return self.at_least(11, 5)

    @property
    def has_residency_controls(self) -> bool:
        """v11: ``/internal/pin`` and the idle eviction engine (neither exists in v10.7)."""
        return self.at_least(11, 0)

    @property
    def already_loaded_severity(self) -> str:
        """'Model already loaded' dropped from Info to Debug in v11.0."""
        return "Debug" if self.at_least(11, 0) else "Info"

    def slot_limit_line(self, model_type: str, victim: str) -> str:
        if self.at_least(11, 1):
            return f"Slot limit reached for pool standard/{model_type}, evicting LRU: {victim}"
        return f"Slot limit reached for type {model_type}, evicting LRU: {victim}"

    @property
    def model_types(self) -> tuple[str, ...]:
        base = ("embedding", "image", "llm", "reranking", "transcription", "tts")
        if self.at_least(11, 5):
            return ("classification", *base)
        return base


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    host: str = "localhost"
    port: int = 13305
    child_port_base: int = 8001
    max_loaded_models: int = 1
    catalog: tuple[CatalogModel, ...] = DEFAULT_CATALOG
    children: ChildKind = "fake"
    release: Release = field(default_factory=lambda: Release(11, 7))
    websocket: bool = True
    websocket_port_base: int = 9000
    #: lemond sleeps 2 s after each unload "waiting for GPU driver cleanup"
    unload_pause_s: float = 2.0
    fake_tokens_per_second: float = 0.0
    fake_close_after_stream: bool = False
    log_level: str = "info"
    #: lemond's watchdog polls every 5 s; polling more often keeps reaping inside that bound
    watchdog_poll_s: float = 1.0
    #: lemond's global_timeout for a child to answer /health
    load_timeout_s: float = 600.0
    echo_logs: bool = True
    #: lemond's eviction engine (SPEC §4.5): the global switch and its timeouts
    auto_evict: bool = False
    evict_idle_timeout_s: float = 300.0
    downsize_idle_timeout_s: float = 60.0
    eviction_interval_s: float = 5.0
    cache_dir: str = "/var/lib/lemonade/.cache/lemonade"

    def __post_init__(self) -> None:
        if self.max_loaded_models != -1 and self.max_loaded_models < 1:
            raise ValueError("'max_loaded_models' must be -1 (unlimited) or a positive integer")
        if self.children not in ("fake", "llama-server"):
            raise ValueError(f"unknown children kind: {self.children!r}")

    @property
    def bind_host(self) -> str:
        # lemond maps "localhost" (and an empty host) to 127.0.0.1 for IPv4.
        return "127.0.0.1" if self.host in ("localhost", "") else self.host
