"""lemond log line -> ``Fact``: one pure, table-driven function.

Formats handled (``reference/lemond/SPEC.md`` §5, ``fixtures/log_lines.txt``):

* v10.0+ aixlog lines ``YYYY-MM-DD HH:MM:SS.mmm [Severity] (Tag) message``; the severity
  word is not trusted (``Warn`` at runtime, ``Warning`` in the docs) because no rule
  depends on it.
* The same line behind a journald prefix (``May 05 17:07:23 host lemond[1]: 2026-…``).
* v9 plain ``[Tag] message`` lines.
* Bare child output (v9 relayed the child's stdout without a prefix); only the child's
  "listening" line is read from such lines.

Theory of operation: the line is first split into ``(tag, message)`` with plain string
operations, then only the rows whose tag set admits that tag are tried, and each row
checks a literal ``needle`` with ``in`` before its regex runs. Most lines lemond prints
(request logs, child chatter, banner details) are rejected by the needle checks alone,
which matters because this runs on every line of the stream.

Rows are anchored on the message start and on a tag set, so the continuation entries of a
multi-line message (``This usually means:`` / ``  - Missing required drivers …``, which
carry the tag of their first line) and child output that happens to quote lemond's
wording (``(Process) … Evicted model: X``) never match.

``parse`` never raises: every number is bounded to 9 digits so ``int()`` cannot hit
CPython's digit limit, and non-``str`` input yields ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from hal0proxy.lemond.facts import (
    BackendLoadFailed,
    BackendPruned,
    BackendReady,
    BackendReaped,
    ChildTerminated,
    EvictAllCompleted,
    EvictAllStarted,
    Evicted,
    EvictionCancelled,
    EvictionCause,
    EvictionChosen,
    EvictionDeferred,
    EvictionStarted,
    Fact,
    LemondStarting,
    LemondStopping,
    LemondVersion,
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

__all__ = ["RULES", "Rule", "is_file_not_found", "parse", "split_line"]

# Tag given to a line without any "(Tag)" / "[Tag]" prefix.
UNTAGGED = ""
# Child output is re-logged under this tag; it is free text from another program, so only
# rows that name it explicitly may look at it.
CHILD_TAG = "Process"

_MAX_CACHED_TAGS = 256

# A port or PID: bounded so int() is cheap and can never raise.
_NUM = r"(\d{1,9})"
# Host part of a child URL: an IPv6 literal in brackets or a name/IPv4 without ':' or '/'.
_HOST = r"(?:\[[^\]]*\]|[^\s/:\[\]]+)"


class Rule(NamedTuple):
    """One row of the table.

    ``tags`` lists the tags the row applies to; ``None`` means "any tag except the child
    output tag and untagged lines" (used for backend lines whose tag depends on the
    recipe, e.g. ``LlamaCpp`` / ``FastFlowLM`` / ``WhisperServer``). ``exclude`` narrows a
    ``None`` row further. ``needle`` must occur in the message before ``pattern`` is tried
    with ``re.match`` (anchored at the start of the message).
    """

    tags: frozenset[str] | None
    needle: str
    pattern: re.Pattern[str]
    build: Callable[[re.Match[str], str], Fact | None]
    exclude: frozenset[str] = frozenset()


def is_file_not_found(message: str) -> bool:
    """lemond's own test for a load error that must not trigger the nuclear retry."""
    return "not found" in message or "does not exist" in message or "No such file" in message


def _kv(text: str) -> dict[str, str]:
    # "checkpoint: a:b, recipe: llamacpp, type: llm" -> {"recipe": "llamacpp", ...}; the
    # checkpoint may contain ':' so split on the first ": " of each comma-separated item.
    out: dict[str, str] = {}
    for item in text.split(", "):
        key, sep, value = item.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _load_resolved(m: re.Match[str], _tag: str) -> Fact:
    kv = _kv(m.group(2))
    return LoadResolved(m.group(1), recipe=kv.get("recipe", ""), model_type=kv.get("type", ""))


def _backend_reaped(m: re.Match[str], _tag: str) -> Fact:
    code = m.group(4)
    return BackendReaped(
        pid=int(m.group(3)),
        exit_code=int(code) if code is not None else None,
        server=m.group(1),
        cause=m.group(2),
    )


def _unload_failed(m: re.Match[str], _tag: str) -> Fact:
    reason = m.group(1).strip()
    model = m.group(2)
    return UnloadFailed(model.strip() if model else None, reason)


def _r(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _tags(*names: str) -> frozenset[str]:
    return frozenset(names)


_MAIN = _tags("main", "Server")  # the docs show the banner under (Server); the code uses (main)
_SERVER = _tags("Server")
_ROUTER = _tags("Router")
_PROCESS_MANAGER = _tags("ProcessManager")
_WATCHDOG = _tags("BackendWatchdog")
_CHILD = _tags(CHILD_TAG, UNTAGGED)
# lemond's own HTTP/WebSocket listeners also print "… port …" lines; they are not children.
_NOT_A_BACKEND = _tags("WebSocket", "Server", "main", "Router")

# fmt: off
RULES: tuple[Rule, ...] = (
    # -- lemond process ---------------------------------------------------------------
    Rule(_MAIN, "Starting Lemonade Server", _r(r"Starting Lemonade Server\b"),
         lambda m, t: LemondStarting()),
    Rule(_MAIN, "Version: ", _r(r"\s*Version: (\S+)\s*$"),
         lambda m, t: LemondVersion(m.group(1))),
    Rule(_SERVER, "Shutdown request received", _r(r"Shutdown request received"),
         lambda m, t: LemondStopping()),
    # -- loading ----------------------------------------------------------------------
    # The options follow the model after one space; with no options the line ends in a
    # trailing space (PR #3167), which rstrip() has already removed.
    Rule(_SERVER, "Ensuring model loaded: ", _r(r"Ensuring model loaded: (\S+)(?: (.*))?$"),
         lambda m, t: LoadRequested(m.group(1), (m.group(2) or "").strip())),
    Rule(_SERVER, "Auto-loading model: ", _r(r"Auto-loading model: (\S+)"),
         lambda m, t: LoadRequested(m.group(1), auto=True)),
    Rule(_ROUTER, "Loading model: ", _r(r"Loading model: (\S+) \((.*)\)$"), _load_resolved),
    Rule(None, "Loading model: ", _r(r"Loading model: (\S+)$"),
         lambda m, t: SpawnStarted(m.group(1)), exclude=_tags("Router", "Server")),
    Rule(_PROCESS_MANAGER, "Process started successfully, PID: ",
         _r(r"Process started successfully, PID: " + _NUM + r"\s*$"),
         lambda m, t: ProcessStarted(int(m.group(1)))),
    Rule(_PROCESS_MANAGER, " --port ", _r(r"Starting process\b.*? --port " + _NUM + r"\b"),
         lambda m, t: PortAnnounced(int(m.group(1)))),
    Rule(None, " will use port: ", _r(r"(\S+) will use port: " + _NUM + r"\s*$"),
         lambda m, t: PortAnnounced(int(m.group(2)), server=m.group(1)), exclude=_NOT_A_BACKEND),
    Rule(None, "Starting server on port ", _r(r"Starting server on port " + _NUM + r"\b"),
         lambda m, t: PortAnnounced(int(m.group(1)), server=t), exclude=_NOT_A_BACKEND),
    # llama-server prints "server is listening on http://H:P - starting the main loop" once
    # the model is in memory, i.e. when the child already serves (lemond's /health probe
    # succeeds up to 100 ms later). The early "HTTP server is listening, hostname: H, port:
    # P" of some builds precedes the model load and only announces the port.
    Rule(_CHILD, "server is listening on http",
         _r(r".*?\bserver is listening on https?://" + _HOST + ":" + _NUM + r"\b"),
         lambda m, t: PortAnnounced(int(m.group(1)), serving=True, server="llama-server")),
    # Newer llama-server builds say it as "srv  llama_server: listening on http://H:P", also
    # once the model is in memory ("llama_server: model loaded" comes just before).
    Rule(_CHILD, ": listening on http",
         _r(r".*?\bllama_server: listening on https?://" + _HOST + ":" + _NUM + r"\b"),
         lambda m, t: PortAnnounced(int(m.group(1)), serving=True, server="llama-server")),
    Rule(_CHILD, "HTTP server is listening, hostname: ",
         _r(r".*?HTTP server is listening, hostname: \S+, port: " + _NUM + r"\b"),
         lambda m, t: PortAnnounced(int(m.group(1)), server="llama-server")),
    Rule(None, " is ready!", _r(r"(\S+) is ready!\s*$"),
         lambda m, t: BackendReady(m.group(1)), exclude=_NOT_A_BACKEND),
    Rule(None, "Server is ready at http", _r(r"Server is ready at https?://" + _HOST + ":" + _NUM + r"\b"),
         lambda m, t: PortAnnounced(int(m.group(1)), serving=True, server=t), exclude=_NOT_A_BACKEND),
    Rule(None, "Model loaded on port ", _r(r"Model loaded on port " + _NUM + r"\b"),
         lambda m, t: PortAnnounced(int(m.group(1)), serving=True, server=t), exclude=_NOT_A_BACKEND),
    Rule(_WATCHDOG, "Started watchdog for ",
         _r(r"Started watchdog for (.+?) using https?://" + _HOST + ":" + _NUM + r"/"),
         lambda m, t: PortAnnounced(int(m.group(2)), serving=True, server=m.group(1))),
    Rule(_ROUTER, "Model loaded successfully. Total loaded: ",
         _r(r"Model loaded successfully\. Total loaded: " + _NUM + r"\b"),
         lambda m, t: LoadCompleted(None, int(m.group(1)))),
    Rule(_SERVER, "Model loaded successfully: ", _r(r"Model loaded successfully: (\S+)"),
         lambda m, t: LoadCompleted(m.group(1))),
    Rule(_ROUTER, "Options changed, reloading model: ", _r(r"Options changed, reloading model: (\S+)"),
         lambda m, t: OptionsChanged(m.group(1))),
    Rule(_SERVER, "Reloading model: ", _r(r"Reloading model: (\S+)"),
         lambda m, t: OptionsChanged(m.group(1))),
    # -- load failure and the nuclear retry -------------------------------------------
    Rule(None, " process has terminated with exit code: ",
         _r(r"(\S+) process has terminated with exit code: (-?\d{1,9})\b"),
         lambda m, t: ChildTerminated(int(m.group(2)), m.group(1)), exclude=_NOT_A_BACKEND),
    Rule(_ROUTER, "Backend load failed: ", _r(r"Backend load failed: (.*)$"),
         lambda m, t: BackendLoadFailed(m.group(1), is_file_not_found(m.group(1)))),
    Rule(_ROUTER, "File not found error", _r(r"File not found error, NOT evicting"),
         lambda m, t: LoadNotRetried("file not found")),
    Rule(_ROUTER, "Load cancelled", _r(r"Load cancelled, skipping nuclear retry"),
         lambda m, t: LoadNotRetried("load cancelled")),
    Rule(_ROUTER, "Load failed with non-file-not-found error",
         _r(r"Load failed with non-file-not-found error"), lambda m, t: NuclearRetry()),
    Rule(_ROUTER, "Retrying backend load", _r(r"Retrying backend load"), lambda m, t: RetryStarted()),
    Rule(_ROUTER, "Retry successful in ", _r(r"Retry successful in " + _NUM + r"\s*ms"),
         lambda m, t: RetrySucceeded(int(m.group(1)))),
    Rule(_ROUTER, "Retry also failed: ", _r(r"Retry also failed: (.*)$"),
         lambda m, t: RetryFailed(m.group(1))),
    Rule(_tags("Router", "Server"), "Failed to load model: ", _r(r"Failed to load model: (.*)$"),
         lambda m, t: LoadFailure(None, m.group(1), is_file_not_found(m.group(1)))),
    Rule(_ROUTER, "Automatic reload after watchdog reset failed for ",
         _r(r"Automatic reload after watchdog reset failed for (\S+?): (.*)$"),
         lambda m, t: LoadFailure(m.group(1), m.group(2), is_file_not_found(m.group(2)))),
    # -- eviction and unload ----------------------------------------------------------
    # v11.1+: "for pool standard/llm"; v10.0-v11.0: "for type llm".
    Rule(_ROUTER, "Slot limit reached for ",
         _r(r"Slot limit reached for (?:pool|type) (\S+), evicting LRU: (.+)$"),
         lambda m, t: EvictionChosen(m.group(2), EvictionCause.LRU, m.group(1))),
    Rule(_ROUTER, "Evicting NPU server: ", _r(r"Evicting NPU server: (.+)$"),
         lambda m, t: EvictionChosen(m.group(1), EvictionCause.PRESSURE)),
    Rule(_ROUTER, "FLM cannot coexist with ", _r(r"FLM cannot coexist with \S+, evicting: (.+)$"),
         lambda m, t: EvictionChosen(m.group(1), EvictionCause.PRESSURE)),
    Rule(_ROUTER, " slot occupied by: ", _r(r"FLM \S+ slot occupied by: (.+?), evicting\b"),
         lambda m, t: EvictionChosen(m.group(1), EvictionCause.PRESSURE)),
    # Eviction-engine lines have no LOG tag, so the tag is a C++ function name
    # (evaluate_servers, on_vram_pressure) that could change; accept any tag.
    Rule(None, "reached evict idle timeout", _r(r"Model (.+?) reached evict idle timeout\b"),
         lambda m, t: EvictionChosen(m.group(1), EvictionCause.IDLE), exclude=_NOT_A_BACKEND),
    Rule(None, "Eviction Engine unloading model: ", _r(r"Eviction Engine unloading model: (.+?) due to\b"),
         lambda m, t: EvictionChosen(m.group(1), EvictionCause.ENGINE), exclude=_NOT_A_BACKEND),
    Rule(None, "VRAM pressure critical (", _r(r"VRAM pressure critical \(" + _NUM + "%"),
         lambda m, t: VramPressure(int(m.group(1))), exclude=_NOT_A_BACKEND),
    Rule(_ROUTER, "Eviction of ", _r(r"Eviction of (.+?) cancelled\b"),
         lambda m, t: EvictionCancelled(m.group(1))),
    Rule(_ROUTER, "Evicting model: ", _r(r"Evicting model: (.+)$"),
         lambda m, t: EvictionStarted(m.group(1))),
    Rule(_ROUTER, "Deferring eviction for model ", _r(r"Deferring eviction for model (.+?) because\b"),
         lambda m, t: EvictionDeferred(m.group(1))),
    Rule(_ROUTER, "Evicted model: ", _r(r"Evicted model: (.+)$"), lambda m, t: Evicted(m.group(1))),
    Rule(_ROUTER, "Unload model called: ", _r(r"Unload model called: (.+)$"),
         lambda m, t: UnloadRequested(m.group(1))),
    Rule(_ROUTER, "Unload all models called", _r(r"Unload all models called"),
         lambda m, t: UnloadRequested(None)),
    Rule(_SERVER, "Unload failed: ", _r(r"Unload failed: (.*?(?:Model not loaded: (.+))?)$"), _unload_failed),
    Rule(_SERVER, " unloaded successfully", _r(r"Model '(.+)' unloaded successfully"),
         lambda m, t: Unloaded(m.group(1))),
    Rule(_SERVER, "All models unloaded", _r(r"All models unloaded\b"), lambda m, t: Unloaded(None)),
    Rule(_ROUTER, "Evicting all models (", _r(r"Evicting all models \(" + _NUM + r" total\)"),
         lambda m, t: EvictAllStarted(int(m.group(1)))),
    Rule(_ROUTER, "Evict all completed", _r(r"Evict all completed\. Remaining tombstoned models: " + _NUM + r"\b"),
         lambda m, t: EvictAllCompleted(int(m.group(1)))),
    # -- crashes and the watchdog -----------------------------------------------------
    Rule(_WATCHDOG, " backend marked unavailable: ",
         _r(r"(\S+) backend marked unavailable: (.*?); .*?\bPID " + _NUM + r"\b(?: \(exit_code=(-?\d{1,9})\))?"),
         _backend_reaped),
    Rule(_ROUTER, "Pruning unavailable backend for model: ",
         _r(r"Pruning unavailable backend for model: (.+?) \(state=([^)]*)\)"),
         lambda m, t: BackendPruned(m.group(1), m.group(2))),
    Rule(_ROUTER, "Existing backend for ", _r(r"Existing backend for (.+?) is unavailable \(state=([^)]*)\)"),
         lambda m, t: BackendPruned(m.group(1), m.group(2))),
    Rule(_ROUTER, "Reloading model after backend watchdog reset: ",
         _r(r"Reloading model after backend watchdog reset: (.+)$"),
         lambda m, t: WatchdogReload(m.group(1))),
)
# fmt: on

# Rows a free-floating tag (None row) must never see, whatever the row's own exclusions.
_NEVER_ANY = _tags(CHILD_TAG, UNTAGGED)

# "2026-08-22 14:05:21.331 [Info] (Router) msg", found anywhere in the line (journald
# prefixes it with "May 05 17:07:23 host lemond[pid]: "); used only off the fast path.
_PREFIXED = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)? \[(\w+)\] \(([^)]*)\)(?: (.*))?$")

_by_tag: dict[str, tuple[Rule, ...]] = {}


def _rules_for(tag: str) -> tuple[Rule, ...]:
    rules = _by_tag.get(tag)
    if rules is None:
        rules = tuple(
            r
            for r in RULES
            if (tag in r.tags if r.tags is not None else tag not in _NEVER_ANY and tag not in r.exclude)
        )
        # Tags come from the wire: cap the memo so garbage cannot grow it without bound.
        if len(_by_tag) < _MAX_CACHED_TAGS:
            _by_tag[tag] = rules
    return rules


def split_line(line: str) -> tuple[str, str]:
    """Split a (single, right-stripped) log line into ``(tag, message)``.

    Untagged lines come back as ``("", line)``.
    """
    # Fast path: the fixed-width aixlog timestamp "YYYY-MM-DD HH:MM:SS.mmm [".
    if len(line) > 26 and line[4] == "-" and line[23] == " " and line[24] == "[" and line[:4].isdigit():
        close = line.find("] (", 25)
        if close != -1:
            start = close + 3
            end = line.find(") ", start)
            if end != -1:
                return line[start:end], line[end + 2 :]
            if line.endswith(")"):
                return line[start:-1], ""
    if line.startswith("["):  # v9: "[Router] Evicting model: X"
        end = line.find("] ")
        if end > 1:
            tag = line[1:end]
            if tag.isidentifier():
                return tag, line[end + 2 :]
    if "] (" in line:  # journald prefix or a timestamp of another width
        m = _PREFIXED.search(line)
        if m is not None:
            return m.group(2), m.group(3) or ""
    return UNTAGGED, line


def parse(line: str) -> Fact | None:
    """Read one lemond log line (or a WebSocket entry's ``line`` field) into a fact.

    Returns ``None`` for lines that say nothing about models, children or lemond itself.
    Never raises.
    """
    if not isinstance(line, str):
        return None
    # One entry is one line; if a caller hands over a raw multi-line chunk, only its first
    # line can be trusted to carry the prefix.
    nl = line.find("\n")
    if nl != -1:
        line = line[:nl]
    line = line.rstrip()
    if not line:
        return None
    tag, message = split_line(line)
    for rule in _rules_for(tag):
        if rule.needle in message:
            m = rule.pattern.match(message)
            if m is not None:
                return rule.build(m, tag)
    return None
