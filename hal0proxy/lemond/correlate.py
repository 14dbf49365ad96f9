"""Fold line-level facts into model-level events: a pure state machine, no I/O.

Theory of operation
-------------------
lemond serializes loads (``router.cpp:794-801``), so at most one spawn is in progress and
every spawn-related line (PID, port, readiness, failure) belongs to it. The correlator
keeps that as the *current load*: opened by ``LoadRequested`` (unless another model's spawn is
already under way: that request waits for it), ``LoadResolved`` or ``SpawnStarted``, given a
PID by ``ProcessStarted`` and a port by ``PortAnnounced``, and closed by success, a final
failure, or the next load.

* ``LoadStarted`` is emitted once per load, when the spawn starts.
* ``ModelLoaded`` is emitted as soon as the port is known *and* the child serves. The
  child's own ``server is listening on …`` line is printed after the model is in memory,
  before lemond's ``/health`` probe succeeds, so it counts as serving; without it, the
  ``is ready!`` line (port from the Debug plan lines) or at the latest the ``Started
  watchdog … http://127.0.0.1:P/health`` line completes the load. When a load completes
  and no line ever named the port (Info level, watchdog disabled, a backend that does not
  say), ``take_resync_hint()`` turns true so the caller reconciles with ``/v1/health``.
* ``ModelEvicted`` is emitted on ``Evicted model: X``; the reason comes from the line
  that chose the victim (LRU, idle, pressure), from the explicit unload/reload that asked
  for it (manual), or from the evict-all in progress (nuclear or manual).
* ``ProcessCrashed`` is emitted on the watchdog reap line (PID mapped back to the model)
  and on the lazy-restart lines (``Pruning unavailable backend …``) when the reap line was
  not seen. The tombstone's eviction that follows is not reported again as an eviction.
* ``LoadFailed`` is emitted once per load, when lemond gives up: a file-not-found error,
  the retry failing, or an automatic reload failing.
* ``LemondRestarted`` is emitted on the startup banner; all state is dropped.

Duplicates are avoided by construction (each load emits at most one ``LoadFailed``; a
crashed model is not also reported evicted), because consumers count these for SLOs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from hal0proxy.lemond.events import (
    EvictReason,
    LemondEvent,
    LemondRestarted,
    LoadedModel,
    LoadFailed,
    LoadStarted,
    ModelEvicted,
    ModelLoaded,
    PortChanged,
    ProcessCrashed,
)
from hal0proxy.lemond.facts import (
    BackendLoadFailed,
    BackendPruned,
    BackendReady,
    BackendReaped,
    ChildTerminated,
    EvictAllCompleted,
    Evicted,
    EvictionCancelled,
    EvictionCause,
    EvictionChosen,
    EvictionDeferred,
    EvictionStarted,
    Fact,
    LemondStarting,
    LemondStopping,
    LoadCompleted,
    LoadFailure,
    LoadNotRetried,
    LoadRequested,
    LoadResolved,
    NuclearRetry,
    OptionsChanged,
    PortAnnounced,
    ProcessStarted,
    RetryFailed,
    RetryStarted,
    RetrySucceeded,
    SpawnStarted,
    Unloaded,
    UnloadFailed,
    UnloadRequested,
    VramPressure,
    WatchdogReload,
)

__all__ = ["Correlator", "Residency"]

_CAUSE_TO_REASON = {
    EvictionCause.LRU: EvictReason.LRU,
    EvictionCause.IDLE: EvictReason.IDLE,
    EvictionCause.PRESSURE: EvictReason.PRESSURE,
}


@dataclass(slots=True)
class _Load:
    """The spawn in progress (lemond runs at most one)."""

    model: str
    pid: int | None = None
    port: int | None = None
    serving: bool = False  # the child answers requests on ``port``
    started_emitted: bool = False
    loaded_emitted: bool = False
    reason: str = ""  # the last backend failure message, for LoadFailed


@dataclass(frozen=True, slots=True)
class Residency:
    """What the correlator believes about one loaded model."""

    port: int
    pid: int | None


class Correlator:
    """Turns ``Fact``s into ``LemondEvent``s. Feed facts in ``seq`` order."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._load: _Load | None = None
        # Model whose load most recently failed, so the several lines lemond prints for one
        # failure ("Retry also failed", "Failed to load model" twice, "Automatic reload …
        # failed") give one LoadFailed.
        self._failed_model: str | None = None
        self._resident: dict[str, Residency] = {}
        self._pids: dict[int, str] = {}
        # Port a model last had, kept across evictions and crashes, for PortChanged.
        self._last_port: dict[str, int] = {}
        self._pending_reason: dict[str, EvictReason] = {}
        # Reason for every eviction of an evict-all in progress (nuclear, unload-all, shutdown).
        self._bulk_reason: EvictReason | None = None
        # Models reported crashed whose tombstone lemond has not evicted yet.
        self._crashed: set[str] = set()
        self._vram_pressure = False
        self._resync_hint = False
        # Models lemond is replacing on its own (an option change: evict, then load again),
        # from "Options changed" until the new child serves or the load fails.
        self._replacing: set[str] = set()

    # -- queries ----------------------------------------------------------------------

    def known_pids(self) -> dict[int, str]:
        """PID -> model for every child the correlator believes alive."""
        return dict(self._pids)

    def resident(self) -> dict[str, Residency]:
        """Model -> (port, pid) for every model the correlator believes loaded."""
        return dict(self._resident)

    @property
    def loading_model(self) -> str | None:
        """The model whose load is in progress, if any."""
        return self._load.model if self._load is not None else None

    def replacing(self) -> frozenset[str]:
        """Models lemond is respawning with other options right now (canonical names)."""
        return frozenset(self._replacing)

    def take_resync_hint(self) -> bool:
        """True (once) when the log alone could not say where a model lives.

        Set when a load completed without any line naming its port, or a child the
        correlator did not know was reaped. The caller should reconcile with ``/v1/health``.
        """
        hint, self._resync_hint = self._resync_hint, False
        return hint

    # -- external knowledge -----------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (lemond restarted, or the stream was lost beyond repair)."""
        self._clear()

    def sync(self, loaded: Iterable[LoadedModel]) -> None:
        """Adopt ``/v1/health`` ``all_models_loaded`` as the truth about what is resident.

        Keeps PID -> model mapping right for crash lines about children that were loaded
        before the stream was joined. The load in progress is left alone.
        """
        self._resident = {}
        self._pids = {}
        for m in loaded:
            self._resident[m.model] = Residency(m.port, m.pid)
            self._last_port[m.model] = m.port
            if m.pid:
                self._pids[m.pid] = m.model
        self._crashed.intersection_update(self._resident)

    # -- the fold ---------------------------------------------------------------------

    def feed(self, fact: Fact, seq: int, observed_at: float) -> list[LemondEvent]:
        """Apply one fact; return the events it completes (usually none or one)."""
        out: list[LemondEvent] = []
        self._apply(fact, _Emitter(out, seq, observed_at))
        return out

    def _apply(self, fact: Fact, emit: _Emitter) -> None:
        match fact:
            case LemondStarting():
                self.reset()
                emit(LemondRestarted())
            # -- loading ----------------------------------------------------------------
            case LoadRequested(model=model):
                # lemond prints a load request when it arrives, before the request waits for
                # the spawn in progress (server.cpp, ahead of router.cpp's wait on
                # is_loading_): a request for another model must not take over that spawn's
                # PID and port lines. Its own load opens at its Router or spawn line, which
                # lemond prints only once the spawn in progress has ended.
                load = self._load
                if load is None or load.model == model or not load.started_emitted:
                    self._open_load(model)
            case LoadResolved(model=model):
                self._open_load(model)
            case SpawnStarted(model=model):
                load = self._open_load(model)
                # A new spawn attempt (first try or the nuclear retry): forget the old child.
                self._drop_load_child(load)
                self._emit_started(load, emit)
            case ProcessStarted(pid=pid):
                # The port plan ("will use port", the argv) is printed before this line,
                # so only the PID is recorded here.
                if self._load is not None:
                    self._load.pid = pid
                    self._emit_started(self._load, emit)
            case PortAnnounced(port=port, serving=serving):
                if self._load is not None:
                    self._announce_port(self._load, port, serving, emit)
            case BackendReady():
                if self._load is not None:
                    self._load.serving = True
                    self._try_loaded(self._load, emit)
            case LoadCompleted(model=model):
                self._complete(model, emit)
            case RetrySucceeded():
                self._complete(None, emit)
            case RetryStarted():
                if self._load is not None:
                    self._drop_load_child(self._load)
            case OptionsChanged(model=model):
                self._pending_reason[model] = EvictReason.MANUAL
                self._replacing.add(model)
            # -- failures ---------------------------------------------------------------
            case ChildTerminated():
                if self._load is not None:
                    self._drop_load_child(self._load)
            case BackendLoadFailed(reason=reason, file_not_found=fnf):
                if self._load is not None:
                    self._load.reason = reason
                    self._drop_load_child(self._load)
                    if fnf:  # lemond rethrows without a retry: this is final
                        self._fail(None, reason, emit)
            case LoadNotRetried(reason=reason):
                self._fail(None, self._load.reason if self._load and self._load.reason else reason, emit)
            case NuclearRetry():
                self._bulk_reason = EvictReason.NUCLEAR
            case RetryFailed(reason=reason):
                self._fail(None, reason, emit)
            case LoadFailure(model=model, reason=reason):
                self._fail(model, reason, emit)
            # -- eviction ---------------------------------------------------------------
            case EvictionChosen(model=model, cause=cause):
                self._pending_reason[model] = self._reason_for(cause)
            case VramPressure():
                self._vram_pressure = True
            case EvictionCancelled(model=model):
                self._pending_reason.pop(model, None)
                self._vram_pressure = False
            case UnloadRequested(model=None) | LemondStopping():
                self._bulk_reason = EvictReason.MANUAL
            case UnloadRequested(model=str() as model):
                self._pending_reason[model] = EvictReason.MANUAL
            case UnloadFailed(model=model):
                if model is not None:
                    self._pending_reason.pop(model, None)
            case EvictionStarted(model=model) | EvictionDeferred(model=model):
                # A deferred (tombstoned) victim is evicted after the evict-all has ended;
                # remember now why it was chosen.
                if model not in self._pending_reason and self._bulk_reason is not None:
                    self._pending_reason[model] = self._bulk_reason
            case Evicted(model=model):
                self._evicted(model, None, emit)
            case Unloaded(model=None):
                # Safety net for a missed "Evicted model:" line: nothing is loaded now.
                for model in list(self._resident):
                    self._evicted(model, EvictReason.MANUAL, emit)
                self._bulk_reason = None
            case Unloaded(model=str() as model):
                if model in self._resident:
                    self._evicted(model, EvictReason.MANUAL, emit)
            case EvictAllCompleted():
                self._bulk_reason = None
            # -- crashes ----------------------------------------------------------------
            case BackendReaped(pid=pid, exit_code=code):
                model = self._pids.pop(pid, None)
                if model is None:
                    self._resync_hint = True
                else:
                    self._resident.pop(model, None)
                    self._crashed.add(model)
                emit(ProcessCrashed(model=model, pid=pid, exit_code=code))
            case BackendPruned(model=model) | WatchdogReload(model=model):
                if model not in self._crashed:
                    gone = self._resident.pop(model, None)
                    gone_pid = gone.pid if gone is not None else None
                    if gone_pid is not None:
                        self._pids.pop(gone_pid, None)
                    self._crashed.add(model)
                    emit(ProcessCrashed(model=model, pid=gone_pid, exit_code=None))
            case _:
                pass

    # -- load helpers -----------------------------------------------------------------

    def _open_load(self, model: str) -> _Load:
        load = self._load
        if load is None or load.model != model:
            load = self._load = _Load(model)
            self._failed_model = None
        return load

    def _drop_load_child(self, load: _Load) -> None:
        # The child of a failed attempt is gone; a retry gets a new PID and maybe a new port.
        load.pid = None
        load.port = None
        load.serving = False
        load.loaded_emitted = False

    def _emit_started(self, load: _Load, emit: _Emitter) -> None:
        if not load.started_emitted:
            load.started_emitted = True
            emit(LoadStarted(model=load.model))

    def _announce_port(self, load: _Load, port: int, serving: bool, emit: _Emitter) -> None:
        if load.loaded_emitted and port != load.port and serving:
            # A later, more authoritative line (lemond's watchdog URL) disagrees with the
            # port already published: republish.
            load.loaded_emitted = False
        load.port = port
        if serving:
            load.serving = True
        self._try_loaded(load, emit)

    def _try_loaded(self, load: _Load, emit: _Emitter) -> None:
        if load.loaded_emitted or not load.serving or load.port is None:
            return
        load.loaded_emitted = True
        self._emit_started(load, emit)
        model, port, pid = load.model, load.port, load.pid
        old = self._resident.get(model)
        if old is not None and old.pid is not None and old.pid != pid:
            self._pids.pop(old.pid, None)
        self._resident[model] = Residency(port, pid)
        if pid is not None:
            self._pids[pid] = model
        self._crashed.discard(model)
        self._replacing.discard(model)
        emit(ModelLoaded(model=model, port=port, pid=pid))
        previous = self._last_port.get(model)
        self._last_port[model] = port
        if previous is not None and previous != port:
            emit(PortChanged(model=model, old_port=previous, new_port=port))

    def _complete(self, model: str | None, emit: _Emitter) -> None:
        load = self._load
        if load is None or (model is not None and model != load.model):
            if model is not None and model not in self._resident:
                self._resync_hint = True
            return
        load.serving = True
        self._try_loaded(load, emit)
        if not load.loaded_emitted:
            self._resync_hint = True
        # Done, even when no line named the port (v10.7 at Info): /v1/health says where.
        self._replacing.discard(load.model)
        self._load = None

    def _fail(self, model: str | None, reason: str, emit: _Emitter) -> None:
        load = self._load
        self._replacing.discard(model or (load.model if load is not None else ""))
        if load is not None and (model is None or model == load.model):
            self._load = None
            self._failed_model = load.model
            emit(LoadFailed(model=load.model, reason=reason))
        elif model is not None and model != self._failed_model:
            # "Automatic reload … failed for X" with no load seen (joined mid-load).
            self._failed_model = model
            emit(LoadFailed(model=model, reason=reason))

    # -- eviction helpers -------------------------------------------------------------

    def _reason_for(self, cause: EvictionCause) -> EvictReason:
        if cause is EvictionCause.ENGINE:
            # The engine prints the same line for its idle and its VRAM path.
            return EvictReason.PRESSURE if self._vram_pressure else EvictReason.IDLE
        return _CAUSE_TO_REASON[cause]

    def _evicted(self, model: str, reason: EvictReason | None, emit: _Emitter) -> None:
        pending = self._pending_reason.pop(model, None)
        gone = self._resident.pop(model, None)
        if gone is not None and gone.pid is not None:
            self._pids.pop(gone.pid, None)
        if pending is EvictReason.PRESSURE:
            self._vram_pressure = False
        if model in self._crashed:
            # Removing the tombstone of a child already reported as crashed.
            self._crashed.discard(model)
            return
        final = reason or pending or self._bulk_reason or EvictReason.UNKNOWN
        emit(ModelEvicted(model=model, reason=final))


class _Emitter:
    """Stamps events with the ``seq`` and observation time of the fact being applied."""

    __slots__ = ("_observed_at", "_out", "_seq")

    def __init__(self, out: list[LemondEvent], seq: int, observed_at: float) -> None:
        self._out = out
        self._seq = seq
        self._observed_at = observed_at

    def __call__(self, event: LemondEvent) -> None:
        self._out.append(replace(event, seq=self._seq, observed_at=self._observed_at))
