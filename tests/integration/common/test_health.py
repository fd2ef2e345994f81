"""The one health model against the real stand-in: which probes count (a canary not while the
engine sleeps), each against its own expect_status, the canary asking for the served model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from glyph_guard.common.config import Component, parse_config
from glyph_guard.common.health import Health, check, health_of, served_model
from glyph_guard.common.probes import ProbeResult
from glyph_guard_demo.testkit.standin_fixtures import admin, api


def component(port: int, *probes: dict[str, object], engine: bool = True) -> Component:
    body: dict[str, object] = {"match": {"cmdline": rf"standin\s+api\s+--port\s+{port}\b"}}
    body.update(port=port, probes=list(probes))
    if engine:
        body["engine"] = {}
    return parse_config({"components": {"api": body}}).components[0]


HEALTH = {"name": "health", "path": "/health"}
MISSING = {"name": "missing", "path": "/nope", "expect_status": [404]}
WRONG = {"name": "wrong", "path": "/nope"}  # expects 200
CANARY = {"name": "smoke", "kind": "canary", "path": "/v1/chat/completions", "timeout_seconds": 1}
OFF = {"name": "off", "path": "/nope", "enabled": False}


@pytest.mark.parametrize(
    ("passed", "asleep", "verdict"),
    [
        ({"health": True, "smoke": True}, False, Health(True)),
        ({"health": True, "smoke": False}, False, Health(False, ("smoke",))),
        ({"health": True, "smoke": False}, True, Health(True, (), asleep=True)),
        ({"health": False, "smoke": True}, True, Health(False, ("health",), asleep=True)),
        ({"smoke": True}, False, Health(False, ("health",))),  # no result has not passed
    ],
)
def test_health_of(passed: dict[str, bool], asleep: bool, verdict: Health) -> None:
    assert health_of(component(1, HEALTH, CANARY, OFF), passed, asleep=asleep) == verdict


def test_served_model_reads_the_first_id_and_nothing_else() -> None:
    assert served_model(b'{"data": [{"id": "glyph"}, {"id": "other"}]}') == "glyph"
    for body in (b"", b"[]", b'{"data": []}', b'{"data": [{"id": 3}]}', b"not json"):
        assert served_model(body) is None


def probed(config: Component) -> tuple[Health, dict[str, tuple[bool, int | None]]]:
    """check() once; each probe that ran, as (success, HTTP status)."""

    async def once() -> tuple[Health, list[ProbeResult]]:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await check(client, config)

    health, results = asyncio.run(once())
    return health, {r.probe: (r.success, r.status) for r in results}


def test_check_against_the_stand_in_awake_asleep_and_hung(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        config = component(running.port, HEALTH, MISSING, CANARY, OFF)
        # The canary names no model: it asks for the one /v1/models serves (another is a 404).
        assert probed(config) == (
            Health(True),
            {"health": (True, 200), "missing": (True, 404), "smoke": (True, 200)},
        )
        named = component(running.port, HEALTH, {**CANARY, "model": "not-served"})
        assert probed(named) == (
            Health(False, ("smoke",)),
            {"health": (True, 200), "smoke": (False, 404)},
        )
        assert probed(component(running.port, HEALTH, WRONG)) == (
            Health(False, ("wrong",)),
            {"health": (True, 200), "wrong": (False, 404)},
        )

        # Asleep on purpose: the canary is not asked (the engine refuses requests by design),
        # unless the component has no engine metrics to say that it sleeps.
        assert httpx.post(f"{running.url}/sleep", timeout=5).status_code == 200
        assert probed(config) == (
            Health(True, (), asleep=True),
            {"health": (True, 200), "missing": (True, 404)},
        )
        no_engine = component(running.port, HEALTH, CANARY, engine=False)
        health, results = probed(no_engine)
        assert health == Health(False, ("smoke",)) and not results["smoke"][0]
        assert httpx.post(f"{running.url}/wake_up", timeout=5).status_code == 200

        # Hung: /health still answers; the canary gets no answer within its timeout.
        assert admin(running.url, fault="hang").status_code == 202
        assert probed(config) == (
            Health(False, ("smoke",)),
            {"health": (True, 200), "missing": (True, 404), "smoke": (False, None)},
        )
        assert admin(running.url, fault="clear").status_code == 202
        assert probed(config)[0] == Health(True)
