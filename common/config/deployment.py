"""The deployment file: its components and both services' sections, read and written."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, model_validator

from glyph_guard.common.config.base import HOST_PATTERN, Frozen, NamedList, load_file, validate_data
from glyph_guard.common.config.components import Component
from glyph_guard.common.config.exporter import ExporterSettings
from glyph_guard.common.config.remediator import RemediatorSettings


class Deployment(Frozen):
    """A whole deployment: its components and both services' settings."""

    components: Annotated[tuple[Component, ...], NamedList] = Field(min_length=1)
    exporter: ExporterSettings = ExporterSettings()
    remediator: RemediatorSettings = RemediatorSettings()
    host: str | None = Field(
        default=None,
        pattern=HOST_PATTERN,
        description="this host's name in a fleet: alerts whose `host` label differs are refused",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Deployment:
        names = [component.name for component in self.components]
        if len(names) != len(set(names)):
            raise ValueError("component names must be unique")
        return self

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


def parse_config(data: Any, source: str = "config") -> Deployment:
    """Validate already-loaded YAML data into a Deployment."""
    return validate_data(Deployment, data, source)


def load_config(path: Path) -> Deployment:
    """Read and validate a deployment YAML file."""
    return load_file(Deployment, path)


def default_config() -> Deployment:
    """The built-in Glyph profile."""
    text = (
        resources.files("glyph_guard.common").joinpath("default.yaml").read_text(encoding="utf-8")
    )
    return parse_config(yaml.safe_load(text), "built-in profile")


def dump_config(config: Deployment) -> str:
    """The effective config as YAML, defaults filled in."""
    data = config.model_dump(mode="json")
    data["components"] = {c.pop("name"): c for c in data["components"]}
    return yaml.safe_dump(data, sort_keys=False)
