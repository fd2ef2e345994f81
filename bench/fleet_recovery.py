"""Kill-to-restart in a simulated fleet: N hosts, 2 Prometheus replicas, 2 clustered Alertmanagers.

Each host runs the stand-in api, glyph-exporter and glyph-remediator in its own PID namespace on
its own 127.A.B.N address; the central services run the shipped deploy/fleet/prometheus.yml and
the Alertmanager config glyph-fleet renders from one inventory. Incidents go round the hosts:
SIGKILL the api on one host, then read when that host's remediator began the restart, how many
actions every host took, and how many Alertmanager notifications of the alert the host received.
A host is hit again only after its cooldown has passed since its last restart (as independent
failures would be); nothing is reset between incidents.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from glyph_guard_demo.testkit.fleet_stack import (
    BUDGET,
    Fleet,
    acting_alert,
    firing_deliveries,
    new_restart,
    wait_resolved,
)
from glyph_guard_demo.testkit.support import wait_for

SETTLE_SECONDS = 8.0  # after the resolution: late copies from the other replica / member land


def summary(label: str, values: list[float], unit: str = " s") -> str:
    return (
        f"{label:<40} median {statistics.median(values):6.2f}{unit}   max {max(values):6.2f}{unit}"
        f"   min {min(values):6.2f}{unit}   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--incidents", type=int, default=10)
    args = parser.parse_args()
    fleet = Fleet(Path(tempfile.mkdtemp(prefix="glyph-fleet-bench-")), host_count=args.hosts)
    began: list[float] = []
    actions: list[int] = []
    wrong: list[int] = []
    notifications: list[int] = []
    last_restart: dict[str, float] = {}
    try:
        started = time.monotonic()
        fleet.start(timeout=180)
        print(f"fleet of {args.hosts} hosts up in {time.monotonic() - started:.1f} s", flush=True)
        for incident in range(args.incidents):
            host = fleet.hosts[incident % len(fleet.hosts)]
            wait_for(host.healthy, 120, interval=0.5)
            ready_at = last_restart.get(host.name, 0.0) + BUDGET["cooldown_seconds"] + 1
            time.sleep(max(0.0, ready_at - time.time()))
            counts = fleet.restart_counts()
            before = {a["id"] for a in host.restarts()}
            t0 = time.time()
            if not host.kill_api():
                raise SystemExit(f"no api process found on {host.name}")
            action = new_restart(host, before, 120)
            last_restart[host.name] = float(action["finished_at"])
            alertname = acting_alert(host, action)
            wait_for(host.healthy, 120, interval=0.5)
            wait_resolved(host, alertname, t0)
            time.sleep(SETTLE_SECONDS)
            after = fleet.restart_counts()
            mine = after[host.name] - counts[host.name]
            others = sum(after[n] - counts[n] for n in after if n != host.name)
            copies = len(firing_deliveries(host, alertname, t0))
            began.append(float(action["started_at"]) - t0)
            actions.append(mine)
            wrong.append(others)
            notifications.append(copies)
            print(
                f"incident {incident + 1} on {host.name}: restart began +{began[-1]:.2f} s"
                f" ({alertname}, {action['outcome']}); actions: {mine} on {host.name},"
                f" {others} elsewhere; notifications of the firing alert: {copies}",
                flush=True,
            )
    finally:
        fleet.stop()
    print()
    print(f"{args.hosts} hosts, 2 Prometheus 2.42 replicas, 2 clustered Alertmanager 0.25:")
    print(summary("kill -> restart begins (right host)", began))
    print(summary("notifications per incident", [float(n) for n in notifications], ""))
    print(f"actions per incident on its host: {sorted(set(actions))}; on other hosts: {sum(wrong)}")
    ok = statistics.median(began) <= 8 and max(began) <= 15
    print(f"target median <= 8 s and max <= 15 s: {'met' if ok else 'MISSED'}")
    once = set(actions) == {1} and sum(wrong) == 0
    print(f"target exactly 1 action per incident, on its host: {'met' if once else 'MISSED'}")


if __name__ == "__main__":
    main()
