"""The load generator: streams of long generations and queue bursts against a vLLM-shaped API,
for false-restart tests (a busy, healthy engine must never be taken for a hung one)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx

from glyph_guard_demo.standin.names import STAND_IN_NOTICE


@dataclass(frozen=True)
class LoadOptions:
    """Everything `glyph-standin load` was started with."""

    url: str = "http://127.0.0.1:5002"
    model: str = "glyph"
    concurrency: int = 4
    max_tokens: int = 1000
    duration: float = 60.0
    burst_every: float = 0.0
    burst_size: int = 0
    prompt: str = "Summarise the rendered pages in detail."


@dataclass
class Tally:
    """What happened to the requests sent."""

    ok: int = 0
    failed: int = 0
    tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1


async def _one(
    client: httpx.AsyncClient, options: LoadOptions, max_tokens: int, tally: Tally
) -> None:
    body = {
        "model": options.model,
        "messages": [{"role": "user", "content": options.prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    url = options.url.rstrip("/") + "/v1/chat/completions"
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                tally.fail(f"HTTP {response.status_code}")
                return
            tokens = 0
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[len("data: ") :])
                    if "error" in event:
                        tally.fail(str(event["error"].get("code")))
                        return
                    tokens += sum(1 for c in event.get("choices", []) if c["delta"].get("content"))
            tally.ok += 1
            tally.tokens += tokens
    except httpx.HTTPError as exc:
        tally.fail(type(exc).__name__)


async def _stream_forever(
    client: httpx.AsyncClient, options: LoadOptions, deadline: float, tally: Tally
) -> None:
    while time.monotonic() < deadline:
        await _one(client, options, options.max_tokens, tally)


async def _bursts(
    client: httpx.AsyncClient, options: LoadOptions, deadline: float, tally: Tally
) -> None:
    while time.monotonic() + options.burst_every < deadline:
        await asyncio.sleep(options.burst_every)
        burst = (_one(client, options, 64, tally) for _ in range(options.burst_size))
        await asyncio.gather(*burst)


async def _main(options: LoadOptions) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + options.duration
    timeout = httpx.Timeout(30.0, read=None)  # a long generation streams for minutes
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        tasks = [
            _stream_forever(client, options, deadline, tally) for _ in range(options.concurrency)
        ]
        if options.burst_every > 0 and options.burst_size > 0:
            tasks.append(_bursts(client, options, deadline, tally))
        await asyncio.gather(*tasks)
    return tally


def run_load(options: LoadOptions) -> int:
    """Generate load until the duration has passed; prints a JSON summary; 1 if any failed."""
    print(f"{STAND_IN_NOTICE}: load generator against {options.url}", flush=True)
    try:
        tally = asyncio.run(_main(options))
    except KeyboardInterrupt:
        return 130
    summary = {
        "ok": tally.ok,
        "failed": tally.failed,
        "tokens": tally.tokens,
        "errors": tally.errors,
    }
    print(json.dumps(summary), flush=True)
    return 1 if tally.failed else 0
