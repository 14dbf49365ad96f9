"""Hold the log parser to every line the real lemond writes.

A line the parser turns into a fact is understood. A line it ignores is fine as long as it
says nothing about a model, a child pid or a child port; if it does, either the parser
lacks a rule (wording drift) or the line is listed in ``KNOWN_IRRELEVANT`` with the reason
it carries no routing information. Anything else is reported, so a reworded lemond line
fails a test instead of silently blinding the proxy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hal0proxy.lemond.parser import RULES, parse, split_line

# (tag, message regex, reason). The regex is matched at the start of the message.
KNOWN_IRRELEVANT: tuple[tuple[str, str, str], ...] = (
    ("Process", r"", "llama-server's own output; the parser reads only its listening line, which has a rule"),
    ("Server", r"(GET|POST|DELETE|PUT|PATCH) \S+ - \d{3}", "an access-log line; the request, not the model state"),
    ("Server", r"Model already loaded: ", "a request used a model that is already loaded: no state change"),
    ("Router", r"Model already loaded, updating access time", "a load of a loaded model: no state change"),
    ("ModelManager", r"", "the model catalogue (discovery, registration): what exists, not what is loaded"),
    ("LlamaCpp", r"Using LlamaCpp Backend: ", "which backend flavour a spawn uses, not where it listens"),
    ("load", r"Using GGUF: ", "which model file a load reads (v10.7.0, seen in chaos): not where the child listens"),
    (
        "ProcessManager",
        r"(Process already exited; reaped PID \d+|Process PID \d+ (was already gone|is no longer an owned child))",
        "said while terminating a child that is being unloaded: the unload lines (parsed) carry the state change",
    ),
    ("Server", r"Pin/unpin failed: ", "the answer to one /internal/pin call (the caller sees it too): no state change"),
    (
        "Router",
        r"Unloading: ",
        "v10.7.0 names each model of an evict-all; the closing 'All models unloaded' line (parsed) drops them all",
    ),
)

_COMPILED = tuple((tag, re.compile(pattern), reason) for tag, pattern, reason in KNOWN_IRRELEVANT)
# The aixlog timestamp: its digits must not be mistaken for a pid or a port.
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")


@dataclass(frozen=True)
class Unexplained:
    line: str
    mentions: str


def _mention(text: str, tokens: Iterable[str]) -> str | None:
    for token in tokens:
        if re.search(r"(?<![\w.])" + re.escape(token) + r"(?![\w])", text):
            return token
    return None


def unexplained_lines(
    lines: Iterable[str], *, models: Iterable[str], pids: Iterable[int], ports: Iterable[int]
) -> list[Unexplained]:
    """Lines the parser ignores although they name a model, a child pid or a child port."""
    names = set(models)
    names |= {f"extra.{m}" for m in names}
    tokens = sorted(names, key=len, reverse=True) + [str(p) for p in pids] + [str(p) for p in ports]
    out: list[Unexplained] = []
    for raw in lines:
        line = raw.rstrip()
        if not line or parse(line) is not None:
            continue
        text = _STAMP.sub("", line)
        token = _mention(text, tokens)
        if token is None:
            continue
        tag, message = split_line(line)
        if any(tag == t and pattern.match(message) for t, pattern, _ in _COMPILED):
            continue
        if misprefixed(line):
            continue
        out.append(Unexplained(line, token))
    return out


def misprefixed(line: str) -> bool:
    """lemond v10.7.0's logger now and then prints a line under another thread's tag, or with
    its timestamp format unexpanded (``%Y-%m-%d %H:%M:%S.#ms [Info] (log) …``): a race in its
    log prefix. The message itself is one a parser rule reads under its right tag, so the
    wording has not drifted (what this check exists to catch); the proxy learns that fact
    from its ``/v1/health`` reconciliation instead. The fixtures print every such line."""
    _, message = split_line(line)
    if message == line:  # a prefix split_line does not know (the unexpanded timestamp)
        close = line.find(") ")
        message = line[close + 2 :] if close != -1 else line
    return any(rule.needle in message and rule.pattern.match(message) for rule in RULES)
