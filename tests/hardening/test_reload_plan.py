"""``plan_reload``: which changed keys apply at once and which keep their running value; and
the new ``[limits]`` keys are validated like the others."""

from __future__ import annotations

import dataclasses

import pytest

from hal0proxy.config import Config, ConfigError, LimitsConfig, PolicyConfig, SlotConfig, parse_config
from hal0proxy.reload import plan_reload

RUNNING = Config(
    listen=("127.0.0.1", 8080),
    admin_token="a",
    slots=(
        SlotConfig(name="primary", model="m1", warm=True, idle_timeout_s=60),
        SlotConfig(name="embed", model="e1", type="embedding"),
    ),
)


def test_nothing_changed() -> None:
    plan = plan_reload(RUNNING, RUNNING)
    assert plan.applied == () and plan.needs_restart == ()
    assert plan.config == RUNNING


def test_live_keys_are_applied() -> None:
    loaded = dataclasses.replace(
        RUNNING,
        api_keys=("k",),
        limits=LimitsConfig(max_body_bytes=10, max_connections=5),
        policy=PolicyConfig(cold_start="reject"),
        slots=(
            dataclasses.replace(RUNNING.slots[0], idle_timeout_s=5, cold_start="reject", ctx_size=2048),
            RUNNING.slots[1],
        ),
    )
    plan = plan_reload(RUNNING, loaded)
    assert plan.needs_restart == ()
    assert set(plan.applied) == {
        "api_keys",
        "limits.max_body_bytes",
        "limits.max_connections",
        "policy.cold_start",
        "slot 'primary'.idle_timeout_s",
        "slot 'primary'.cold_start",
        "slot 'primary'.ctx_size",
    }
    assert plan.config == loaded


def test_restart_only_keys_keep_their_running_values() -> None:
    loaded = dataclasses.replace(
        RUNNING,
        listen=("0.0.0.0", 9000),
        lemond_url="http://127.0.0.1:1",
        admin_token="b",
        slots=(
            dataclasses.replace(RUNNING.slots[0], model="m2", warm=False, idle_timeout_s=1),
            SlotConfig(name="new", model="n1"),
        ),
    )
    plan = plan_reload(RUNNING, loaded)
    assert set(plan.needs_restart) == {
        "listen",
        "lemond_url",
        "admin_token",
        "slot 'primary'.model",
        "slot 'primary'.warm",
        "slot 'embed' removed",
        "slot 'new' added",
    }
    assert plan.applied == ("slot 'primary'.idle_timeout_s",)
    config = plan.config
    assert (config.listen, config.lemond_url, config.admin_token) == (RUNNING.listen, RUNNING.lemond_url, "a")
    assert [s.name for s in config.slots] == ["primary", "embed"]
    primary = config.slots[0]
    assert (primary.model, primary.warm, primary.idle_timeout_s) == ("m1", True, 1)


def test_new_limit_keys_are_validated() -> None:
    config = parse_config(
        {"limits": {"max_connections": 10, "pipeline_buffer_bytes": 4096, "shutdown_grace_s": 0}}, env={}
    )
    assert (config.limits.max_connections, config.limits.pipeline_buffer_bytes) == (10, 4096)
    assert config.limits.shutdown_grace_s == 0
    with pytest.raises(ConfigError) as err:
        parse_config({"limits": {"max_connections": 0, "pipeline_buffer_bytes": True, "shutdown_grace_s": -1}}, env={})
    lines = str(err.value).splitlines()
    assert "limits.max_connections: must be > 0 (got 0)" in lines
    assert "limits.pipeline_buffer_bytes: expected int, got bool" in lines
    assert "limits.shutdown_grace_s: must be >= 0 (got -1)" in lines
