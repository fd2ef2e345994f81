"""The deployment config: one YAML file describing components, exporter and remediator."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"  # a fleet host name, as its `host` label


class ConfigError(Exception):
    """An invalid config; the message names the field and the problem."""


class _Frozen(BaseModel):
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


class Matcher(_Frozen):
    """How to recognise a component's main process; a component is its whole tree."""

    program: str | None = Field(
        default=None,
        description="regular expression the program's name must match in full: argv[0]'s"
        " basename, or the script or `-m` module an interpreter (python, sh...) runs",
    )
    args: str | None = Field(
        default=None, description="regular expression searched in the program's own arguments"
    )
    cmdline: str | None = Field(
        default=None,
        description="regular expression searched in the space-joined argv (of any program,"
        " wrappers too: prefer program and args)",
    )
    pidfile: Path | None = Field(default=None, description="file holding the main PID")
    user: str | None = Field(default=None, description="user name or UID the process runs as")

    @field_validator("program", "args", "cmdline")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_way(self) -> Matcher:
        if self.program is None and self.cmdline is None and self.pidfile is None:
            raise ValueError("set program, cmdline or pidfile")
        if self.args is not None and self.program is None:
            raise ValueError("args needs a program")
        if self.pidfile is not None and (self.program, self.cmdline, self.user) == (None,) * 3:
            raise ValueError(
                "a pidfile alone proves nothing about the PID it holds: also set program,"
                " cmdline or user"
            )
        return self


class Probe(_Frozen):
    """An HTTP check of a component: a GET probe or a tiny completion (canary)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    kind: Literal["http", "canary"] = "http"
    path: Annotated[str, Field(pattern=r"^/")] = "/health"
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: tuple[int, ...] = Field(default=(200,), min_length=1)
    timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 2.0
    model: str | None = Field(
        default=None,
        description="model name a canary asks for; default: the first one /v1/models serves",
    )
    enabled: bool = True

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for code in value:
            if not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status")
        return value

    @model_validator(mode="after")
    def _canary_posts(self) -> Probe:
        if self.kind == "canary" and self.method != "POST":
            return self.model_copy(update={"method": "POST"})
        return self


_SHARED_PARENTS = frozenset({"/home", "/var", "/usr", "/etc", "/run"})


def _glob_root(glob: str) -> Path:
    parts: list[str] = []
    for part in Path(glob).parts:
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return Path(*parts)


def _shared_directory(root: Path) -> bool:
    """A top-level directory (/tmp, /home, /etc...), or one level below a shared one
    (/home/alice, /var/tmp, /usr/local): too wide for a cache glob."""
    parts = root.parts
    return len(parts) <= 2 or (len(parts) == 3 and str(Path(*parts[:2])) in _SHARED_PARENTS)


class Cache(_Frozen):
    """A cache directory glob whose files count against the component."""

    glob: Annotated[str, Field(min_length=2)]
    owner: str | None = Field(
        default=None, description="user name or UID whose files clean_cache may delete"
    )

    @field_validator("glob")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path glob")
        if ".." in Path(value).parts:
            raise ValueError("must not contain '..'")
        root = _glob_root(value)
        if _shared_directory(root):
            raise ValueError(
                f"{value} is rooted at {root}, a system or home directory that other programs"
                " and users share: name the cache's own directory (e.g. /tmp/gradio/**)"
            )
        return value

    @property
    def root(self) -> Path:
        """The longest leading directory without wildcards; nothing outside it is touched."""
        return _glob_root(self.glob)


class CommandRestart(_Frozen):
    """Restart by stopping the process tree and running a start argv."""

    backend: Literal["command"] = "command"
    start: tuple[str, ...] = Field(min_length=1, description="argv, no shell")
    stop: tuple[str, ...] | None = Field(default=None, description="optional argv run first")
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    log_file: Path | None = None
    log_max_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=50 * 1024 * 1024, description="the start's output file is rotated at this size"
    )
    log_backups: Annotated[int, Field(ge=0, le=100)] = Field(
        default=3, description="rotated output files kept (FILE.1 ... FILE.N)"
    )


class SystemdRestart(_Frozen):
    """Restart a systemd unit with systemctl."""

    backend: Literal["systemd"]
    unit: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_.@-]+\.(service|scope)$")]
    systemctl: str = "systemctl"


class DockerRestart(_Frozen):
    """Restart a container through the Docker Engine API on its unix socket."""

    backend: Literal["docker"]
    container: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    socket: Path = Path("/var/run/docker.sock")


RestartMethod = Annotated[
    CommandRestart | SystemdRestart | DockerRestart, Field(discriminator="backend")
]


class Remediation(_Frozen):
    """What the remediator may do to a component, and how."""

    actions: tuple[Literal["restart", "clean_cache"], ...] = ("restart",)
    restart: RestartMethod | None = None
    stop_grace_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0
    release_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    startup_timeout_seconds: Annotated[float, Field(gt=0, le=7200)] = 600.0
    kill_port_holders: bool = Field(
        default=False, description="also stop foreign processes holding the port"
    )
    clean_cache_min_age_seconds: Annotated[float, Field(ge=0)] = 3600.0

    @field_validator("restart", mode="before")
    @classmethod
    def _command_by_default(cls, value: Any) -> Any:
        if isinstance(value, dict) and "backend" not in value:
            return {"backend": "command", **value}
        return value

    @model_validator(mode="after")
    def _restart_needs_method(self) -> Remediation:
        if "restart" in self.actions and self.restart is None:
            raise ValueError("the 'restart' action needs a 'restart' method")
        return self


class EngineEndpoint(_Frozen):
    """Where a component's engine publishes its progress (vLLM's own /metrics) and how long
    it may hold work without making a step before it counts as hung."""

    path: Annotated[str, Field(pattern=r"^/")] = "/metrics"
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    stall_seconds: Annotated[float, Field(ge=1, le=3600)] = 10.0


class Component(_Frozen):
    """One guarded part of the service (e.g. the vLLM API or the Gradio UI)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    match: Matcher
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    probes: tuple[Probe, ...] = ()
    engine: EngineEndpoint | None = Field(
        default=None, description="the engine's metrics endpoint on the component's port"
    )
    caches: tuple[Cache, ...] = ()
    memory_limit_bytes: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="limit for the RSS leak trend; default: host memory"
    )
    remediation: Remediation = Remediation(actions=())

    @field_validator("caches", mode="before")
    @classmethod
    def _glob_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"glob": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _probes_need_port(self) -> Component:
        if self.probes and self.port is None:
            raise ValueError("probes need a 'port'")
        if self.engine is not None and self.port is None:
            raise ValueError("'engine' needs a 'port'")
        names = [probe.name for probe in self.probes]
        if len(names) != len(set(names)):
            raise ValueError("probe names must be unique")
        if "clean_cache" in self.remediation.actions and not self.caches:
            raise ValueError("the 'clean_cache' action needs 'caches'")
        return self

    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class Intervals(_Frozen):
    """How often each sampler runs, in seconds."""

    liveness: Annotated[float, Field(ge=0.1, le=3600)] = 1.0
    ports: Annotated[float, Field(ge=0.1, le=3600)] = 10.0
    probes: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    canary: Annotated[float, Field(ge=1, le=3600)] = 10.0
    engine: Annotated[float, Field(ge=0.1, le=3600)] = 1.0
    gpu: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    caches: Annotated[float, Field(ge=1, le=86400)] = 30.0


_HOUR = 3600.0
Positive = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class LeakSettings(_Frozen):
    """How the leak detector judges a series (exporter.leak); the defaults are the exporter's."""

    window_seconds: Positive = Field(
        default=2 * _HOUR, description="the longest window; the others are its 1/n, 2/n, ..."
    )
    windows: Annotated[int, Field(ge=1, le=12)] = Field(default=6, description="windows judged")
    blocks: Annotated[int, Field(ge=4, le=24)] = Field(
        default=6, description="blocks per window, one floor each"
    )
    bin_seconds: Positive = Field(default=60.0, description="samples reduce to bins this long")
    history_seconds: Positive = Field(
        default=6 * _HOUR, description="how much of the segment is kept (memory and cost)"
    )
    grace_seconds: Annotated[float, Field(ge=0)] = Field(
        default=_HOUR, description="nothing is suspected this soon after a (re)start"
    )
    warmup_seconds: Annotated[float, Field(ge=0)] = Field(
        default=1200.0, description="no window reaches back into a segment's first seconds"
    )
    min_history_seconds: Annotated[float, Field(ge=0)] = Field(
        default=1800.0, description="older floors a window's last one is compared with"
    )
    min_rate_bytes_per_second: Positive = Field(
        default=150e6 / _HOUR, description="the least floor slope suspected (150 MB/h)"
    )
    min_rise_bytes: Annotated[float, Field(ge=0)] = Field(
        default=300e6, description="the least rise over a window at its slope"
    )
    min_sigmas: Positive = Field(default=4.0, description="standard errors the slope must clear")
    min_reach_seconds: Annotated[float, Field(ge=0)] = Field(
        default=300.0, description="a floor is taken over at least this much of the past"
    )
    floor_quantile: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.2, description="quantile of a block's bin minima that is its floor"
    )
    history_quantile: Annotated[float, Field(ge=0, le=1)] = Field(
        default=1.0, description="the older floors' level a leak must rise above"
    )
    min_late_fraction: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.5, description="the later half must rise at this fraction of the earlier's rate"
    )
    max_top_steps_share: Fraction = Field(
        default=0.75, description="the two largest block steps carry at most this of the rise"
    )
    max_fall_back_fraction: Annotated[float, Field(ge=0)] = Field(
        default=0.5, description="older floors may have fallen by at most this of the rise"
    )
    confirm_bins: Annotated[int, Field(ge=1, le=60)] = Field(
        default=3, description="a majority of this many latest bins must find a rising floor"
    )
    restart_drop_fraction: Fraction = Field(
        default=0.5, description="a fall by this fraction of the recent median is a restart"
    )
    max_gap_seconds: Positive = Field(
        default=0.5 * _HOUR, description="a longer gap in the samples starts a new segment"
    )

    @model_validator(mode="after")
    def _fits(self) -> LeakSettings:
        if self.history_seconds < self.window_seconds:
            raise ValueError("history_seconds must be >= window_seconds")
        if self.window_seconds / self.windows < 2 * self.blocks * self.bin_seconds:
            raise ValueError("the shortest window must hold two bins per block")
        return self


def _valid_listen(value: str) -> str:
    parse_listen(value)
    return value


Listen = Annotated[str, AfterValidator(_valid_listen)]


class ExporterSettings(_Frozen):
    """The exporter's own section."""

    listen: Listen = "127.0.0.1:9842"
    intervals: Intervals = Intervals()
    nvml: bool = Field(default=True, description="read GPUs through NVML when available")
    leak: LeakSettings = Field(default=LeakSettings(), description="leak detector tuning")

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


class BasicAuth(_Frozen):
    username: Annotated[str, Field(min_length=1)]
    password_file: Path


# Budget keys whose meaning changed: rejected, with what replaced them.
_REPLACED_BUDGET_KEYS = {
    "max_restarts": "replaced by max_failed_restarts, which counts only consecutive restarts"
    " that did not give a lasting healthy service (restarts that stay healthy for"
    " min_healthy_seconds never spend it)",
    "window_seconds": "removed: failed restarts no longer expire with a window; a restart that"
    " stays healthy for min_healthy_seconds clears them (see max_failed_restarts)",
    "backoff_reset_seconds": "removed: the back-off grows only with restarts that did not give"
    " a lasting recovery, and a restart that stays healthy for min_healthy_seconds resets it"
    " with the failure count",
}


class Budget(_Frozen):
    """Crash-loop safety: cooldown, back-off, and how many failed restarts in a row give up."""

    cooldown_seconds: Annotated[float, Field(ge=0)] = Field(
        default=30.0,
        description="how long an alert that began before the last restart finished waits",
    )
    backoff_initial_seconds: Annotated[float, Field(ge=0)] = 1.0  # as Kubernetes (KEP-4603)
    backoff_max_seconds: Annotated[float, Field(ge=0)] = 60.0
    min_healthy_seconds: Annotated[float, Field(gt=0)] = Field(
        default=10.0,
        description="a restart verified healthy that stays up this long is a lasting recovery",
    )
    max_failed_restarts: Annotated[int, Field(ge=1)] = Field(
        default=5,
        description="consecutive restarts without a lasting recovery before giving up",
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, replacement in _REPLACED_BUDGET_KEYS.items():
                if key in data:
                    raise ValueError(f"{key} is no longer supported: {replacement}")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Budget:
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_initial_seconds")
        return self


class Retention(_Frozen):
    """How long the remediator keeps payloads, decisions and seen alerts (actions stay)."""

    max_age_seconds: Annotated[float, Field(gt=0)] = 30 * 86400.0
    max_rows: Annotated[int, Field(ge=100)] = 100_000


class RemediatorSettings(_Frozen):
    """The remediator's own section."""

    listen: Listen = "127.0.0.1:9843"
    allowed_hosts: tuple[str, ...] = Field(
        default=(), description="host names clients may call the remediator by (IPs always)"
    )
    token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    state_db: Path = Path("/var/lib/glyph-guard/remediator.sqlite")
    log_dir: Path = Path("/var/log/glyph-guard")
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    budget: Budget = Budget()
    dry_run: bool = False
    store_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0, description="longest wait for one SQLite operation before acting without it"
    )
    retention: Retention = Retention()
    max_alerts_per_delivery: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


class Deployment(_Frozen):
    """A whole deployment: its components and both services' settings."""

    components: tuple[Component, ...] = Field(min_length=1)
    exporter: ExporterSettings = ExporterSettings()
    remediator: RemediatorSettings = RemediatorSettings()
    host: str | None = Field(
        default=None,
        pattern=HOST_PATTERN,
        description="this host's name in a fleet: alerts whose `host` label differs are refused",
    )

    @field_validator("components", mode="before")
    @classmethod
    def _named_mapping(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [
                {"name": name, **body} if isinstance(body, dict) else body
                for name, body in value.items()
            ]
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> Deployment:
        names = [component.name for component in self.components]
        if len(names) != len(set(names)):
            raise ValueError("component names must be unique")
        return self

    def component(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)


_UNION_TAGS = frozenset({"command", "systemd", "docker"})


def _field_path(loc: tuple[int | str, ...], data: Any) -> str:
    """Turn pydantic's error location into a dotted path, naming components instead of indexes."""
    parts: list[str] = []
    node = data
    for item in loc:
        if (
            isinstance(item, str)
            and item in _UNION_TAGS
            and not (isinstance(node, dict) and item in node)
        ):
            continue  # pydantic adds the discriminator's value to the location
        if isinstance(item, int) and parts == ["components"]:
            node, name = _component_at(node, item)
            parts.append(name)
        elif isinstance(item, int):
            parts[-1] = f"{parts[-1] if parts else ''}[{item}]"
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(item)
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _component_at(node: Any, index: int) -> tuple[Any, str]:
    if isinstance(node, dict) and index < len(node):
        name = list(node)[index]
        return node[name], str(name)
    if isinstance(node, list) and index < len(node):
        item = node[index]
        named = isinstance(item, dict) and isinstance(item.get("name"), str)
        return item, item["name"] if named else f"[{index}]"
    return None, f"[{index}]"


Model = TypeVar("Model", bound=BaseModel)
FieldPath = Callable[[tuple[int | str, ...], Any], str]


def validate_file_data(
    model: type[Model], data: Any, source: str, where: FieldPath = _field_path
) -> Model:
    """Validate loaded YAML into a model; a ConfigError names each bad field (`where` says how
    to name it)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {where(tuple(error['loc']), data)}: {message}")
        raise ConfigError("\n".join(lines)) from None


def parse_config(data: Any, source: str = "config") -> Deployment:
    """Validate already-loaded YAML data into a Deployment."""
    return validate_file_data(Deployment, data, source)


def load_config(path: Path) -> Deployment:
    """Read and validate a deployment YAML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_config(data, str(path))


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
