"""The /metrics body encoded by sections is prometheus_client's own encoding of the snapshot,
whichever section changed since the last scrape."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from glyph_guard.exporter.exposition import Exposition
from glyph_guard.exporter.metrics import SnapshotCollector
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard.exporter.snapshot import (
    ComponentLiveness,
    ProbeKind,
    Readings,
)
from glyph_guard_demo.testkit.fake_nvml import GIB, FakeDevice, FakeNvml

OPENMETRICS = "application/openmetrics-text;version=1.0.0"
TEXT = "text/plain;version=0.0.4"


class Source:
    """The snapshot a scrape sees; a test replaces it as a sampler would."""

    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def __call__(self) -> Readings:
        return self.readings


def readings(fake: FakeNvml) -> Readings:
    return Readings(
        liveness=(ComponentLiveness("api", processes=2, rss_bytes=GIB, pids=frozenset({7, 8})),),
        gpu=NvmlReader(fake).read(),
        probe_kinds=(ProbeKind("api", "health", "http"),),
    )


def expected(source: Source, accept: str) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source))
    return openmetrics_latest(registry) if accept == OPENMETRICS else generate_latest(registry)


@pytest.mark.parametrize("accept", [TEXT, OPENMETRICS])
def test_each_change_is_served_and_equals_the_registry_encoding(accept: str) -> None:
    fake = FakeNvml([FakeDevice("GPU-0"), FakeDevice("GPU-1")])
    source = Source(readings(fake))
    exposition = Exposition(source)
    body, content_type = exposition.body(accept)
    assert body == expected(source, accept)
    assert content_type.startswith(accept.split(";", maxsplit=1)[0])
    assert exposition.body(accept)[0] == body  # served again, unchanged

    # a GPU's load alone changes (its health section does not)
    fake.devices[0].used = 3 * GIB
    source.readings = replace(source.readings, gpu=NvmlReader(fake).read())
    assert exposition.body(accept)[0] == expected(source, accept)
    assert b"glyph_gpu_memory_used_bytes" in body

    # a health field alone changes
    fake.devices[1].pcie_replays = 5
    fake.devices[1].clock_event_reasons = 0x8  # HwSlowdown
    source.readings = replace(source.readings, gpu=NvmlReader(fake).read())
    changed = exposition.body(accept)[0]
    assert changed == expected(source, accept)
    assert changed != body

    # a sampler replaces another section's readings with equal ones, then with new ones
    source.readings = replace(source.readings, liveness=tuple(source.readings.liveness))
    assert exposition.body(accept)[0] == changed
    api = replace(source.readings.liveness[0], processes=3)
    source.readings = replace(source.readings, liveness=(api,))
    assert exposition.body(accept)[0] == expected(source, accept)
    if accept == OPENMETRICS:
        assert exposition.body(accept)[0].count(b"# EOF") == 1
