"""Schemathesis fuzzing of the remediator's OpenAPI schema over real HTTP: never a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glyph_guard_demo.testkit.doubles.harness import TOKEN, Remediator, make_config, tripwire


def test_fuzzed_requests_never_get_a_5xx(tmp_path: Path) -> None:
    _, component = tripwire(tmp_path)
    config = make_config(tmp_path, {"api": component}, max_body_bytes=65536)
    with Remediator(config, dry_run=True) as rem:
        schema = schemathesis.openapi.from_dict(rem.http.get("/openapi.json").json())
        cases = st.one_of(*(schema.as_strategy(mode) for mode in schemathesis.GenerationMode))
        seen: list[int] = []

        @given(case=cases)
        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def never_5xx(case: Any) -> None:
            response = case.call(base_url=rem.url, headers={"Authorization": f"Bearer {TOKEN}"})
            seen.append(response.status_code)
            assert response.status_code < 500, (case.path, case.body, response.text)

        never_5xx()
        assert any(code == 202 for code in seen)
        assert any(code == 422 for code in seen)
        assert rem.actions() == []
