"""The `glyph-standin` command line: run the stand-in's components, its faults, a port holder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias, TypeVar

from glyph_guard_demo.standin.api import ApiOptions, run_api
from glyph_guard_demo.standin.gpu import NEEDS_GPU, backend_installed
from glyph_guard_demo.standin.holdport import hold_port
from glyph_guard_demo.standin.launcher import AllOptions, run_all
from glyph_guard_demo.standin.load import LoadOptions, run_load
from glyph_guard_demo.standin.names import MODEL_NAME, STAND_IN_NOTICE
from glyph_guard_demo.standin.ui import UiOptions, default_cache_dir, run_ui

COMMANDS = ("all", "api", "ui", "hold-port", "load")
N = TypeVar("N", int, float)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

_API_ADMIN = """run-time faults (loopback clients only):
  POST /admin/fault {"fault": "engine_death", "exit_code": 1}
  POST /admin/fault {"fault": "hang", "enabled": true}
  POST /admin/fault {"fault": "crash", "orphan_engine": true}   (exit code 70)
  POST /admin/fault {"fault": "slow", "seconds": 2.5}
  POST /admin/fault {"fault": "slow_prefill", "seconds": 6}   (steps pause, then go on)
  POST /admin/fault {"fault": "rss_leak", "mb_per_request": 50, "mb_per_minute": 0,
                     "where": "engine"}
  POST /admin/fault {"fault": "gpu_leak", "mb_per_request": 100, "allocate_mb": 0}
  POST /admin/fault {"fault": "clear"}   (stops them; leaked memory stays held)
  GET  /admin/faults
sleep mode (as vLLM's): POST /sleep?level=1, POST /wake_up, GET /is_sleeping"""

_UI_ADMIN = """run-time faults (loopback clients only):
  POST /admin/fault {"fault": "cache_growth", "kb_per_minute": 1024}
  POST /admin/fault {"fault": "slow", "seconds": 2.5}
  POST /admin/fault {"fault": "crash"}   (exit code 70)
  POST /admin/fault {"fault": "clear"}
  GET  /admin/faults"""

_DESCRIPTION = f"""{STAND_IN_NOTICE}.

Runs a vLLM-shaped API (with an engine child process) and a Gradio-shaped UI on loopback,
without a GPU or model weights, with faults on demand for tests, demos and benchmarks.
Faults can also be switched at run time: POST /admin/fault (loopback clients only)."""


def _bounded(cast: Callable[[str], N], low: N, high: N, what: str) -> Callable[[str], N]:
    """An argparse type: `what` parsed by cast, between low and high inclusive."""

    def parse(text: str) -> N:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}: {text}")
        return value

    return parse


_port = _bounded(int, 1, 65535, "a port number")
_seconds = _bounded(float, 0.0, 86400.0, "a number")
_amount = _bounded(float, 0.0, float(1 << 24), "a number")
_count = _bounded(int, 0, 100_000, "a whole number")


def _common(parser: argparse.ArgumentParser, port: int) -> argparse._ArgumentGroup:
    """Options both components take; returns the group for their run-time faults."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=port, help="port (default: %(default)s)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    faults = parser.add_argument_group("start-up faults")
    faults.add_argument(
        "--startup-delay",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="slow start: the port opens only after S seconds (like model loading)",
    )
    faults.add_argument(
        "--fail-start-after",
        type=_seconds,
        default=None,
        metavar="S",
        help="a start that fails: exit 1 after S seconds (for crash loops)",
    )
    running = parser.add_argument_group(
        "run-time faults, switched on at start (or later: POST /admin/fault)"
    )
    running.add_argument(
        "--slow-seconds",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="slow responses: every completion or predict takes S extra seconds",
    )
    return running


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glyph-standin",
        description=_DESCRIPTION,
        epilog="Without a command, runs `all`. See `glyph-standin COMMAND --help`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_all(commands)
    _add_api(commands)
    _add_ui(commands)
    _add_hold_port(commands)
    _add_load(commands)
    return parser


_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_all(commands: _Commands) -> None:
    run_all = commands.add_parser(
        "all",
        help="run the api and ui components as child processes (default)",
        description=f"{STAND_IN_NOTICE}. Runs api and ui; SIGTERM / SIGINT stops both.",
    )
    run_all.add_argument("--host", default="127.0.0.1")
    run_all.add_argument("--api-port", type=_port, default=5002)
    run_all.add_argument("--ui-port", type=_port, default=7860)
    run_all.add_argument("--cache-dir", type=Path, default=None, help="the ui's cache directory")
    run_all.add_argument("--pages-dir", type=Path, default=None, help="the api's pages directory")
    run_all.add_argument("--log-level", choices=LOG_LEVELS, default="info")


def _add_api(commands: _Commands) -> None:
    api = commands.add_parser(
        "api",
        help="the vLLM-shaped API process with its engine child",
        description=f"{STAND_IN_NOTICE}. A vLLM-shaped API process (/health, /v1/models, "
        "/v1/chat/completions, /metrics, /sleep, /wake_up) that spawns an engine child process.",
        epilog=_API_ADMIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    faults = _common(api, 5002)
    _add_api_engine(api)
    _add_api_faults(faults)


def _add_api_engine(api: argparse.ArgumentParser) -> None:
    """How the API and its engine behave when nothing is wrong."""
    api.add_argument(
        "--pages-dir",
        type=Path,
        default=None,
        help="where the engine writes rendered PNG pages (default: "
        "/tmp/glyph-standin-pages-PORT, so instances never prune each other's pages)",
    )
    api.add_argument(
        "--vllm-generation",
        choices=("0.10", "current"),
        default="current",
        help="the vLLM it imitates: when the engine dies, /health answers 500 and the API exits "
        "with code 1 after 5 s (0.10, Glyph's pin), or /health answers 503 and the API exits "
        "with code 0 within 0.6-5 s, and a request on a sleeping engine waits (current, 0.32) "
        "(default: %(default)s)",
    )
    api.add_argument(
        "--step-seconds",
        type=_seconds,
        default=0.02,
        metavar="S",
        help="how long one engine step (one token of every running request) takes "
        "(default: %(default)s)",
    )
    api.add_argument(
        "--enable-server-load-tracking",
        action="store_true",
        help="GET /load answers the number of requests the API holds (as vLLM's flag)",
    )
    api.add_argument(
        "--keep-alive-on-engine-death",
        action="store_true",
        help="stay up when the engine dies (also env VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1)",
    )
    api.add_argument(
        "--orphan-engine-on-crash",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="when the API process crashes or is killed, the engine (and its worker) stays "
        "behind as an orphan (default: on for the current generation, as vLLM 0.32 does)",
    )


def _add_api_faults(faults: argparse._ArgumentGroup) -> None:
    faults.add_argument("--hang", action="store_true", help="the engine makes no more steps")
    faults.add_argument(
        "--slow-prefill-seconds",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="each prefill step takes S seconds: steps pause, then go on",
    )
    faults.add_argument(
        "--engine-death-after",
        type=_seconds,
        default=None,
        metavar="S",
        help="the engine exits S seconds after loading",
    )
    faults.add_argument(
        "--crash-after",
        type=_seconds,
        default=None,
        metavar="S",
        help="the API process crashes S seconds after loading",
    )
    faults.add_argument("--rss-leak-mb-per-request", type=_amount, default=0.0, metavar="MB")
    faults.add_argument("--rss-leak-mb-per-minute", type=_amount, default=0.0, metavar="MB")
    faults.add_argument(
        "--leak-in",
        choices=("engine", "api"),
        default="engine",
        help="which process holds the RSS leak (default: %(default)s)",
    )
    faults.add_argument(
        "--gpu-memory-mb",
        type=_amount,
        default=0.0,
        metavar="MB",
        help="GPU memory the engine holds (needs torch or cupy and a GPU)",
    )
    faults.add_argument(
        "--gpu-leak-mb-per-request",
        type=_amount,
        default=0.0,
        metavar="MB",
        help="GPU memory leaked per request (needs torch or cupy and a GPU)",
    )


def _add_ui(commands: _Commands) -> None:
    ui = commands.add_parser(
        "ui",
        help="the Gradio-shaped UI process",
        description=f"{STAND_IN_NOTICE}. A Gradio-shaped UI: GET /config, GET /, "
        'POST /gradio_api/predict {"data": [text]}; copies rendered pages into its cache.',
        epilog=_UI_ADMIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ui_faults = _common(ui, 7860)
    ui.add_argument("--api-url", default="http://127.0.0.1:5002", help="the api component")
    ui.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="cache directory, never cleaned (default: $GRADIO_TEMP_DIR or /tmp/gradio-standin)",
    )
    ui.add_argument("--request-timeout", type=_seconds, default=1200.0, metavar="S")
    ui_faults.add_argument(
        "--cache-growth-kb-per-minute",
        type=_amount,
        default=0.0,
        metavar="KB",
        help="cache growth: write this many KB of files per minute into the cache",
    )


def _add_hold_port(commands: _Commands) -> None:
    hold = commands.add_parser(
        "hold-port",
        help="hold a port like a leftover process (listen, never answer)",
        description=f"{STAND_IN_NOTICE}. Binds HOST:PORT, listens, never answers; "
        "exits on SIGTERM / SIGINT.",
    )
    hold.add_argument("port", type=_port)
    hold.add_argument("--host", default="127.0.0.1")


def _add_load(commands: _Commands) -> None:
    load = commands.add_parser(
        "load",
        help="generate load: streams of long generations and queue bursts",
        description=f"{STAND_IN_NOTICE}. Keeps CONCURRENCY streams of long generations "
        "(ignore_eos, MAX_TOKENS each) running against an OpenAI-compatible API, plus optional "
        "bursts of short requests; prints a JSON summary and exits 1 if any request failed.",
    )
    load.add_argument("--url", default="http://127.0.0.1:5002", help="the api component")
    load.add_argument("--model", default=MODEL_NAME)
    load.add_argument("--concurrency", type=_count, default=4)
    load.add_argument("--max-tokens", type=_count, default=1000)
    load.add_argument("--duration", type=_seconds, default=60.0, metavar="S")
    load.add_argument("--burst-every", type=_seconds, default=0.0, metavar="S")
    load.add_argument("--burst-size", type=_count, default=0)


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or (args_in[0].startswith("-") and args_in[0] not in ("-h", "--help")):
        args_in.insert(0, "all")
    parser = build_parser()
    args = parser.parse_args(args_in)
    if args.command == "api":
        return _api(parser, args)
    if args.command == "ui":
        return run_ui(
            UiOptions(
                host=args.host,
                port=args.port,
                api_url=args.api_url,
                cache_dir=args.cache_dir or default_cache_dir(),
                request_timeout=args.request_timeout,
                log_level=args.log_level,
                startup_delay=args.startup_delay,
                fail_start_after=args.fail_start_after,
                slow_seconds=args.slow_seconds,
                cache_growth_kb_per_minute=args.cache_growth_kb_per_minute,
            )
        )
    if args.command == "hold-port":
        return hold_port(args.host, args.port)
    if args.command == "load":
        return run_load(
            LoadOptions(
                url=args.url,
                model=args.model,
                concurrency=args.concurrency,
                max_tokens=max(1, args.max_tokens),
                duration=args.duration,
                burst_every=args.burst_every,
                burst_size=args.burst_size,
            )
        )
    return run_all(
        AllOptions(
            host=args.host,
            api_port=args.api_port,
            ui_port=args.ui_port,
            cache_dir=args.cache_dir,
            pages_dir=args.pages_dir,
            log_level=args.log_level,
        )
    )


def _api(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if (args.gpu_memory_mb or args.gpu_leak_mb_per_request) and backend_installed() is None:
        parser.exit(2, f"glyph-standin api: error: {NEEDS_GPU}: neither is installed\n")
    return run_api(
        ApiOptions(
            host=args.host,
            port=args.port,
            pages_dir=args.pages_dir or Path(f"/tmp/glyph-standin-pages-{args.port}"),
            log_level=args.log_level,
            vllm_generation=args.vllm_generation,
            keep_alive_on_engine_death=args.keep_alive_on_engine_death,
            orphan_engine_on_crash=args.vllm_generation == "current"
            if args.orphan_engine_on_crash is None
            else args.orphan_engine_on_crash,
            startup_delay=args.startup_delay,
            fail_start_after=args.fail_start_after,
            hang=args.hang,
            slow_seconds=args.slow_seconds,
            rss_leak_mb_per_request=args.rss_leak_mb_per_request,
            rss_leak_mb_per_minute=args.rss_leak_mb_per_minute,
            leak_in=args.leak_in,
            gpu_memory_mb=args.gpu_memory_mb,
            gpu_leak_mb_per_request=args.gpu_leak_mb_per_request,
            engine_death_after=args.engine_death_after,
            crash_after=args.crash_after,
            step_seconds=args.step_seconds,
            slow_prefill_seconds=args.slow_prefill_seconds,
            server_load_tracking=args.enable_server_load_tracking,
        )
    )
