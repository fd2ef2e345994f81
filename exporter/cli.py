"""The glyph-exporter command: serve metrics, check a config, or replay a trace."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry

from glyph_guard.common.config import (
    ConfigError,
    Deployment,
    default_config,
    dump_config,
    load_config,
    with_override,
)
from glyph_guard.common.logflood import limit_log_floods
from glyph_guard.common.nvml import load_pynvml
from glyph_guard.common.reloading import reloaded
from glyph_guard.common.sdnotify import notify, watchdog_interval
from glyph_guard.exporter import __version__
from glyph_guard.exporter.exposition import Exposition
from glyph_guard.exporter.metrics import SnapshotCollector
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard.exporter.sampler import Sampler
from glyph_guard.exporter.server import MetricsServer
from glyph_guard.exporter.snapshot import Readings

log = logging.getLogger("glyph-exporter")


class Exporter:
    """Sampler plus HTTP server; constructing it is cheap, start() does the work."""

    def __init__(self, config: Deployment, *, nvml: NvmlReader | None) -> None:
        self.config = config
        self.sampler = Sampler(config, nvml)
        self.registry = CollectorRegistry(auto_describe=False)

        def snapshot() -> Readings:
            return self.sampler.snapshot()  # the sampler is replaced on reload

        self.registry.register(SnapshotCollector(snapshot))
        host, port = config.exporter.address
        self.server = MetricsServer(host, port, self.registry, Exposition(snapshot))

    def start(self) -> None:
        self.sampler.start()
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self.sampler.stop()

    def reload(self, config: Deployment, nvml: NvmlReader | None) -> list[str]:
        """Sample by a new config from now on; what only a restart applies is kept and named.

        Leak history carries over for each component and resource the new config still has
        (under the same leak settings): a reload (logrotate's SIGHUP) never resets a trend.
        """
        config, kept = reloaded(self.config, config, "exporter")
        sampler = Sampler(config, nvml, leaks=self.sampler.leaks.carried_to(config))
        self.sampler.stop()
        self.config, self.sampler = config, sampler
        sampler.start()
        return kept


def _load(path: str | None) -> Deployment:
    return default_config() if path is None else load_config(Path(path))


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="glyph-exporter",
        description="Prometheus exporter for a Glyph deployment. Other commands: "
        "'glyph-exporter check-config [FILE]', "
        "'glyph-exporter replay TRACE.csv --limit-bytes N'.",
    )
    parser.add_argument("--config", help="deployment YAML (default: the built-in Glyph profile)")
    parser.add_argument("--listen", help="HOST:PORT to serve /metrics on (overrides the config)")
    parser.add_argument("--no-nvml", action="store_true", help="do not read GPUs")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    parser.add_argument("--version", action="version", version=__version__)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    limit_log_floods()
    config = _load(args.config)
    if args.listen:
        config = with_override(config, "exporter.listen", args.listen, "--listen")

    def nvml_for(config: Deployment) -> NvmlReader | None:
        return NvmlReader(load_pynvml()) if config.exporter.nvml and not args.no_nvml else None

    try:
        exporter = Exporter(config, nvml=nvml_for(config))
    except OSError as exc:
        print(
            f"glyph-exporter: cannot listen on {config.exporter.listen}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    wake, done, reload = threading.Event(), threading.Event(), threading.Event()

    def _signalled(signum: int, frame: FrameType | None) -> None:
        (reload if signum == signal.SIGHUP else done).set()
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _signalled)
    exporter.start()
    log.info(
        "serving http://%s:%d/metrics for components %s",
        config.exporter.address[0],
        exporter.server.port,
        ", ".join(c.name for c in config.components),
    )
    notify("READY=1")
    beat = watchdog_interval()
    while not done.is_set():
        if not wake.wait(beat):
            notify("WATCHDOG=1")  # from the main thread, while the server and samplers run
        wake.clear()
        if reload.is_set() and not done.is_set():
            reload.clear()
            _reload(exporter, args, nvml_for)
    notify("STOPPING=1")
    exporter.stop()
    return 0


def _reload(
    exporter: Exporter,
    args: argparse.Namespace,
    nvml_for: Callable[[Deployment], NvmlReader | None],
) -> None:
    """SIGHUP: read the config again; a config with an error leaves the running one as it is."""
    notify("RELOADING=1")
    try:
        config = _load(args.config)
        if args.listen:
            config = with_override(config, "exporter.listen", args.listen, "--listen")
    except ConfigError as exc:
        log.error("reload: invalid config, keeping the running one:\n%s", exc)
    else:
        kept = exporter.reload(config, nvml_for(config))
        log.info(
            "reload: config applied%s", f" (a restart applies {', '.join(kept)})" if kept else ""
        )
    notify("READY=1")  # logs go to stderr (journald): nothing to reopen


def _check_config(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="glyph-exporter check-config",
        description="Validate a deployment config and print the effective one.",
    )
    parser.add_argument("file", nargs="?", help="deployment YAML (default: the built-in profile)")
    args = parser.parse_args(argv)
    config = _load(args.file)
    print(dump_config(config), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["check-config"]:
            return _check_config(argv[1:])
        if argv[:1] == ["replay"]:
            from glyph_guard.exporter.replay import replay_main  # noqa: PLC0415 (only this command needs it)

            return replay_main(argv[1:])
        return _run(argv)
    except ConfigError as exc:
        print(f"glyph-exporter: invalid config:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
