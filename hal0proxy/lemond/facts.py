"""Line-level facts: what one lemond log line says, and nothing more.

A fact is the typed reading of a single log line (see ``parser.parse``). Facts carry no
``seq`` and no timestamp and know nothing about the lines around them; folding them into
model-level events (which model was evicted *why*, which PID belonged to which model) is
the job of ``correlate.Correlator``. Keeping the two apart lets the parser stay a pure,
table-driven function that a corpus test can lock down line by line.

The wording each fact stands for is quoted in its docstring; the exact formats live in
``reference/lemond/SPEC.md`` §5 and ``fixtures/log_lines.txt``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EvictionCause(enum.StrEnum):
    """Why lemond picked a victim, as far as the choosing line itself tells."""

    LRU = "lru"  # count-based LRU ("Slot limit reached …, evicting LRU: X")
    IDLE = "idle"  # eviction engine idle timeout
    PRESSURE = "pressure"  # VRAM pressure or NPU/FLM device exclusivity
    # "Eviction Engine unloading model: X due to score/pressure/idle." is printed for both
    # the idle and the VRAM path; only the preceding lines can tell them apart.
    ENGINE = "engine"


# -- lemond process -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LemondStarting:
    """``(main) Starting Lemonade Server...``: a new lemond process, ``seq`` restarts at 1."""


@dataclass(frozen=True, slots=True)
class LemondVersion:
    """``(main)   Version: 11.7.0`` (second line of the startup banner)."""

    version: str


@dataclass(frozen=True, slots=True)
class LemondStopping:
    """``(Server) Shutdown request received``: every model is about to be unloaded."""


# -- loading --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadRequested:
    """``(Server) Ensuring model loaded: X k=v, …`` or ``(Server) Auto-loading model: X``."""

    model: str
    options: str = ""
    auto: bool = False


@dataclass(frozen=True, slots=True)
class LoadResolved:
    """Debug ``(Router) Loading model: X (checkpoint: …, recipe: R, type: T, …)``."""

    model: str
    recipe: str = ""
    model_type: str = ""


@dataclass(frozen=True, slots=True)
class SpawnStarted:
    """``(LlamaCpp) Loading model: X``: the backend is about to start a child process."""

    model: str


@dataclass(frozen=True, slots=True)
class ProcessStarted:
    """``(ProcessManager) Process started successfully, PID: N``."""

    pid: int


@dataclass(frozen=True, slots=True)
class PortAnnounced:
    """A line naming the port of the child being spawned.

    ``serving`` is true when the line is printed only once the child answers requests:
    the child's own ``main: server is listening on http://127.0.0.1:P - starting the main
    loop`` (llama-server prints it after the model is in memory), ``Model loaded on port P``,
    ``Server is ready at http://127.0.0.1:P`` and ``Started watchdog for … /health``. It is
    false for lines that only announce the plan (``llama-server will use port: P``, the
    ``--port P`` argv, ``Starting server on port P``).
    """

    port: int
    serving: bool = False
    server: str = ""


@dataclass(frozen=True, slots=True)
class BackendReady:
    """``(WrappedServer) llama-server is ready!``: lemond's own ``/health`` probe succeeded."""

    server: str


@dataclass(frozen=True, slots=True)
class LoadCompleted:
    """``(Router) Model loaded successfully. Total loaded: N`` or ``(Server) Model loaded successfully: X``."""

    model: str | None = None
    total_loaded: int | None = None


@dataclass(frozen=True, slots=True)
class OptionsChanged:
    """``(Router) Options changed, reloading model: X`` (v10.3+) or ``(Server) Reloading model: X …`` (≤ v10.2).

    The model is evicted and spawned again, possibly on another port.
    """

    model: str


# -- load failure and the nuclear retry -----------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildTerminated:
    """``(WrappedServer) llama-server process has terminated with exit code: N`` (during a load)."""

    exit_code: int
    server: str = ""


@dataclass(frozen=True, slots=True)
class BackendLoadFailed:
    """``(Router) Backend load failed: <msg>``.

    ``file_not_found`` mirrors lemond's own test on the message (``router.cpp:1085-1100``):
    such a failure is final, anything else triggers the nuclear evict-all and one retry.
    """

    reason: str
    file_not_found: bool = False


@dataclass(frozen=True, slots=True)
class LoadNotRetried:
    """``File not found error, NOT evicting other models`` / ``Load cancelled, skipping nuclear retry``."""

    reason: str


@dataclass(frozen=True, slots=True)
class NuclearRetry:
    """``(Router) Load failed with non-file-not-found error, evicting all models and retrying...``."""


@dataclass(frozen=True, slots=True)
class RetryStarted:
    """Debug ``(Router) Retrying backend load...``."""


@dataclass(frozen=True, slots=True)
class RetrySucceeded:
    """Debug ``(Router) Retry successful in Nms!`` (the only success line on the nuclear path)."""

    duration_ms: int


@dataclass(frozen=True, slots=True)
class RetryFailed:
    """``(Router) Retry also failed: <msg>``."""

    reason: str


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """A final load failure.

    ``(Router|Server) Failed to load model: <msg>`` (model unknown) or ``(Router) Automatic
    reload after watchdog reset failed for X: <msg>`` (model known).
    """

    model: str | None
    reason: str
    file_not_found: bool = False


# -- eviction and unload --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvictionChosen:
    """lemond picked ``model`` as a victim; ``cause`` says which policy picked it.

    ``pool`` is ``standard/llm`` (v11.1+) or ``llm`` (v10.0-v11.0 ``for type llm``).
    """

    model: str
    cause: EvictionCause
    pool: str = ""


@dataclass(frozen=True, slots=True)
class VramPressure:
    """``(on_vram_pressure) VRAM pressure critical (95% >= 90%). Evaluating eviction.``."""

    percent: int


@dataclass(frozen=True, slots=True)
class EvictionCancelled:
    """``(Router) Eviction of X cancelled (rescued by in-flight request)``."""

    model: str


@dataclass(frozen=True, slots=True)
class EvictionStarted:
    """``(Router) Evicting model: X``."""

    model: str


@dataclass(frozen=True, slots=True)
class EvictionDeferred:
    """``(Router) Deferring eviction for model X because requests are still unwinding …``."""

    model: str


@dataclass(frozen=True, slots=True)
class Evicted:
    """``(Router) Evicted model: X``: the child is gone and the model left ``/v1/health``."""

    model: str


@dataclass(frozen=True, slots=True)
class UnloadRequested:
    """``(Router) Unload model called: X``; ``model`` is None for ``Unload all models called``."""

    model: str | None


@dataclass(frozen=True, slots=True)
class UnloadFailed:
    """``(Server) Unload failed: Model not loaded: X``."""

    model: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Unloaded:
    """``(Server) Model 'X' unloaded successfully``; None for ``All models unloaded[ successfully]``."""

    model: str | None


@dataclass(frozen=True, slots=True)
class EvictAllStarted:
    """``(Router) Evicting all models (N total)``."""

    count: int


@dataclass(frozen=True, slots=True)
class EvictAllCompleted:
    """``(Router) Evict all completed. Remaining tombstoned models: N``."""

    tombstoned: int


# -- crashes and the watchdog ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackendReaped:
    """``(BackendWatchdog) <server> backend marked unavailable: <cause>; … PID <pid> [(exit_code=N)]``.

    Covers the idle crash, the crash during a stream and the hang kill (no exit code).
    """

    pid: int
    exit_code: int | None
    server: str
    cause: str


@dataclass(frozen=True, slots=True)
class BackendPruned:
    """``(Router) Pruning unavailable backend for model: X (state=S)`` or
    ``Existing backend for X is unavailable (state=S), evicting before reload``."""

    model: str
    state: str


@dataclass(frozen=True, slots=True)
class WatchdogReload:
    """``(Router) Reloading model after backend watchdog reset: X``."""

    model: str


Fact = (
    LemondStarting
    | LemondVersion
    | LemondStopping
    | LoadRequested
    | LoadResolved
    | SpawnStarted
    | ProcessStarted
    | PortAnnounced
    | BackendReady
    | LoadCompleted
    | OptionsChanged
    | ChildTerminated
    | BackendLoadFailed
    | LoadNotRetried
    | NuclearRetry
    | RetryStarted
    | RetrySucceeded
    | RetryFailed
    | LoadFailure
    | EvictionChosen
    | VramPressure
    | EvictionCancelled
    | EvictionStarted
    | EvictionDeferred
    | Evicted
    | UnloadRequested
    | UnloadFailed
    | Unloaded
    | EvictAllStarted
    | EvictAllCompleted
    | BackendReaped
    | BackendPruned
    | WatchdogReload
)
