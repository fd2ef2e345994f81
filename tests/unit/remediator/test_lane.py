"""A component's lane: the queue, the single-flight slot and the moves between, as a table."""

from __future__ import annotations

import asyncio
import sys

import pytest

from glyph_guard.common.config import Budget, Component, parse_config
from glyph_guard.remediator.actions.base import Started
from glyph_guard.remediator.lane import Conflict, Lane, Trigger
from glyph_guard.remediator.policy import ComponentState
from glyph_guard.remediator.store.records import DecisionRow

NOW = 5_000.0


def component() -> Component:
    config = parse_config(
        {
            "components": {
                "api": {
                    "match": {"cmdline": "never-matches-anything-x9"},
                    "caches": ["/tmp/glyph-lane-test/**"],
                    "remediation": {
                        "actions": ["restart", "clean_cache"],
                        "restart": {"start": [sys.executable, "-c", "pass"]},
                    },
                }
            }
        }
    )
    return config.components[0]


def trigger(fingerprint: str = "a") -> Trigger:
    return Trigger(
        "alert", DecisionRow("acted", "acted", fingerprint=fingerprint, starts_at="t"), NOW
    )


def test_lane_transitions() -> None:
    lane = Lane(component())
    assert lane.next_wanted() is None
    assert lane.wait("clean_cache", trigger("c"))
    assert lane.wait("restart", trigger("r"))
    assert not lane.wait("restart", trigger("later"))  # the first trigger stays
    assert lane.next_wanted() == ("restart", trigger("r"))  # a restart goes before cleaning
    assert lane.view().waiting == {"restart": ("r", "t"), "clean_cache": ("c", "t")}

    running = lane.launch("restart", trigger("r"), 11, NOW)
    assert (lane.busy, lane.view().busy_action_id, list(lane.wanted)) == (
        "restart",
        11,
        ["clean_cache"],
    )
    assert lane.next_wanted() is None  # single flight
    with pytest.raises(Conflict, match="restart of api is running"):
        lane.launch("clean_cache", trigger(), 12, NOW)
    assert running.started_at == NOW

    started = Started(pid=42, token="t")
    lane.ended(running, "healthy", started, Budget(), NOW + 5, 123.0)
    assert (lane.busy, lane.state.failures, lane.started, lane.last_action_at) == (
        None,
        0,
        started,
        123.0,
    )
    assert (lane.state.last_restart_at, lane.state.healthy_since) == (NOW + 5, NOW + 5)
    assert lane.next_wanted() == ("clean_cache", trigger("c"))
    assert lane.drop(["clean_cache", "restart"]) == ["clean_cache"]
    assert lane.next_wanted() is None


def test_a_recovery_check_holds_the_slot_and_keeps_the_action_wanted() -> None:
    lane = Lane(component())
    lane.wait("restart", trigger("r"))
    checking = lane.launch("restart", trigger("r"), None, NOW)
    assert (lane.busy, list(lane.wanted), lane.next_wanted()) == ("restart", ["restart"], None)
    stale = lane.running
    lane.finish(checking)
    assert lane.busy is None and lane.next_wanted() == ("restart", trigger("r"))
    assert stale is not None
    lane.launch("restart", trigger("r"), 3, NOW)
    lane.finish(stale)  # a slot another action holds now is left alone
    assert lane.busy == "restart"


def test_a_resume_or_a_new_wish_wakes_the_lane() -> None:
    async def scenario() -> None:
        lane = Lane(component())
        lane.set_state(ComponentState(), wake=True)
        await asyncio.wait_for(lane.woken(None), 5)
        lane.wait("restart", trigger())
        await asyncio.wait_for(lane.woken(None), 5)

    asyncio.run(scenario())


def test_a_cleaning_that_ends_leaves_the_state_and_the_started_process_alone() -> None:
    lane = Lane(component())
    started = Started(pid=7, token="s")
    restart = lane.launch("restart", trigger(), 1, NOW)
    lane.ended(restart, "failed", started, Budget(), NOW + 1, 100.0)
    after_restart = lane.state
    cleaning = lane.launch("clean_cache", trigger(), 2, NOW + 2)
    lane.ended(cleaning, "failed", None, Budget(), NOW + 3, 200.0)
    assert (lane.state, lane.started, lane.last_action_at) == (after_restart, started, 200.0)
    assert after_restart.failures == 1 and after_restart.healthy_since is None
