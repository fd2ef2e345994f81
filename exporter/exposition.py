"""The /metrics body: each section of a snapshot encoded once for as long as its inputs hold."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from glyph_guard.exporter.metrics import sections
from glyph_guard.exporter.snapshot import Readings

OPENMETRICS_EOF = b"# EOF\n"


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class Exposition:
    """Encodes the latest snapshot with prometheus_client's encoders, section by section.

    Samplers replace their readings every few seconds, a section's text is a pure function of
    its readings: a section whose readings equal those it was last encoded from is served
    from that text (scrapes faster than the samplers, a static or quiet section).
    """

    def __init__(self, source: Callable[[], Readings]) -> None:
        self._source = source
        # (section, content type) -> (the readings it was encoded from, the text)
        self._encoded: dict[tuple[str, str], tuple[object, bytes]] = {}

    def body(self, accept: str) -> tuple[bytes, str]:
        """The body and its content type for a request's Accept header."""
        encoder, content_type = choose_encoder(accept)
        parts = []
        for name, inputs, make in sections(self._source()):
            key = (name, content_type)
            cached = self._encoded.get(key)
            if cached is not None and cached[0] == inputs:
                parts.append(cached[1])
                continue
            text = encoder(_Families(make()))
            text = text.removesuffix(OPENMETRICS_EOF)
            self._encoded[key] = (inputs, text)  # a race encodes twice, never wrongly
            parts.append(text)
        if content_type.startswith("application/openmetrics-text"):
            parts.append(OPENMETRICS_EOF)
        return b"".join(parts), content_type
