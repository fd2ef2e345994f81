"""The glyph-remediator command: serve the webhook safely, or operate a running one (ctl)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from glyph_guard.common.config import (
    ConfigError,
    Deployment,
    RemediatorSettings,
    dump_config,
    is_loopback,
    load_config,
    with_override,
)
from glyph_guard.common.logflood import limit_log_floods
from glyph_guard.common.sdnotify import notify, watchdog_interval
from glyph_guard.remediator import ctl
from glyph_guard.remediator.actions.gpu import GpuHolders
from glyph_guard.remediator.app import create_app
from glyph_guard.remediator.auth import Credentials, load_credentials
from glyph_guard.remediator.connections import server_limits
from glyph_guard.remediator.orchestrator import Orchestrator
from glyph_guard.remediator.store.database import Store
from glyph_guard.remediator.store.schema import StoreError

log = logging.getLogger("glyph_remediator")


def with_listen(config: Deployment, listen: str | None) -> Deployment:
    """The config with --listen applied (validated like the config field)."""
    if listen is None:
        return config
    return with_override(config, "remediator.listen", listen, "--listen")


def checked_credentials(settings: RemediatorSettings) -> Credentials:
    """Read the secrets; refuse a bind other machines can reach when there are none."""
    credentials = load_credentials(settings)
    host, _ = settings.address
    if not is_loopback(host) and not credentials.required:
        raise ConfigError(
            f"remediator.listen: refusing to listen on {settings.listen}, which is not a loopback"
            " address, without remediator.token_file or remediator.basic_auth"
        )
    return credentials


def build_server(
    config: Deployment,
    dry_run: bool = False,
    gpu: GpuHolders | None = None,
    reread: Callable[[], Deployment] | None = None,
) -> uvicorn.Server:
    """Everything checked and built; nothing listens until the server runs.

    reread: how SIGHUP reads the config again (None: SIGHUP is not handled).
    """
    settings = config.remediator
    credentials = checked_credentials(settings)
    store = Store.open(settings.state_db, settings.store_timeout_seconds)
    orchestrator = Orchestrator(config, store, dry_run=dry_run, gpu=gpu)
    host, port = settings.address
    server_config = uvicorn.Config(
        create_app(orchestrator, credentials),
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        server_header=False,
        log_config=None,
        **server_limits(),
    )
    server = NotifyingServer(server_config)
    if reread is not None:
        server.on_hangup = lambda: reload(orchestrator, reread)
    return server


def reload(orchestrator: Orchestrator, reread: Callable[[], Deployment]) -> None:
    """SIGHUP: read the config again; a config with an error leaves the running one as it is."""
    notify("RELOADING=1")
    try:
        config = reread()
        checked_credentials(config.remediator)
    except ConfigError as exc:
        log.error("reload: invalid config, keeping the running one:\n%s", exc)
    else:
        kept = orchestrator.reload(config)
        log.info(
            "reload: config applied%s", f" (a restart applies {', '.join(kept)})" if kept else ""
        )
    notify("READY=1")  # logs go to stderr (journald): nothing to reopen


class NotifyingServer(uvicorn.Server):
    """uvicorn's server that tells systemd when it listens, beats its watchdog, and reloads
    its config on SIGHUP (logrotate, `systemctl reload`) instead of dying of it."""

    on_hangup: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        if self.on_hangup is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_hangup)
        notify("READY=1")
        beat = watchdog_interval()
        if beat is not None:
            self._heartbeat = asyncio.create_task(self._beat(beat))

    async def _beat(self, interval: float) -> None:
        while not self.should_exit:  # from the event loop: a wedged loop stops the beats
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        notify("STOPPING=1")
        await super().shutdown(sockets)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glyph-remediator",
        description="Receive Alertmanager webhooks and restart or clean Glyph components, safely.",
    )
    parser.add_argument("--config", type=Path, help="deployment YAML file")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override remediator.listen")
    parser.add_argument(
        "--dry-run", action="store_true", help="decide and record everything, do nothing"
    )
    commands = parser.add_subparsers(dest="command")
    check = commands.add_parser("check-config", help="validate a config and print it in full")
    check.add_argument("file", type=Path)
    ctl.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ctl.RUN:
        return ctl.run(args, args.config)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    limit_log_floods()
    try:
        if args.command == "check-config":
            config = load_config(args.file)
            checked_credentials(config.remediator)
            sys.stdout.write(dump_config(config))
            return 0
        if args.config is None:
            parser.error("--config FILE is required")
        path, listen = args.config, args.listen
        config = with_listen(load_config(path), listen)
        server = build_server(
            config, dry_run=args.dry_run, reread=lambda: with_listen(load_config(path), listen)
        )
    except (ConfigError, StoreError) as exc:
        print(f"glyph-remediator: {exc}", file=sys.stderr)
        return 2
    server.run()
    return 0
