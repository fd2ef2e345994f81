"""Hostile services against the probes: compression bombs, huge bodies, trickled headers."""

from __future__ import annotations

import asyncio
import functools
import resource
import socket
import time
import zlib
from collections.abc import Callable

import httpx

from glyph_guard.common.config import parse_config
from glyph_guard.common.health import engine_asleep
from glyph_guard.common.probes import (
    ENGINE_METRICS_MAX_BYTES,
    MAX_BODY_BYTES,
    ProbeResult,
    run_probe,
)
from glyph_guard.exporter.progress import EngineWatch
from glyph_guard_demo.testkit.exporter_fixtures import deployment, running_exporter, scrape
from glyph_guard_demo.testkit.support import raw_server, sample, wait_for


@functools.cache
def gzip_bomb() -> bytes:
    """About 0.6 MB of gzip that inflates to 600 MB of zeros (compressed a MiB at a time)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(600)) + packer.flush()


def _headers(extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}\r\n".encode()


def bomb(conn: socket.socket) -> None:
    body = gzip_bomb()
    conn.sendall(_headers(f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n") + body)


def chunked_huge(conn: socket.socket) -> None:
    """Identity body, no Content-Length: 4 MiB in chunks, more than the cap on the wire."""
    conn.sendall(_headers("Transfer-Encoding: chunked\r\n"))
    chunk = b"x" * 65536
    for _ in range(64):
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.sendall(b"0\r\n\r\n")


def trickle(conn: socket.socket) -> None:
    """Response headers at one byte per 0.1 s: every read gets something, none ever ends."""
    for byte in _headers("X-Filler: " + "a" * 500 + "\r\n"):
        conn.sendall(bytes([byte]))
        time.sleep(0.1)


def probe(port: int, kind: str = "http", timeout: float = 2.0) -> ProbeResult:
    component = parse_config(
        {
            "components": {
                "svc": {
                    "match": {"cmdline": "no-such-process-xyz"},
                    "port": port,
                    "probes": [
                        {"name": "p", "kind": kind, "path": "/", "timeout_seconds": timeout}
                    ],
                }
            }
        }
    ).components[0]

    async def run() -> ProbeResult:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await run_probe(client, component, component.probes[0])

    return asyncio.run(run())


def test_a_compression_bomb_fails_the_probe_without_inflating_it() -> None:
    gzip_bomb()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with raw_server(bomb) as port:
        for kind in ("http", "canary"):
            result = probe(port, kind)
            assert not result.success
            assert result.error == f"the answer inflates to more than {MAX_BODY_BYTES} bytes"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, f"RSS high-water mark grew {grown_kib} KiB"


def test_a_body_over_the_cap_on_the_wire_fails_the_probe() -> None:
    with raw_server(chunked_huge) as port:
        result = probe(port)
    assert not result.success
    assert result.status == 200
    assert result.error == f"the answer is larger than {MAX_BODY_BYTES} bytes"


def test_trickled_headers_hit_one_total_deadline() -> None:
    with raw_server(trickle) as port:
        started = time.monotonic()
        result = probe(port, timeout=1.0)
        elapsed = time.monotonic() - started
    assert not result.success
    assert result.error == "timed out after 1 s"
    assert elapsed < 3.0


def test_one_slow_target_does_not_delay_the_others_results() -> None:
    with raw_server(trickle) as slow:

        def svc(port: int) -> dict[str, object]:
            return {
                "match": {"cmdline": "no-such-process-xyz"},
                "port": port,
                "probes": [{"name": "p", "path": "/", "timeout_seconds": 6}],
            }

        with raw_server(bomb) as fast:
            config = deployment({"slow": svc(slow), "fast": svc(fast)}, probes=0.2)
            with running_exporter(config) as exporter:

                def counts() -> tuple[float, float] | None:
                    samples = scrape(exporter)
                    name = "glyph_probe_duration_seconds_count"
                    fast_n = sample(samples, name, component="fast", probe="p") or 0.0
                    slow_n = sample(samples, name, component="slow", probe="p") or 0.0
                    return (fast_n, slow_n) if fast_n >= 5 else None

                _, slow_n = wait_for(counts, 5)  # five fast answers take 1 s on a quiet machine
                assert slow_n == 0  # its first attempt is still trickling in
                failures = "glyph_probe_consecutive_failures"
                wait_for(
                    lambda: sample(scrape(exporter), failures, component="slow", probe="p"), 10
                )


def asleep_exposition(size: int) -> bytes:
    """An exposition of about size bytes whose engine sleeps (padded with comment lines)."""
    state = (
        b'# TYPE vllm:engine_sleep_state gauge\nvllm:engine_sleep_state{sleep_state="awake"} 0\n'
    )
    filler = b"# " + b"x" * 1021 + b"\n"
    return state + filler * max(0, (size - len(state)) // len(filler))


def metrics_answer(body: bytes) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.sendall(_headers(f"Content-Length: {len(body)}\r\nConnection: close\r\n") + body)

    return answer


def both_readers(port: int) -> tuple[bool, bool | None]:
    """The remediator's sleep check and the exporter's engine watch, on the same endpoint."""
    component = parse_config(
        {
            "components": {
                "api": {"match": {"cmdline": "no-such-process-xyz"}, "port": port, "engine": {}}
            }
        }
    ).components[0]

    async def run() -> tuple[bool, bool | None]:
        async with httpx.AsyncClient(trust_env=False) as client:
            asleep = await engine_asleep(client, component)
            return asleep, (await EngineWatch(component).read(client, 0.0)).asleep

    return asyncio.run(run())


def test_the_exporter_and_the_remediator_read_engine_metrics_alike() -> None:
    # Between the probes' cap and the engine metrics' cap: both read it, both see the sleep.
    with raw_server(metrics_answer(asleep_exposition(2 * MAX_BODY_BYTES))) as port:
        assert both_readers(port) == (True, True)
    # Over the cap, or a compression bomb: neither reads it (not asleep, nothing claimed).
    with raw_server(metrics_answer(asleep_exposition(ENGINE_METRICS_MAX_BYTES + 4096))) as port:
        assert both_readers(port) == (False, None)
    with raw_server(bomb) as port:
        assert both_readers(port) == (False, None)
