"""A fleet's inventory and what it renders: Alertmanager routes per host and file_sd targets."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, field_validator, model_validator

from glyph_guard.common.config import (
    HOST_PATTERN,
    NAME_PATTERN,
    ConfigError,
    Frozen,
    Listen,
    NamedList,
    load_file,
    validate_data,
)

REMEDIATOR_RECEIVER = "remediator"  # the receiver of the single-host config that the hosts replace
UNROUTED_RECEIVER = "remediator-unrouted"  # an alert whose host is not in the inventory
HOST_LABEL = "host"
_ADDRESS = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
HEADER = "# Rendered by `glyph-fleet render` from {inventory}: edit that file, not this one.\n"


class FleetHost(Frozen):
    """One GPU host: where its agent listens, and the token its remediator expects."""

    name: str = Field(pattern=HOST_PATTERN)
    address: str = Field(description="DNS name or IP address the central services reach it at")
    exporter_port: int = Field(default=9842, ge=1, le=65535)
    remediator_port: int = Field(default=9843, ge=1, le=65535)
    vllm_port: int | None = Field(default=5002, ge=1, le=65535, description="null: not scraped")
    vllm_component: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="the name of the host's component whose engine serves vLLM's metrics: the "
        "`component` label of vLLM's series (null: none; the rules do not need it)",
    )
    token_file: Path | None = Field(
        default=None, description="on the Alertmanager machines; default: token_dir/NAME"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if ":" in value:
            ipaddress.IPv6Address(value.strip("[]"))  # a ValueError names the problem
            return value.strip("[]")
        if not _ADDRESS.match(value):
            raise ValueError(f"expected a host name or IP address without a port, got {value!r}")
        return value

    @field_validator("token_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    def target(self, port: int) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{port}"


class Inventory(Frozen):
    """Every host of the fleet and every Alertmanager its Prometheus servers send to."""

    alertmanager_base: Path = Field(
        default=Path("../prometheus/alertmanager.yml"),
        description="the single-host Alertmanager config whose routes, timings and operators' "
        "receivers the fleet keeps (relative to the inventory file)",
    )
    alertmanagers: tuple[Listen, ...] = Field(min_length=1, description="HOST:PORT of each one")
    token_dir: Path = Path("/etc/alertmanager/glyph-guard")
    hosts: Annotated[tuple[FleetHost, ...], NamedList] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Inventory:
        names = [host.name for host in self.hosts]
        if len(names) != len(set(names)):
            raise ValueError("host names must be unique")
        seen: dict[tuple[str, int], str] = {}
        for host in self.hosts:
            for field in ("exporter_port", "remediator_port", "vllm_port"):
                port = getattr(host, field)
                if port is None:
                    continue
                where = f"{host.name}.{field}"
                other = seen.setdefault((host.address, port), where)
                if other != where:
                    raise ValueError(f"{other} and {where} both use {host.target(port)}")
        return self

    def token_file(self, host: FleetHost) -> Path:
        return host.token_file or self.token_dir / host.name


def parse_inventory(data: Any, source: str = "inventory") -> Inventory:
    """Validate loaded YAML into an Inventory; a ConfigError names each bad field."""
    return validate_data(Inventory, data, source)


def load_inventory(path: Path) -> Inventory:
    return load_file(Inventory, path)


def render_alertmanager(inventory: Inventory, base: dict[str, Any]) -> dict[str, Any]:
    """The base config with its remediator route split into one route and receiver per host."""
    data = copy.deepcopy(base)
    receivers = data.get("receivers") or []
    template = next((r for r in receivers if r.get("name") == REMEDIATOR_RECEIVER), None)
    route = data.get("route") or {}
    parent = next(
        (r for r in route.get("routes") or [] if r.get("receiver") == REMEDIATOR_RECEIVER), None
    )
    if template is None or parent is None or not template.get("webhook_configs"):
        raise ConfigError(
            f"alertmanager_base: needs a receiver {REMEDIATOR_RECEIVER!r} with a webhook_config "
            "and a route to it, as deploy/prometheus/alertmanager.yml has"
        )
    hosts = sorted(inventory.hosts, key=lambda h: h.name)
    group_by = route.setdefault("group_by", [])
    if HOST_LABEL not in group_by and "..." not in group_by:
        group_by.append(HOST_LABEL)  # operators get one notification per host, too
    parent["receiver"] = UNROUTED_RECEIVER
    parent["routes"] = [
        {"receiver": f"remediator-{h.name}", "matchers": [f'{HOST_LABEL}="{h.name}"']}
        for h in hosts
    ]
    per_host = []
    for host in hosts:
        hook = copy.deepcopy(template["webhook_configs"][0])
        hook["url"] = f"http://{host.target(host.remediator_port)}/alerts"
        auth = hook.setdefault("http_config", {}).setdefault("authorization", {"type": "Bearer"})
        auth.pop("credentials", None)
        auth["credentials_file"] = str(inventory.token_file(host))
        per_host.append({"name": f"remediator-{host.name}", "webhook_configs": [hook]})
    others = [r for r in receivers if r.get("name") != REMEDIATOR_RECEIVER]
    data["receivers"] = [*others, {"name": UNROUTED_RECEIVER}, *per_host]
    return data


def render_targets(inventory: Inventory) -> dict[str, list[dict[str, Any]]]:
    """file_sd target groups per job; each host's targets carry its `host` label."""
    hosts = sorted(inventory.hosts, key=lambda h: h.name)

    def groups(port_of: str) -> list[dict[str, Any]]:
        found = []
        for host in hosts:
            port = getattr(host, port_of)
            if port is None:
                continue
            labels = {HOST_LABEL: host.name}
            if port_of == "vllm_port" and host.vllm_component is not None:
                labels["component"] = host.vllm_component
            found.append({"targets": [host.target(port)], "labels": labels})
        return found

    return {
        "glyph-exporter": groups("exporter_port"),
        "glyph-remediator": groups("remediator_port"),
        "vllm": groups("vllm_port"),
        "alertmanagers": [{"targets": list(inventory.alertmanagers), "labels": {}}],
    }


def render_files(inventory: Inventory, inventory_path: Path) -> dict[str, str]:
    """Relative path -> content of every file the inventory renders, byte for byte stable."""
    base_path = inventory_path.parent / inventory.alertmanager_base
    try:
        base = yaml.safe_load(base_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{inventory_path}: alertmanager_base: cannot read {base_path}: {exc}"
        ) from None
    if not isinstance(base, dict):
        raise ConfigError(f"{inventory_path}: alertmanager_base: {base_path} is not a mapping")
    header = HEADER.format(inventory=inventory_path.name)
    files = {
        "alertmanager.yml": header
        + yaml.safe_dump(render_alertmanager(inventory, base), sort_keys=False),
    }
    for job, groups in render_targets(inventory).items():
        files[f"targets/{job}.json"] = json.dumps(groups, indent=2) + "\n"
    return files
