"""The components section: how each guarded part is recognised, probed, measured and restarted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from glyph_guard.common.config.base import NAME_PATTERN, Frozen


class Matcher(Frozen):
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


class Probe(Frozen):
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


class Cache(Frozen):
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


class CommandRestart(Frozen):
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


class SystemdRestart(Frozen):
    """Restart a systemd unit with systemctl."""

    backend: Literal["systemd"]
    unit: Annotated[str, Field(pattern=r"^[A-Za-z0-9:_.@-]+\.(service|scope)$")]
    systemctl: str = "systemctl"


class DockerRestart(Frozen):
    """Restart a container through the Docker API on its unix socket."""

    backend: Literal["docker"]
    container: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    socket: Path = Path("/var/run/docker.sock")


RestartMethod = Annotated[
    CommandRestart | SystemdRestart | DockerRestart, Field(discriminator="backend")
]


class Remediation(Frozen):
    """What the remediator may do to a component, and how."""

    actions: tuple[Literal["restart", "clean_cache", "reset_gpu"], ...] = ("restart",)
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


class EngineEndpoint(Frozen):
    """Where a component's engine publishes its progress (vLLM's own /metrics) and how long
    it may hold work without making a step before it counts as hung."""

    path: Annotated[str, Field(pattern=r"^/")] = "/metrics"
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    stall_seconds: Annotated[float, Field(ge=1, le=3600)] = 10.0


class Component(Frozen):
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
    gpus: tuple[Annotated[int, Field(ge=0, le=255)], ...] = Field(
        default=(),
        description="indices (nvidia-smi -i) of the GPUs the component uses; empty: not said,"
        " a GPU anywhere on the host that needs a reset holds its restarts",
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
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError("gpus: each GPU index once")
        if "reset_gpu" in self.remediation.actions and not self.gpus:
            raise ValueError("the 'reset_gpu' action needs 'gpus' (the GPUs it may reset)")
        return self

    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
