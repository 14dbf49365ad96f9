"""The log-line check the real-lemond fixtures run at teardown, on fixed lines (no lemond)."""

from __future__ import annotations

from tests.real_lemond.lines import unexplained_lines

MODELS = ("alpha", "beta")


def check(*lines: str) -> list[str]:
    return [u.line for u in unexplained_lines(lines, models=MODELS, pids=[4242], ports=[8001])]


def test_lines_with_a_rule_pass() -> None:
    assert (
        check(
            "2026-11-29 07:50:00.123 [Info] (LlamaCpp) Loading model: extra.alpha",
            "2026-11-29 07:50:00.124 [Info] (ProcessManager) Process started successfully, PID: 4242",
            "2026-11-29 07:50:02.000 [Info] (Router) Slot limit reached for type llm, evicting LRU: extra.alpha",
        )
        == []
    )


def test_reworded_line_naming_a_model_fails() -> None:
    drifted = "2026-11-29 07:50:00.123 [Info] (Router) Kicking out model: extra.alpha"
    assert check(drifted) == [drifted]


def test_pid_or_port_in_an_unknown_line_fails() -> None:
    assert len(check("2026-11-29 07:50:00.1 [Warn] (Router) backend 4242 gone", "x [Info] (Router) on 8001")) == 2


def test_lines_naming_nothing_and_known_chatter_pass() -> None:
    assert (
        check(
            "2026-11-29 07:50:00.123 [Info] (Router) Unload all models called",
            "2026-11-29 07:50:00.123 [Info] (Process) srv load_model: loading model '/m/alpha.gguf'",
            "2026-11-29 07:50:00.123 [Info] (Server) POST /api/v1/load - 200 OK",
            "2026-11-29 07:50:00.123 [Info] (Router) Model 'alphabet' is not a model name here",
        )
        == []
    )


def test_a_known_message_under_a_garbled_prefix_is_not_wording_drift() -> None:
    # lemond v10.7.0's logger race: another thread's tag, or the timestamp format unexpanded.
    garbled = (
        "2026-11-29 13:24:48.951 [Info] (WebSocket) Process started successfully, PID: 4242",
        "%Y-%m-%d %H:%M:%S.#ms [Info] (log) Model loaded on port 8001",
    )
    assert check(*garbled) == []
    # The same prefixes on a message no rule reads still fail.
    unknown = "2026-11-29 13:24:48.951 [Info] (WebSocket) Child 4242 went somewhere"
    assert check(unknown, "%Y-%m-%d %H:%M:%S.#ms [Info] (log) Moved alpha elsewhere") == [
        unknown,
        "%Y-%m-%d %H:%M:%S.#ms [Info] (log) Moved alpha elsewhere",
    ]
