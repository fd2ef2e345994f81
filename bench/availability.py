"""Availability with the shipped budget: repeated kills of a healthy api, then a crash loop.

Runs the local stack (stand-in api and ui, glyph-exporter, glyph-remediator, Prometheus and
Alertmanager with deploy/prometheus/*.yml) on free loopback ports, with the budget of the demo
deployment (glyph_guard_demo/standin.yaml: the defaults but a 15 s cooldown), and never resets
or waits anything out between trials:

1. `--kills` (8) SIGKILLs of the api, each after `--healthy-for` (20) seconds of healthy
   service: kill -> healthy again for each (the shared health model, probed by the benchmark;
   the exporter's view, which lags by up to its 10 s canary interval, beside it), median and
   max (targets: every one within 15 s, median within 8 s);
2. a crash loop on a fresh stack: the api crashes 0.5 s after each start (`--crash-after`):
   every restart, the wait before it, and whether the remediator gave up.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from glyph_guard.common.config import Component, load_config
from glyph_guard.common.health import check_blocking
from glyph_guard.common.processes import ProcessTable
from glyph_guard_demo.stack.cli import EXAMPLE
from glyph_guard_demo.stack.configs import Ports
from glyph_guard_demo.stack.runner import LocalStack
from glyph_guard_demo.stack.scenario import StackReader, wait_until
from glyph_guard_demo.stack.services import StackError
from glyph_guard_demo.testkit.stack_fixtures import pinned_to_ports, standin_deployment
from glyph_guard_demo.testkit.support import free_port

RECOVERY_TARGET_SECONDS = 15.0
MEDIAN_TARGET_SECONDS = 8.0


def new_stack(budget: dict[str, Any], api_args: tuple[str, ...] = ()) -> LocalStack:
    """The stand-in stack on free ports, matched by port: other stacks on the host are safe."""
    work = Path(tempfile.mkdtemp(prefix="glyph-availability-"))
    config = pinned_to_ports(standin_deployment(work, api_args=api_args, budget=budget))
    return LocalStack(config, work, Ports(free_port(), free_port(), free_port(), free_port()))


def api_of(stack: LocalStack) -> Component:
    component = stack.config.component("api")
    assert component is not None
    return component


def kill_api(component: Component) -> None:
    table = ProcessTable()
    table.refresh()
    for pid in table.find([component])["api"].roots:
        os.kill(pid, signal.SIGKILL)


def serving(component: Component) -> bool:
    """Healthy by the shared health model, probed now (the exporter's canary runs every 10 s)."""
    return check_blocking(component)[0].healthy


def kills(stack: LocalStack, count: int, healthy_for: float) -> tuple[list[float], list[float]]:
    """Kill the api `count` times, each after healthy_for seconds serving: kill -> serving
    again, and kill -> healthy as the exporter's next scrape shows it."""
    probe = StackReader(stack)
    api = api_of(stack)
    recovered: list[float] = []
    seen: list[float] = []
    try:
        healthy_at = wait_until(lambda: serving(api), 600, "the api to be healthy")
        for trial in range(1, count + 1):
            time.sleep(max(0.0, healthy_at + healthy_for - time.time()))
            killed = time.time()
            kill_api(api)
            wait_until(lambda: not serving(api), 30, "the kill to show")
            try:
                healthy_at = wait_until(lambda: serving(api), 600, "health")
                seen_at = wait_until(lambda: probe.healthy("api"), 600, "the exporter's health")
            except StackError as exc:
                print(f"kill #{trial}: not recovered ({exc})", flush=True)
                healthy_at = time.time()
                continue
            recovered.append(healthy_at - killed)
            seen.append(seen_at - killed)
            last = max(probe.actions("api"), key=lambda a: a["id"])
            print(
                f"kill #{trial}: kill -> healthy {recovered[-1]:.2f} s (restart began"
                f" +{last['started_at'] - killed:.2f} s, start to verified healthy"
                f" {(last['finished_at'] or healthy_at) - last['started_at']:.2f} s;"
                f" the exporter showed it healthy at +{seen[-1]:.2f} s)",
                flush=True,
            )
        reasons = [d["reason"] for d in probe.decisions("api") if d["verdict"] == "deferred"]
        outcomes = [a["outcome"] for a in sorted(probe.actions("api"), key=lambda a: a["id"])]
    finally:
        probe.close()
    print(f"restarts: {', '.join(str(o) for o in outcomes)}")
    print(f"deferred decisions: {', '.join(reasons) or 'none'}")
    return recovered, seen


def crash_loop(stack: LocalStack, minutes: float) -> None:
    """Watch the remediator handle an api that crashes shortly after each start."""
    probe = StackReader(stack)
    url = f"{stack.urls['remediator']}/components/api"
    began = time.time()
    try:
        gave_up = False
        while time.time() < began + minutes * 60 and not gave_up:
            time.sleep(1)
            status = probe.client.get(url, headers=probe.auth).json()
            gave_up = bool(status["gave_up"]) and status["busy"] is None
        actions = sorted(probe.actions("api"), key=lambda a: a["id"])
        deferred = [d for d in probe.decisions("api") if d["reason"] == "backoff"]
    finally:
        probe.close()
    finished: float | None = None
    for number, action in enumerate(actions, 1):
        wait = "" if finished is None else f", {action['started_at'] - finished:.1f} s after"
        wait += "" if finished is None else " the last one ended"
        print(
            f"restart #{number} ({action['origin']}) at +{action['started_at'] - began:.1f} s"
            f"{wait}: {action['outcome']}",
            flush=True,
        )
        finished = action["finished_at"] or finished
    print(f"alerts deferred by back-off: {len(deferred)}")
    if gave_up:
        print(
            f"gave up after {len(actions)} restarts, {time.time() - began:.0f} s"
            " (glyph_remediator_gave_up 1)"
        )
    else:
        print(f"did NOT give up within {minutes:g} min ({len(actions)} restarts)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--healthy-for", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--crash-after", type=float, default=0.5, metavar="SECONDS")
    parser.add_argument("--crash-minutes", type=float, default=5.0, metavar="MINUTES")
    args = parser.parse_args()
    budget = load_config(EXAMPLE).remediator.budget.model_dump()  # the shipped budget
    print(f"budget: {budget}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the stack on the way out

    stack = new_stack(budget)
    try:
        stack.start()
        recovered, seen = kills(stack, args.kills, args.healthy_for)
    finally:
        stack.stop()
    print()
    print(f"{args.kills} kills, each after {args.healthy_for:g} s healthy, nothing reset:")
    print(f"recovered {len(recovered)}/{args.kills}")
    if recovered:
        median, longest = statistics.median(recovered), max(recovered)
        print(f"kill -> healthy: median {median:.2f} s, max {longest:.2f} s")
        print(
            f"kill -> healthy in the exporter: median {statistics.median(seen):.2f} s,"
            f" max {max(seen):.2f} s (its canary runs every 10 s)"
        )
        met = (
            len(recovered) == args.kills
            and longest <= RECOVERY_TARGET_SECONDS
            and median <= MEDIAN_TARGET_SECONDS
        )
        print(
            f"target every one <= {RECOVERY_TARGET_SECONDS:g} s, median <="
            f" {MEDIAN_TARGET_SECONDS:g} s: {'met' if met else 'MISSED'}"
        )

    print()
    print(f"crash loop: the api crashes {args.crash_after:g} s after each start")
    stack = new_stack(budget, ("--crash-after", str(args.crash_after)))
    try:
        stack.start()
        crash_loop(stack, args.crash_minutes)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
