"""Kill-to-restart and hang-to-restart times through the real chain with the shipped configs.

Runs the local stack (stand-in service, glyph-exporter, glyph-remediator, Prometheus 2.42,
Alertmanager 0.25 with deploy/prometheus/*.yml) on free loopback ports, then repeats: SIGKILL
the api (or hang its engine), and read when the remediator began the restart and when it was
verified healthy. Between trials it waits out the remediator's cooldown and resets its budget,
as an operator would after a test.

`--repeated-kills N` (the stand-in on free ports, matched by port, with --config's budget)
instead kills the api N times, `--kill-spacing` seconds apart and each at
least `--healthy-for` seconds after it was healthy again, and never resets anything:
recovered/N, kill-to-healthy median and max, and the back-off delays the remediator applied.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glyph_common.config import load_config
from glyph_common.processes import ProcessTable
from glyph_stack.configs import Ports
from glyph_stack.runner import LocalStack
from glyph_stack.scenario import StackReader, run_scenario, wait_healthy, wait_until
from glyph_stack.services import StackError
from tests.stack_fixtures import pinned_to_ports, standin_deployment
from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]


def summary(label: str, values: list[float]) -> str:
    return (
        f"{label:<34} median {statistics.median(values):6.2f} s   max {max(values):6.2f} s"
        f"   min {min(values):6.2f} s   (n={len(values)})"
    )


def repeated_kills(stack: LocalStack, kills: int, spacing: float, healthy_for: float) -> None:
    """Kill the api again and again, never resetting the budget; print what an operator sees."""
    component = stack.config.component("api")
    assert component is not None
    probe = StackReader(stack)
    recovered: list[float] = []
    try:
        healthy_at = wait_until(lambda: probe.healthy("api"), 600, "health")
        last_kill = 0.0
        for trial in range(kills):
            # spaced apart, and each after the service was healthy again for a while
            time.sleep(
                max(0.0, last_kill + spacing - time.time(), healthy_at + healthy_for - time.time())
            )
            table = ProcessTable()
            table.refresh()
            last_kill = time.time()
            for pid in table.find([component])["api"].roots:
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not probe.healthy("api"), 30, "the kill to show")
            try:
                back = wait_until(lambda: probe.healthy("api"), 600, "health")
            except StackError as exc:
                print(f"kill #{trial + 1}: not recovered ({exc})", flush=True)
                continue
            recovered.append(back - last_kill)
            healthy_at = back
            print(f"kill #{trial + 1}: healthy again after {back - last_kill:.2f} s", flush=True)
        actions = sorted(probe.actions("api"), key=lambda a: a["id"])
        decisions = probe.decisions("api")
    finally:
        probe.close()
    waits = []  # from each alert deferred by back-off to the restart that followed it
    for deferred in (d for d in decisions if d["reason"] == "backoff"):
        after = [a["started_at"] for a in actions if a["started_at"] >= deferred["at"]]
        if after:
            waits.append(min(after) - deferred["at"])
    print()
    print(
        f"repeated kills, {spacing:g} s apart and {healthy_for:g} s after healthy,"
        " budget never reset:"
    )
    print(f"recovered {len(recovered)}/{kills}")
    if recovered:
        print(summary("kill -> healthy again", recovered))
    print(
        "back-off waits seen (alert deferred -> restart began): "
        + (", ".join(f"{w:.1f} s" for w in waits) or "none")
    )
    print("outcomes: " + ", ".join(str(a["outcome"]) for a in actions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--hangs", type=int, default=3)
    parser.add_argument("--config", type=Path, default=REPO / "examples" / "standin.yaml")
    parser.add_argument("--repeated-kills", type=int, default=0, metavar="N")
    parser.add_argument("--kill-spacing", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--healthy-for", type=float, default=12.0, metavar="SECONDS")
    args = parser.parse_args()
    if args.repeated_kills:
        ports = Ports(free_port(), free_port(), free_port(), free_port())
        work = Path(tempfile.mkdtemp(prefix="glyph-e2e-bench-"))
        # the stand-in on free ports, matched by its port: other stacks on the host are left alone
        budget = load_config(args.config).remediator.budget.model_dump()  # the shipped budget
        config = pinned_to_ports(standin_deployment(work, budget=budget))
        stack = LocalStack(config, work, ports)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the stack on the way out
        try:
            stack.start()
            repeated_kills(stack, args.repeated_kills, args.kill_spacing, args.healthy_for)
        finally:
            stack.stop()
        return
    config = load_config(args.config)
    cooldown = config.remediator.budget.cooldown_seconds
    ports = Ports(free_port(), free_port(), free_port(), free_port())
    stack = LocalStack(config, Path(tempfile.mkdtemp(prefix="glyph-e2e-bench-")), ports)
    results: dict[str, list[tuple[float, float]]] = {"kill": [], "hang": []}
    try:
        stack.start()
        probe = StackReader(stack)
        for fault, trials in (("kill", args.kills), ("hang", args.hangs)):
            for trial in range(trials):
                timeline = run_scenario(stack, fault)
                began = next(v for k, v in timeline.steps.items() if k.startswith("remediator"))
                healthy = timeline.steps.get("restart finished (succeeded)", float("nan"))
                results[fault].append((began, healthy))
                print(
                    f"{fault} #{trial + 1}: restart began +{began:.2f} s, verified healthy"
                    f" +{healthy:.2f} s"
                    f" ({timeline.outcome})",
                    flush=True,
                )
                wait_healthy(probe, "api")
                time.sleep(cooldown + 1)  # an alert inside the cooldown is taken as stale
                probe.reset("api")
        probe.close()
    finally:
        stack.stop()
    print()
    print("through Prometheus 2.42 + Alertmanager 0.25 with deploy/prometheus/*.yml:")
    for fault, rows in results.items():
        if rows:
            print(summary(f"{fault}: fault -> restart begins", [b for b, _ in rows]))
            print(summary(f"{fault}: fault -> verified healthy", [h for _, h in rows]))
    print("cron-script baseline (DESIGN.md): detection ~30 s median, 60 s max; hangs never")
    kills = [b for b, _ in results["kill"]]
    hangs = [b for b, _ in results["hang"]]
    if kills:
        ok = statistics.median(kills) <= 8 and max(kills) <= 15
        print(f"target kill median <= 8 s and max <= 15 s: {'met' if ok else 'MISSED'}")
    if hangs:
        print(f"target hang <= 25 s: {'met' if max(hangs) <= 25 else 'MISSED'}")


if __name__ == "__main__":
    main()
