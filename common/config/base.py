"""What every config file shares: the frozen base model, listen addresses, the YAML loader and
errors that name the field."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # a fleet host name, as its `host` label


class ConfigError(Exception):
    """An invalid config; the message names the field and the problem."""


class Frozen(BaseModel):
    """A config section: immutable, and no key it does not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """True when a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _valid_listen(value: str) -> str:
    parse_listen(value)
    return value


Listen = Annotated[str, AfterValidator(_valid_listen)]


def _named_list(value: Any) -> Any:
    """A YAML mapping of name -> body as the list of bodies, each with its name."""
    if isinstance(value, dict):
        return [{"name": k, **v} if isinstance(v, dict) else v for k, v in value.items()]
    return value


NamedList = BeforeValidator(_named_list)  # a top-level collection written as a named mapping

_UNION_TAGS = frozenset({"command", "systemd", "docker"})


def field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """pydantic's error location as a dotted path; an entry of a top-level collection is
    named by its key (or its `name`) instead of its index."""
    parts: list[str] = []
    node = data
    for item in loc:
        if (
            isinstance(item, str)
            and item in _UNION_TAGS
            and not (isinstance(node, dict) and item in node)
        ):
            continue  # pydantic adds the discriminator's value to the location
        if isinstance(item, int) and len(parts) == 1 and (named := _name_at(node, item)):
            node = node[named] if isinstance(node, dict) else node[item]
            parts.append(named)
        elif isinstance(item, int):
            parts[-1] = f"{parts[-1] if parts else ''}[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(item)
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _name_at(node: Any, index: int) -> str | None:
    """The key of a mapping's entry, or the `name` of a list's, at index."""
    if isinstance(node, dict) and index < len(node):
        return str(list(node)[index])
    if isinstance(node, list) and index < len(node) and isinstance(node[index], dict):
        name = node[index].get("name")
        return name if isinstance(name, str) and name else None
    return None


Model = TypeVar("Model", bound=BaseModel)


def validate_data(model: type[Model], data: Any, source: str) -> Model:
    """Validate loaded YAML into a model; a ConfigError names each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {field_path(tuple(error['loc']), data)}: {message}")
        raise ConfigError("\n".join(lines)) from None


def load_yaml(path: Path) -> Any:
    """A YAML file's data; a ConfigError says why it cannot be read or parsed, and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def load_file(model: type[Model], path: Path) -> Model:
    """Read and validate a config file."""
    return validate_data(model, load_yaml(path), str(path))


def with_override(config: Model, field: str, value: Any, source: str) -> Model:
    """The config with one dotted field replaced, validated exactly as the file's fields are
    (model_copy would skip the validators); a ConfigError names source and the field."""
    data = config.model_dump(mode="json")
    *parents, last = field.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return validate_data(type(config), data, source)
