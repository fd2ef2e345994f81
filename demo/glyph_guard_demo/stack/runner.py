"""The local stack: the guarded service, exporter, remediator, Prometheus and Alertmanager."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glyph_guard.common.config import CommandRestart, Component, Deployment, load_config
from glyph_guard.common.health import check_blocking
from glyph_guard.common.processes import ProcessTable
from glyph_guard.common.stopping import collect, stop_processes
from glyph_guard.remediator.actions.tree import session_members
from glyph_guard_demo.stack.configs import Ports, StackFiles, write_stack_files
from glyph_guard_demo.stack.services import Service, StackError, child_environment, find_binary


@dataclass
class LocalStack:
    """Cheap to construct; start() brings everything up, stop() takes down what it started."""

    config: Deployment
    work_dir: Path
    ports: Ports = field(default_factory=Ports)
    start_service: bool = True  # start components that are not running (the stand-in)
    services: dict[str, Service] = field(default_factory=dict)
    files: StackFiles | None = None
    warnings: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> None:
        self.files = write_stack_files(self.config, self.ports, self.work_dir)
        deployment = load_config(self.files.deployment)
        logs = self.work_dir / "logs"
        if self.start_service:
            self._start_components(deployment, logs)
        prometheus = find_binary("prometheus")
        alertmanager = find_binary("prometheus-alertmanager", "alertmanager")
        python = sys.executable
        self._add(
            "exporter",
            [python, "-m", "glyph_guard.exporter", "--config", str(self.files.deployment)],
            f"{self.urls['exporter']}/metrics",
        )
        self._add(
            "remediator",
            [python, "-m", "glyph_guard.remediator", "--config", str(self.files.deployment)],
            f"{self.urls['remediator']}/healthz",
        )
        self._add(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={self.files.alertmanager}",
                f"--storage.path={self.work_dir / 'alertmanager'}",
                f"--web.listen-address=127.0.0.1:{self.ports.alertmanager}",
                "--cluster.listen-address=",  # no gossip port: a single local instance
            ],
            f"{self.urls['alertmanager']}/-/ready",
        )
        self._add(
            "prometheus",
            [
                prometheus,
                f"--config.file={self.files.prometheus}",
                f"--storage.tsdb.path={self.work_dir / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
                "--rules.alert.resend-delay=2s",
            ],
            f"{self.urls['prometheus']}/-/ready",
        )
        for name, service in self.services.items():
            try:
                service.wait_ready(timeout)
            except StackError as exc:
                if not name.startswith("component:"):
                    raise
                # A service that fails to start is what the remediator is there for.
                self.warnings.append(str(exc))

    def stop(self) -> None:
        """Stop the stack, then every instance of the components it started.

        The remediator stops first: told to stop mid-restart, it finishes the start it began
        or never starts it, so the instances it started are all there to be found once it has
        exited, by the components' own matchers (and the sessions they lead).
        """
        for name in ("prometheus", "alertmanager", "remediator", "exporter"):
            if name in self.services:
                self.services[name].stop()
        for name, service in self.services.items():
            if name.startswith("component:"):
                service.stop()
        stop_processes(collect(self._instances()), grace=10.0)

    @property
    def urls(self) -> dict[str, str]:
        return {
            "exporter": f"http://127.0.0.1:{self.ports.exporter}",
            "remediator": f"http://127.0.0.1:{self.ports.remediator}",
            "prometheus": f"http://127.0.0.1:{self.ports.prometheus}",
            "alertmanager": f"http://127.0.0.1:{self.ports.alertmanager}",
        }

    def token(self) -> str:
        assert self.files is not None
        return self.files.token.read_text().strip()

    def _add(self, name: str, argv: list[str], ready_url: str | None) -> None:
        service = Service(name, argv, self.work_dir / "logs" / f"{name}.log", ready_url)
        self.services[name] = service
        service.start()

    def _start_components(self, deployment: Deployment, logs: Path) -> None:
        table = ProcessTable()
        table.refresh()
        trees = table.find(deployment.components)
        for component in deployment.components:
            method = component.remediation.restart
            if trees[component.name].processes:
                continue  # already running: guard it as it is
            if not isinstance(method, CommandRestart):
                raise StackError(
                    f"component {component.name} is not running and has no start command"
                )
            # As the remediator's restart starts it (environment, directory, log file), so the
            # first incarnation is like the later ones.
            name = f"component:{component.name}"
            probed = any(p.enabled for p in component.probes)
            log = method.log_file or logs / f"{component.name}.log"
            env = {**child_environment(), **method.env}
            service = Service(
                name,
                method.start,
                log,
                env=env,
                cwd=method.cwd,
                ready_check=_healthy(component) if probed else None,
            )
            self.services[name] = service
            service.start()

    def _instances(self) -> set[int]:
        """Live processes of the components this stack started (restarted ones included)."""
        if self.files is None:
            return set()
        deployment = load_config(self.files.deployment)
        ours = [c for c in deployment.components if f"component:{c.name}" in self.services]
        table = ProcessTable()
        table.refresh()
        trees = table.find(ours).values()
        return set().union(*(tree.pids | session_members(None, tree.roots) for tree in trees))


def _healthy(component: Component) -> Callable[[], bool]:
    """Readiness of a started component: the health model, over a fresh client each time."""

    def ready() -> bool:
        health, _ = check_blocking(component)
        return health.healthy

    return ready
