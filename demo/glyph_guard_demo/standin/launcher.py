"""`glyph-standin all`: runs the api and ui components as child processes and stops them cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from glyph_guard.common.stopping import stop_tree
from glyph_guard_demo.standin.names import STAND_IN_NOTICE

_STOP_GRACE = 10.0


@dataclass(frozen=True)
class AllOptions:
    host: str = "127.0.0.1"
    api_port: int = 5002
    ui_port: int = 7860
    cache_dir: Path | None = None
    pages_dir: Path | None = None
    log_level: str = "info"


def component_argv(options: AllOptions) -> dict[str, list[str]]:
    """The argv of each component, as `python -m standin api|ui ...`."""
    api_url = f"http://{options.host}:{options.api_port}"
    api = ["api", "--host", options.host, "--port", str(options.api_port)]
    api += ["--log-level", options.log_level]
    if options.pages_dir is not None:
        api += ["--pages-dir", str(options.pages_dir)]
    ui = ["ui", "--host", options.host, "--port", str(options.ui_port), "--api-url", api_url]
    ui += ["--log-level", options.log_level]
    if options.cache_dir is not None:
        ui += ["--cache-dir", str(options.cache_dir)]
    prefix = [sys.executable, "-m", "glyph_guard_demo.standin"]
    return {"api": prefix + api, "ui": prefix + ui}


def run_all(options: AllOptions) -> int:
    """Start both components, print their PIDs and URLs, stop both on SIGTERM / SIGINT."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    urls = {
        "api": f"http://{options.host}:{options.api_port}",
        "ui": f"http://{options.host}:{options.ui_port}",
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    print(STAND_IN_NOTICE, flush=True)
    for name, argv in component_argv(options).items():
        children[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        print(f"{name}: pid {children[name].pid}, {urls[name]}", flush=True)
    codes: dict[str, int] = {}
    while not stop.is_set() and len(codes) < len(children):
        for name, child in children.items():
            code = child.poll()
            if code is not None and name not in codes:
                codes[name] = code
                print(f"{name}: pid {child.pid} exited with code {code}", flush=True)
        stop.wait(0.2)
    _stop_children(children)
    for name, child in children.items():
        codes.setdefault(name, child.returncode if child.returncode is not None else 0)
    if stop.is_set():
        print("glyph-standin: stopped", flush=True)
        return 0
    return 0 if all(code == 0 for code in codes.values()) else 1


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop every running child with its own children (the api's engine), then reap them."""
    stop_tree([child.pid for child in children.values() if child.poll() is None], _STOP_GRACE)
    for child in children.values():
        child.wait()
