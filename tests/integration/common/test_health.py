"""The one health model: which probes count (a canary not while the engine sleeps), each
against its own expect_status; the same verdict from the async and the blocking check, and
from the remediator's verify / healthy_now, against the real stand-in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from glyph_guard.common.config import Component, parse_config
from glyph_guard.common.health import Health, check, check_blocking, health_of, served_model
from glyph_guard.remediator.actions.verify import healthy_now, verify
from glyph_guard_demo.testkit.standin_fixtures import admin, api


def component(port: int, *probes: dict[str, object], engine: bool = True) -> Component:
    body: dict[str, object] = {"match": {"cmdline": rf"standin\s+api\s+--port\s+{port}\b"}}
    body.update(port=port, probes=list(probes))
    if engine:
        body["engine"] = {}
    return parse_config({"components": {"api": body}}).components[0]


HEALTH = {"name": "health", "path": "/health"}
MISSING = {"name": "missing", "path": "/nope", "expect_status": [404]}
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


def test_every_checker_gives_the_same_verdict(tmp_path: Path) -> None:
    with api(tmp_path) as running:
        config = component(running.port, HEALTH, MISSING, CANARY, OFF)

        def verdicts() -> tuple[Health, Health, bool]:
            blocking, _ = check_blocking(config)

            async def both() -> tuple[Health, bool]:
                async with httpx.AsyncClient(trust_env=False) as client:
                    (health, _), now = await asyncio.gather(
                        check(client, config), healthy_now(client, config)
                    )
                    return health, now

            asynchronous, now = asyncio.run(both())
            return blocking, asynchronous, now

        # The canary asks for the served model (none configured) and 404 is what MISSING expects.
        assert verdicts() == (Health(True), Health(True), True)
        assert httpx.post(f"{running.url}/sleep", timeout=5).status_code == 200
        asleep = Health(True, (), asleep=True)
        assert verdicts() == (asleep, asleep, True)
        assert httpx.post(f"{running.url}/wake_up", timeout=5).status_code == 200
        assert admin(running.url, fault="hang").status_code == 202
        hung = Health(False, ("smoke",))
        assert verdicts() == (hung, hung, False)

        async def verified() -> str:
            async with httpx.AsyncClient(trust_env=False) as client:
                return (await verify(client, config, 0.5)).detail

        assert "probe smoke still failing" in asyncio.run(verified())
        assert admin(running.url, fault="clear").status_code == 202
