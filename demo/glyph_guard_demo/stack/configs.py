"""Rendering the shipped deploy/ configs for a local stack: same rules and routes, chosen ports."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from glyph_guard.common.config import Deployment, dump_config, parse_config

PROMETHEUS = resources.files("glyph_guard.deploy.prometheus")


@dataclass(frozen=True)
class Ports:
    """Where each part of the local stack listens (all on 127.0.0.1)."""

    exporter: int = 9842
    remediator: int = 9843
    prometheus: int = 9090
    alertmanager: int = 9093


@dataclass(frozen=True)
class StackFiles:
    """The files a local stack runs from."""

    deployment: Path
    prometheus: Path
    alertmanager: Path
    token: Path


def local_deployment(config: Deployment, ports: Ports, work_dir: Path) -> Deployment:
    """The deployment with both services on the stack's ports and their state under work_dir."""
    data = yaml.safe_load(dump_config(config))
    data["exporter"]["listen"] = f"127.0.0.1:{ports.exporter}"
    remediator = data["remediator"]
    remediator["listen"] = f"127.0.0.1:{ports.remediator}"
    remediator["token_file"] = str(work_dir / "token")
    remediator["basic_auth"] = None
    remediator["state_db"] = str(work_dir / "remediator.sqlite")
    remediator["log_dir"] = str(work_dir / "logs")
    return parse_config(data, "local deployment")


def prometheus_config(config: Deployment, ports: Ports) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the stack's targets."""
    data: dict[str, Any] = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    data["rule_files"] = ["rules.yml"]  # beside the rendered prometheus.yml
    alerting = data["alerting"]["alertmanagers"][0]["static_configs"][0]
    alerting["targets"] = [f"127.0.0.1:{ports.alertmanager}"]
    engines = [
        {
            "targets": [f"{c.host}:{c.port}"],
            "labels": {"component": c.name, "__metrics_path__": c.engine.path},
        }
        for c in config.components
        if c.engine is not None and c.port
    ]
    targets = {
        "glyph-exporter": [{"targets": [f"127.0.0.1:{ports.exporter}"]}],
        "glyph-remediator": [{"targets": [f"127.0.0.1:{ports.remediator}"]}],
        "vllm": engines,  # each component whose engine serves vLLM's metrics, by its name
    }
    jobs = []
    for job in data["scrape_configs"]:
        job["static_configs"] = targets.get(job["job_name"])
        if job["static_configs"]:  # no engine component with a port: no vLLM job
            jobs.append(job)
    data["scrape_configs"] = jobs
    return data


def alertmanager_config(ports: Ports, token: Path) -> dict[str, Any]:
    """deploy/prometheus/alertmanager.yml sending to the stack's remediator."""
    data: dict[str, Any] = yaml.safe_load((PROMETHEUS / "alertmanager.yml").read_text())
    for receiver in data["receivers"]:
        for hook in receiver.get("webhook_configs", ()):
            hook["url"] = f"http://127.0.0.1:{ports.remediator}/alerts"
            hook["http_config"]["authorization"]["credentials_file"] = str(token)
    return data


def write_stack_files(config: Deployment, ports: Ports, work_dir: Path) -> StackFiles:
    """Write every config of the local stack into work_dir."""
    work_dir.mkdir(parents=True, exist_ok=True)
    token = work_dir / "token"
    if not token.exists():
        token.write_text(secrets.token_urlsafe(32) + "\n")
        token.chmod(0o600)
    deployment = local_deployment(config, ports, work_dir)
    files = StackFiles(
        deployment=work_dir / "deploy.yaml",
        prometheus=work_dir / "prometheus.yml",
        alertmanager=work_dir / "alertmanager.yml",
        token=token,
    )
    files.deployment.write_text(dump_config(deployment))
    files.prometheus.write_text(yaml.safe_dump(prometheus_config(deployment, ports)))
    (work_dir / "rules.yml").write_text((PROMETHEUS / "rules.yml").read_text())
    files.alertmanager.write_text(yaml.safe_dump(alertmanager_config(ports, token)))
    return files
