"""Data-plane limits and timeouts (configurable; defaults suit a local model server)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProxySettings:
    max_body_bytes: int = 64 * 1024 * 1024  # large enough for base64 images and long prompts
    max_header_bytes: int = 64 * 1024
    request_timeout_s: float = 30.0  # from the first byte of a request to its last (408)
    keepalive_timeout_s: float = 75.0  # idle client connections are closed silently
    upstream_connect_timeout_s: float = 5.0  # 504 upstream.timeout
    upstream_first_byte_timeout_s: float = 600.0  # long prefills are silent on older llama-server builds
    write_high_water: int = 256 * 1024  # client write buffer above which the child is paused
    write_low_water: int = 64 * 1024
    pipeline_buffer_bytes: int = 256 * 1024  # unparsed input from one client before reading pauses
    # Open client connections past which a new one is answered 503 proxy.overloaded and closed.
    # Each forwarded request holds two descriptors (client and child): the composition root
    # raises RLIMIT_NOFILE to fit, or lowers this cap to what the limit allows.
    max_connections: int = 4096
    forward_conversation_id: bool = False  # X-Conversation-Id switches llama-server into detached generation
    api_keys: tuple[str, ...] = ()  # optional bearer keys for /v1/*
