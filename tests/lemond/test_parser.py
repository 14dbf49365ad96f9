"""The log-line parser against the corpus, plus properties that hold for any input."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.lemond import facts as F
from hal0proxy.lemond.parser import RULES, parse, split_line
from tests.lemond.corpus import EXTRA_CASES, FIXTURE_CASES, fixture_lines


def test_corpus_covers_every_fixture_line() -> None:
    lines = fixture_lines()
    assert len(lines) > 150  # the fixture was found and read
    assert [line for line, _ in FIXTURE_CASES] == lines


@pytest.mark.parametrize(("line", "expected"), FIXTURE_CASES + EXTRA_CASES, ids=lambda v: repr(v)[:80])
def test_corpus(line: str, expected: F.Fact | None) -> None:
    assert parse(line) == expected


def test_stdout_only_lines_give_none() -> None:
    assert parse("Waiting for llama-server to be ready (timeout: 600s)...") is None


def test_every_rule_is_exercised_by_the_corpus() -> None:
    # A row no corpus line reaches is either dead or untested.
    produced = {type(fact) for _, fact in FIXTURE_CASES + EXTRA_CASES if fact is not None}
    kinds = {getattr(F, name) for name in F.__dict__ if isinstance(getattr(F, name), type)}
    fact_kinds = {k for k in kinds if k.__module__ == F.__name__ and k is not F.EvictionCause}
    assert fact_kinds - produced == set()
    assert len(RULES) >= len(fact_kinds)


def test_entry_line_field_and_split() -> None:
    line = (
        "2026-08-22 14:05:26.902 [Info] (BackendWatchdog) Started watchdog for llama-server"
        " using http://127.0.0.1:8001/health (streaming=on, non_streaming=on)"
    )
    assert split_line(line)[0] == "BackendWatchdog"
    assert parse(line) == F.PortAnnounced(port=8001, serving=True, server="llama-server")
    assert split_line("[Router] Evicting model: X") == ("Router", "Evicting model: X")
    assert split_line("plain text") == ("", "plain text")


@pytest.mark.parametrize("value", [None, 42, b"[Router] Evicted model: x", ["x"]])
def test_non_str_input_gives_none(value: object) -> None:
    assert parse(value) is None  # type: ignore[arg-type]


_PREFIXES = st.sampled_from(
    [
        "",
        "[Router] ",
        "2026-08-22 14:05:21.331 [Info] (Router) ",
        "2026-08-22 14:05:21.331 [Warn] (Process) ",
        "2026-08-22 14:05:21.331 [Info] (BackendWatchdog) ",
        "May 05 17:07:23 h lemond[1]: 2026-05-05 17:07:23.985 [Info] (Server) ",
        "2026-08-22 14:05:21.331 [Info] (",
        "2026-08-22 14:05:21.331 [Info] (ProcessManager) ",
    ]
)
_NEEDLES = st.sampled_from([r.needle for r in RULES])
_TAIL = st.text(alphabet=st.sampled_from("0123456789 :()[]/.-_abcXYZ%=;!\n\r\t"), max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(line: str) -> None:
    result = parse(line)
    assert result is None or isinstance(result, F.Fact)


@settings(max_examples=600, deadline=None)
@given(_PREFIXES, st.lists(st.one_of(_NEEDLES, _TAIL), max_size=6))
def test_near_miss_lines_never_raise(prefix: str, parts: list[str]) -> None:
    # Lines built from real prefixes and the rows' own needles reach the regexes and the
    # int() conversions, unlike uniformly random text.
    result = parse(prefix + "".join(parts))
    assert result is None or isinstance(result, F.Fact)


def test_parse_is_fast_enough_for_every_stream_line() -> None:
    lines = [line for line, _ in FIXTURE_CASES] * 20
    start = time.perf_counter()
    for line in lines:
        parse(line)
    per_line_us = (time.perf_counter() - start) / len(lines) * 1e6
    # Generous bound for a shared, loaded machine; typical is a few microseconds.
    assert per_line_us < 100, per_line_us
