"""PID 1 of one simulated fleet host: starts its service, exporter and remediator, reaps, ends all.

Run as `unshare --pid --fork --mount-proc python -m glyph_guard_demo.testkit.fleet_host
DEPLOY.yaml`: everything it starts (and everything those start) lives in the host's own PID
namespace, so its exporter and remediator see only this host's processes.
SIGTERM ends the whole namespace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from glyph_guard.common.config import CommandRestart, load_config

GRACE_SECONDS = 10.0
SERVICES = ("exporter", "remediator")  # started next to the components, as glyph_guard.<name>


def start(argv: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def reap() -> bool:
    """Collect exited children (the namespace's orphans are ours too); False when none is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def main() -> None:
    config_path = Path(sys.argv[1])
    config = load_config(config_path)
    logs = config_path.parent / "logs"
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    for component in config.components:
        method = component.remediation.restart
        if isinstance(method, CommandRestart):
            start(list(method.start), logs / f"{component.name}.log")
    for service in SERVICES:
        start(
            [sys.executable, "-m", f"glyph_guard.{service}", "--config", str(config_path)],
            logs / f"{service}.log",
        )
    while not stopping:
        reap()
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.kill(-1, signal.SIGTERM)  # in a PID namespace: every process but this one
    deadline = time.monotonic() + GRACE_SECONDS
    while reap() and time.monotonic() < deadline:
        time.sleep(0.05)
    # returning ends the namespace: the kernel SIGKILLs whatever is still in it


if __name__ == "__main__":
    main()
