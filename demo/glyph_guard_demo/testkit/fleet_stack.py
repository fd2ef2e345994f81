"""A simulated fleet on this machine: hosts in their own PID namespaces on their own 127.x.y.N
addresses, an HA pair of Prometheus and an Alertmanager cluster, all configured by glyph-fleet
from one inventory and the shipped deploy/fleet/prometheus.yml."""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from glyph_guard.fleet.cli import write_if_changed
from glyph_guard.fleet.render import load_inventory, render_files
from glyph_guard_demo.stack.cli import EXAMPLE
from glyph_guard_demo.stack.services import Service, child_environment, find_binary
from glyph_guard_demo.testkit.fleet_host import SERVICES
from glyph_guard_demo.testkit.support import (
    REPO,
    free_port,
    past_cooldown,
    wait_for,
    webhooks_settled,
)

FLEET = REPO / "deploy" / "fleet"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
STANDIN = EXAMPLE
BUDGET = {
    "cooldown_seconds": 15,
    "backoff_initial_seconds": 1,
    "backoff_max_seconds": 4,
    "max_failed_restarts": 30,
}
# util-linux; without root, in a user namespace of its own (where the kernel allows one)
NAMESPACE = (
    "unshare",
    *(() if os.geteuid() == 0 else ("--user", "--map-root-user")),
    *("--pid", "--fork", "--mount-proc", "--"),
)
# The stand-in api, started so that its command line matches no other test's pattern: other
# runs on this machine (outside these namespaces) see these processes and must not take them
# for theirs.
API_CODE = "import sys; from glyph_guard_demo.standin.cli import main; sys.exit(main())"
API_MATCH = re.escape(API_CODE) + r"\s+api\s"
PEER_TIMEOUT = "3s"  # how long the second Alertmanager waits for the first one's notification


def subnet() -> str:
    """127.A.B: a /24 of loopback that parallel runs on this machine are unlikely to share."""
    return f"127.{random.randint(100, 250)}.{random.randint(1, 250)}"


@dataclass
class SimHost:
    """One GPU host: the stand-in api, glyph-exporter and glyph-remediator in a PID namespace."""

    name: str
    address: str
    work: Path
    api_port: int = field(default_factory=free_port)
    exporter_port: int = field(default_factory=free_port)
    remediator_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.work / "deploy.yaml"

    @property
    def remediator_url(self) -> str:
        return f"http://{self.address}:{self.remediator_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.address}:{self.api_port}"

    def inventory_entry(self, token_dir: Path) -> dict[str, Any]:
        (token_dir / self.name).write_text(self.token + "\n")
        return {
            "address": self.address,
            "exporter_port": self.exporter_port,
            "remediator_port": self.remediator_port,
            "vllm_port": self.api_port,
        }

    def write_config(self) -> None:
        data = yaml.safe_load(STANDIN.read_text())
        api = data["components"]["api"]
        api["host"] = self.address
        api["port"] = self.api_port
        api["match"] = {"cmdline": API_MATCH}
        api["remediation"]["restart"]["start"] = [
            sys.executable,
            "-c",
            API_CODE,
            "api",
            "--host",
            self.address,
            "--port",
            str(self.api_port),
            "--pages-dir",
            str(self.work / "pages"),
        ]
        api["remediation"]["restart"]["log_file"] = str(self.work / "logs" / "api-restarts.log")
        self.work.mkdir(parents=True, exist_ok=True)
        token = self.work / "token"
        token.write_text(self.token + "\n")
        token.chmod(0o600)  # the remediator refuses a token other users may read
        config = {
            "host": self.name,
            "components": {"api": api},
            "exporter": {**data["exporter"], "listen": f"{self.address}:{self.exporter_port}"},
            "remediator": {
                "listen": f"{self.address}:{self.remediator_port}",
                "token_file": str(token),
                "state_db": str(self.work / "remediator.sqlite"),
                "log_dir": str(self.work / "logs"),
                "budget": BUDGET,
            },
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        self.write_config()
        with (self.work / "host.log").open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *NAMESPACE,
                    sys.executable,
                    "-m",
                    "glyph_guard_demo.testkit.fleet_host",
                    str(self.config_path),
                ],
                cwd=REPO,
                env=child_environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def init(self) -> psutil.Process | None:
        """The namespace's PID 1 (as this namespace numbers it)."""
        if self.process is None or self.process.poll() is not None:
            return None
        children = psutil.Process(self.process.pid).children()
        return children[0] if children else None

    def processes(self) -> list[psutil.Process]:
        """Every process of this host, seen from outside its namespace."""
        init = self.init()
        if init is None:
            return []
        namespace = os.readlink(f"/proc/{init.pid}/ns/pid")
        found = []
        for proc in psutil.process_iter():
            with suppress(OSError, psutil.Error):
                if os.readlink(f"/proc/{proc.pid}/ns/pid") == namespace:
                    found.append(proc)
        return found

    def matching(self, pattern: str) -> list[psutil.Process]:
        found = []
        for proc in self.processes():
            with suppress(psutil.Error):
                if re.search(pattern, " ".join(proc.cmdline())) and proc.status() != "zombie":
                    found.append(proc)
        return found

    def api_processes(self) -> list[psutil.Process]:
        return self.matching(API_MATCH)

    def services_running(self) -> bool:
        """Its exporter and its remediator both run (a scenario may have killed one)."""
        return all(self.matching(rf"-m glyph_guard\.{name}\b") for name in SERVICES)

    def ready(self) -> bool:
        return self.services_running() and self.healthy()

    def kill(self, pattern: str) -> list[int]:
        """SIGKILL the processes of this host (its own PID namespace, started by the test) whose
        command line matches: an outside fault, by PID."""
        pids = [p.pid for p in self.matching(pattern)]
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def kill_api(self) -> list[int]:
        return self.kill(API_MATCH)

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(
            self.remediator_url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=5,
            trust_env=False,
        )
        response.raise_for_status()
        return response.json()

    def restarts(self) -> list[dict[str, Any]]:
        return [a for a in self.get("/actions", limit=1000) if a["action"] == "restart"]

    def decisions(self) -> list[dict[str, Any]]:
        return list(self.get("/decisions", limit=1000))

    def out_of_cooldown(self) -> bool:
        return past_cooldown(self.restarts(), float(BUDGET["cooldown_seconds"]))

    def healthy(self) -> bool:
        with suppress(httpx.HTTPError):
            return (
                httpx.get(self.api_url + "/health", timeout=2, trust_env=False).status_code == 200
            )
        return False

    def stop(self) -> None:
        init = self.init()
        if init is not None:
            with suppress(psutil.Error):
                init.send_signal(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


@dataclass
class Fleet:
    """Hosts, two Prometheus replicas and a two-member Alertmanager cluster."""

    work: Path
    host_count: int = 3
    hosts: list[SimHost] = field(default_factory=list)
    services: dict[str, Service] = field(default_factory=dict)
    prometheus_ports: dict[str, int] = field(default_factory=dict)
    alertmanager_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        net = subnet()
        self.render_dir = self.work / "fleet"
        self.token_dir = self.work / "tokens"
        self.token_dir.mkdir(parents=True, exist_ok=True)
        self.hosts = [
            SimHost(f"gpu-{n:02d}", f"{net}.{n}", self.work / f"host-{n}")
            for n in range(1, self.host_count + 1)
        ]
        self.alertmanager_ports = {"am-1": free_port(), "am-2": free_port()}
        self.gossip_ports = {"am-1": free_port(), "am-2": free_port()}
        self.prometheus_ports = {"a": free_port(), "b": free_port()}

    # -- configuration ------------------------------------------------------------------------

    @property
    def inventory_path(self) -> Path:
        return self.render_dir / "inventory.yml"

    def render(self, hosts: list[SimHost] | None = None) -> None:
        """Write the inventory for these hosts and render it as `glyph-fleet render` does."""
        self.render_dir.mkdir(parents=True, exist_ok=True)
        inventory = {
            "alertmanager_base": str(REPO / "deploy" / "prometheus" / "alertmanager.yml"),
            "alertmanagers": [f"127.0.0.1:{p}" for p in self.alertmanager_ports.values()],
            "token_dir": str(self.token_dir),
            "hosts": {h.name: h.inventory_entry(self.token_dir) for h in hosts or self.hosts},
        }
        self.inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        for name, content in render_files(
            load_inventory(self.inventory_path), self.inventory_path
        ).items():
            write_if_changed(self.render_dir / name, content)

    def write_prometheus_config(self) -> Path:
        """deploy/fleet/prometheus.yml as shipped, with the rules' path made absolute."""
        data = yaml.safe_load((FLEET / "prometheus.yml").read_text())
        data["rule_files"] = [str(RULES)]
        path = self.render_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        self.render()
        prom_config = self.write_prometheus_config()
        for host in self.hosts:
            host.start()
        alertmanager = find_binary("prometheus-alertmanager", "alertmanager")
        for name in self.alertmanager_ports:
            peers = [
                f"--cluster.peer=127.0.0.1:{p}" for n, p in self.gossip_ports.items() if n != name
            ]
            self._add(
                name,
                [
                    alertmanager,
                    f"--config.file={self.render_dir / 'alertmanager.yml'}",
                    f"--storage.path={self.work / name}",
                    f"--web.listen-address=127.0.0.1:{self.alertmanager_ports[name]}",
                    f"--cluster.listen-address=127.0.0.1:{self.gossip_ports[name]}",
                    f"--cluster.advertise-address=127.0.0.1:{self.gossip_ports[name]}",
                    f"--cluster.peer-timeout={PEER_TIMEOUT}",
                    *peers,
                ],
                f"http://127.0.0.1:{self.alertmanager_ports[name]}/-/ready",
            )
        for replica in self.prometheus_ports:
            self.start_prometheus(replica, prom_config)
        for service in self.services.values():
            service.wait_ready(timeout)
        for host in self.hosts:
            wait_for(host.healthy, timeout, interval=0.5)
        wait_for(lambda: self.cluster_size() == 2, timeout, interval=0.5)
        wait_for(self.all_targets_up, timeout, interval=0.5)

    def start_prometheus(self, replica: str, config: Path | None = None) -> None:
        prometheus = find_binary("prometheus")
        self._add(
            f"prometheus-{replica}",
            [
                prometheus,
                f"--config.file={config or self.render_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.work / ('prometheus-' + replica)}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_ports[replica]}",
                "--rules.alert.resend-delay=2s",
                "--enable-feature=expand-external-labels",
            ],
            f"http://127.0.0.1:{self.prometheus_ports[replica]}/-/ready",
            env={"GLYPH_PROMETHEUS_REPLICA": replica},
        )

    def _add(
        self, name: str, argv: list[str], ready: str, env: dict[str, str] | None = None
    ) -> None:
        service = Service(name, argv, self.work / "logs" / f"{name}.log", ready)
        if env:
            service.env = {**service.env, **env}
        self.services[name] = service
        service.start()

    def kill_service(self, name: str) -> None:
        """SIGKILL one central service, as a crashed machine would leave it."""
        process = self.services[name].process
        assert process is not None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        for host in self.hosts:
            host.stop()

    # -- reading ------------------------------------------------------------------------------

    def prometheus(self, replica: str, path: str, **params: Any) -> Any:
        url = f"http://127.0.0.1:{self.prometheus_ports[replica]}{path}"
        response = httpx.get(url, params=params, timeout=5, trust_env=False)
        response.raise_for_status()
        return response.json()["data"]

    def live_replicas(self) -> list[str]:
        return [
            r
            for r in self.prometheus_ports
            if (p := self.services[f"prometheus-{r}"].process) is not None and p.poll() is None
        ]

    def targets(self, replica: str) -> list[dict[str, Any]]:
        return list(self.prometheus(replica, "/api/v1/targets", state="active")["activeTargets"])

    def all_targets_up(self) -> bool:
        wanted = {
            (job, h.name)
            for h in self.hosts
            for job in ("glyph-exporter", "glyph-remediator", "vllm")
        }
        for replica in self.live_replicas():
            up = {
                (t["labels"]["job"], t["labels"].get("host"))
                for t in self.targets(replica)
                if t["health"] == "up"
            }
            if not wanted <= up:
                return False
        return True

    def firing(self, replica: str, alertname: str) -> list[dict[str, str]]:
        alerts = self.prometheus(replica, "/api/v1/alerts")["alerts"]
        return [
            a["labels"]
            for a in alerts
            if a["labels"].get("alertname") == alertname and a["state"] == "firing"
        ]

    def cluster_size(self) -> int:
        sizes = []
        for name, port in self.alertmanager_ports.items():
            process = self.services[name].process
            if process is None or process.poll() is not None:
                continue
            with suppress(httpx.HTTPError):
                status = httpx.get(f"http://127.0.0.1:{port}/api/v2/status", timeout=2).json()
                sizes.append(len(status["cluster"].get("peers") or []))
        return min(sizes, default=0)

    def live_alertmanagers(self) -> list[str]:
        return [
            f"http://127.0.0.1:{port}"
            for name, port in self.alertmanager_ports.items()
            if (p := self.services[name].process) is not None and p.poll() is None
        ]

    def deliveries_settled(self, host: SimHost, alertname: str) -> bool:
        """No live Alertmanager holds the host's alert as active any more, nor has a webhook
        notification in flight (a remediator judges a delivery before it answers)."""
        params = {"filter": [f'alertname="{alertname}"', f'host="{host.name}"']}
        for url in self.live_alertmanagers():
            active = httpx.get(f"{url}/api/v2/alerts", params=params, timeout=5, trust_env=False)
            if active.json() or not webhooks_settled(url):
                return False
        return True

    def restore(self, timeout: float = 180.0) -> None:
        """Back to the fleet as started, whatever a scenario left: the original inventory
        (Alertmanager's routes reloaded), every central service running, every host with its
        exporter and remediator and a healthy api, both Alertmanagers clustered, every target
        up, and no host's api within its restart cooldown (an alert then acts at once)."""
        self.render()
        for service in self.services.values():
            if service.process is None or service.process.poll() is not None:
                service.start()
        for service in self.services.values():
            service.wait_ready(timeout)
        for url in self.live_alertmanagers():
            httpx.post(f"{url}/-/reload", timeout=10, trust_env=False).raise_for_status()
        for host in self.hosts:
            if not host.services_running():
                host.stop()
                host.start()
        for host in self.hosts:
            wait_for(host.ready, timeout, interval=0.5)
        wait_for(lambda: self.cluster_size() == 2, timeout, interval=0.5)
        wait_for(self.all_targets_up, timeout, interval=0.5)
        for host in self.hosts:
            wait_for(host.out_of_cooldown, timeout, interval=0.5)

    def restart_counts(self, skip: SimHost | None = None) -> dict[str, int]:
        """Restarts recorded by each host's remediator (but skip's, which may be down)."""
        return {h.name: len(h.restarts()) for h in self.hosts if h is not skip}


def new_restart(host: SimHost, before: set[int], timeout: float) -> dict[str, Any]:
    """Wait for a restart on host that was not among before, and for it to finish."""

    def finished() -> dict[str, Any] | None:
        for action in host.restarts():
            if action["id"] not in before and action["finished_at"]:
                return action
        return None

    return wait_for(finished, timeout, interval=0.2)


def acting_alert(host: SimHost, action: dict[str, Any]) -> str:
    """The alert that started an action: GlyphComponentDown for a kill, unless a canary timed
    out first on a loaded machine (GlyphComponentHung)."""
    names = [d["alertname"] for d in host.decisions() if d["action_id"] == action["id"]]
    return str(names[0]) if names else "GlyphComponentDown"


def wait_resolved(host: SimHost, alertname: str, since: float, timeout: float = 120) -> None:
    """Until the host's remediator has received the alert's resolution."""
    wait_for(
        lambda: any(
            d["alertname"] == alertname and d["alert_status"] == "resolved" and d["at"] >= since
            for d in host.decisions()
        ),
        timeout,
        interval=0.5,
    )


def firing_deliveries(host: SimHost, alertname: str, since: float) -> list[dict[str, Any]]:
    """The remediator's records of the alert firing since a time: one per notification."""
    return sorted(
        (
            d
            for d in host.decisions()
            if d["alertname"] == alertname and d["alert_status"] == "firing" and d["at"] >= since
        ),
        key=lambda d: int(d["id"]),
    )
