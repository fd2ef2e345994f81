"""Planned against immediate restarts: client requests failed by each, under bursty load.

Each trial starts its own stack on loopback: a stand-in api (vLLM-shaped /metrics and /load)
and a real glyph-remediator subprocess with the shipped defaults. A client sends bursts of
overlapping chat requests, separated by idle gaps drawn from --gap-min..--gap-max seconds
(seeded); one leak alert (GlyphMemoryLeak, with the forecast's lower bound) is delivered in
the middle of the first burst, labelled `urgency: planned` in the planned trial and without
it in the immediate one. Same load and seed in both trials, nothing reset or tuned between
them beyond each trial starting its own stack. Prints, per trial, the requests sent, those
that failed, those that failed while the restart ran, and when the restart began. Every
process it starts is ended by process group; the run stops by itself (bounded bursts, a
timeout per trial).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from glyph_guard_demo.testkit.doubles.harness import alert, payload
from glyph_guard_demo.testkit.standin_fixtures import standin_api_argv
from glyph_guard_demo.testkit.support import free_port, spawned

TOKEN = "bench-token"
STEP_SECONDS = 0.02  # the stand-in's time per token
LOWER_BOUND = "14400"  # the forecast says at least 4 h left: far from urgent


@dataclass(frozen=True)
class Sent:
    began: float  # wall clock
    ended: float
    ok: bool


@dataclass(frozen=True)
class Trial:
    mode: str
    sent: list[Sent]
    alert_at: float
    action: dict[str, Any] | None

    def failed(self) -> list[Sent]:
        return [s for s in self.sent if not s.ok]

    def failed_by_restart(self) -> list[Sent]:
        if self.action is None or self.action["finished_at"] is None:
            return []
        start, end = self.action["started_at"], self.action["finished_at"]
        return [s for s in self.failed() if s.began <= end and s.ended >= start]


def write_config(workdir: Path, port: int, api_port: int) -> Path:
    (workdir / "token").write_text(TOKEN)
    (workdir / "token").chmod(0o600)
    config = {
        "components": {
            "api": {
                "match": {
                    "cmdline": rf"-m\s+glyph_guard_demo\.standin\s+api\s+--port\s+{api_port}(\s|$)"
                },
                "port": api_port,
                "probes": [{"name": "health", "path": "/health"}],
                "engine": {"path": "/metrics"},
                "remediation": {
                    "actions": ["restart"],
                    "restart": {
                        "start": standin_api_argv(api_port, STEP_SECONDS, workdir / "pages")
                    },
                    "stop_grace_seconds": 10,
                    "startup_timeout_seconds": 120,
                },
            }
        },
        "remediator": {
            "listen": f"127.0.0.1:{port}",
            "token_file": str(workdir / "token"),
            "state_db": str(workdir / "state.sqlite"),
            "log_dir": str(workdir / "logs"),
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not happen within {timeout:g} s")


async def one_request(http: httpx.AsyncClient, tokens: int, sent: list[Sent]) -> None:
    body = {
        "model": "glyph",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": tokens,
        "ignore_eos": True,
    }
    began = time.time()
    try:
        ok = (await http.post("/v1/chat/completions", json=body)).status_code == 200
    except httpx.HTTPError:
        ok = False
    sent.append(Sent(began, time.time(), ok))


async def load(
    api_url: str,
    remediator_url: str,
    mode: str,
    rng: random.Random,
    args: argparse.Namespace,
    sent: list[Sent],
) -> float:
    """Send the bursts; deliver the alert mid-way through the first. When it was delivered."""
    alert_at = 0.0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=api_url, timeout=60, trust_env=False) as http,
        httpx.AsyncClient(base_url=remediator_url, headers=headers, trust_env=False) as rem,
    ):
        for burst in range(args.bursts):
            tasks = []
            for i in range(round(args.burst_seconds * args.rate)):
                tokens = rng.randint(60, 150)  # 1.2-3 s each: a burst's requests overlap
                tasks.append(asyncio.create_task(one_request(http, tokens, sent)))
                if burst == 0 and i == round(args.burst_seconds * args.rate / 2):
                    labels = {"urgency": "planned"} if mode == "planned" else {}
                    item = alert(fingerprint=f"1eak{mode}", alertname="GlyphMemoryLeak", **labels)
                    item["annotations"]["exhaustion_lower_bound_seconds"] = LOWER_BOUND
                    alert_at = time.time()
                    (await rem.post("/alerts", json=payload(item))).raise_for_status()
                await asyncio.sleep(1 / args.rate)
            await asyncio.gather(*tasks)
            if burst < args.bursts - 1:
                await asyncio.sleep(rng.uniform(args.gap_min, args.gap_max))
    return alert_at


def restart_of(remediator_url: str) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = httpx.get(remediator_url + "/actions", headers=headers, timeout=10, trust_env=False)
    actions: list[dict[str, Any]] = answer.json()
    return actions[0] if actions else None


def run_trial(mode: str, args: argparse.Namespace) -> Trial:
    with tempfile.TemporaryDirectory(prefix="glyph-planned-bench-") as tmp:
        workdir = Path(tmp)
        port, api_port = free_port(), free_port()
        config = write_config(workdir, port, api_port)
        api_url, remediator_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{port}"
        started: list[int] = []
        argv = [sys.executable, "-m", "glyph_guard.remediator", "--config", str(config)]
        with (
            open(workdir / "api.log", "wb") as api_log,
            open(workdir / "remediator.log", "wb") as rem_log,
            spawned(
                standin_api_argv(api_port, STEP_SECONDS, workdir / "pages"),
                stdout=api_log,
                stderr=subprocess.STDOUT,
            ),
            spawned(argv, stdout=rem_log, stderr=subprocess.STDOUT),
        ):
            try:
                wait_until(lambda: httpx.get(api_url + "/health").status_code == 200, 60, "api")
                wait_until(
                    lambda: httpx.get(remediator_url + "/healthz").status_code == 200,
                    60,
                    "remediator",
                )
                sent: list[Sent] = []
                rng = random.Random(args.seed)
                coro = load(api_url, remediator_url, mode, rng, args, sent)
                alert_at = asyncio.run(asyncio.wait_for(coro, args.trial_timeout))
                wait_until(
                    lambda: (a := restart_of(remediator_url)) is not None and a["finished_at"],
                    args.trial_timeout,
                    "the restart",
                )
                action = restart_of(remediator_url)
                if action and action["details"].get("started_pid"):
                    started.append(int(action["details"]["started_pid"]))
                return Trial(mode, sent, alert_at, action)
            finally:
                for pid in started:  # the api the remediator started, by its process group
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", type=int, default=2, help="bursts per trial (default 2)")
    parser.add_argument("--burst-seconds", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second in a burst")
    parser.add_argument("--gap-min", type=float, default=20.0, help="idle gap, seconds")
    parser.add_argument("--gap-max", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=1, help="pairs of trials (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trial-timeout", type=float, default=600.0)
    args = parser.parse_args()
    if not (1 <= args.bursts <= 100 and 1 <= args.trials <= 20 and args.rate > 0):
        parser.error("--bursts 1-100, --trials 1-20, --rate > 0")
    began = time.monotonic()
    print(f"{'trial':<10} {'requests':>8} {'failed':>7} {'by restart':>10}  restart")
    for _ in range(args.trials):
        for mode in ("planned", "immediate"):
            trial = run_trial(mode, args)
            action = trial.action
            when = "none"
            if action is not None:
                after = action["started_at"] - trial.alert_at
                when = f"began {after:.1f} s after the alert, {action['outcome']}"
            print(
                f"{mode:<10} {len(trial.sent):>8} {len(trial.failed()):>7}"
                f" {len(trial.failed_by_restart()):>10}  {when}",
                flush=True,
            )
    print(f"({time.monotonic() - began:.0f} s; seed {args.seed}, bursts {args.bursts})")


if __name__ == "__main__":
    main()
