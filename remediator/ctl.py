"""glyph-remediator's operator commands: a running remediator's status, switches and record.

Exit codes: 0 done; 1 the remediator is not running, cannot be reached, refused the request
(busy, paused) or the restart waited for failed; 2 a usage or config error (bad arguments, a
config or secret file that cannot be read, credentials the remediator refuses, an unknown
component).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from glyph_guard.common.config import ConfigError, RemediatorSettings, load_config
from glyph_guard.remediator import render
from glyph_guard.remediator.auth import load_credentials

DEFAULT_CONFIG = Path("/etc/glyph-guard/glyph.yaml")  # as deploy/systemd/glyph-remediator.service
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TIMEOUT_SECONDS = 30.0  # a status probes every component; their probes have their own timeouts
WAIT_POLL_SECONDS = 0.5
UNSPECIFIED = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # to call, not to bind


class CtlError(Exception):
    """A failure to report in one line, with the exit code it means."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Remote:
    """The running remediator's API, called with the deployment's credentials."""

    http: httpx.Client
    config: Path

    def call(self, method: str, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        url = f"{self.http.base_url}{path.lstrip('/')}"
        try:
            response = self.http.request(method, path, params=query)
        except httpx.ConnectError:
            raise CtlError(
                f"the remediator is not running at {self.http.base_url}", EXIT_FAILED
            ) from None
        except httpx.TimeoutException:
            raise CtlError(f"the remediator did not answer {url} in time", EXIT_FAILED) from None
        except httpx.HTTPError as exc:
            raise CtlError(f"cannot talk to the remediator at {url}: {exc}", EXIT_FAILED) from None
        if response.status_code == 401:
            raise CtlError(
                f"the remediator at {self.http.base_url} refused the credentials of {self.config}"
                " (remediator.token_file or basic_auth differ from the running service's)",
                EXIT_USAGE,
            )
        if response.status_code >= 400:
            detail = _detail(response)
            code = EXIT_USAGE if response.status_code in (404, 422) else EXIT_FAILED
            raise CtlError(f"{detail} (HTTP {response.status_code})", code)
        try:
            return response.json()
        except ValueError:
            raise CtlError(
                f"{url} answered something other than JSON: not a remediator?", EXIT_FAILED
            ) from None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # a validation error: name the parameter
        detail = "; ".join(
            f"{'.'.join(map(str, d.get('loc', ())))}: {d.get('msg')}" for d in detail
        )
    return str(detail or response.text.strip() or response.reason_phrase)


def connect(settings: RemediatorSettings, config: Path) -> Remote:
    """A client for the remediator the settings describe (its secrets read here)."""
    credentials = load_credentials(settings)
    host, port = settings.address
    host = UNSPECIFIED.get(host, host)
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    headers = {}
    auth = None
    if credentials.token is not None:
        headers["Authorization"] = f"Bearer {credentials.token.decode()}"
    elif credentials.username is not None and credentials.password is not None:
        auth = httpx.BasicAuth(credentials.username, credentials.password)
    client = httpx.Client(
        base_url=base, headers=headers, auth=auth, timeout=TIMEOUT_SECONDS, trust_env=False
    )
    return Remote(client, config)


# -- the commands: each returns what --json prints and the human text -------------------------

Answer = tuple[Any, str]


def status(remote: Remote, args: argparse.Namespace) -> Answer:
    if args.component:
        found = [remote.call("GET", f"/components/{_segment(args.component)}", probe="true")]
    else:
        found = remote.call("GET", "/components", probe="true")
    return found, render.status(found)


def pause(remote: Remote, args: argparse.Namespace) -> Answer:
    path = f"/components/{_segment(args.component)}/pause"
    found = remote.call("POST", path, seconds=args.duration, reason=args.reason)
    return found, render.switched("pause", found)


def switch(command: str) -> Callable[[Remote, argparse.Namespace], Answer]:
    def run(remote: Remote, args: argparse.Namespace) -> Answer:
        found = remote.call("POST", f"/components/{_segment(args.component)}/{command}")
        return found, render.switched(command, found)

    return run


def restart(remote: Remote, args: argparse.Namespace) -> Answer:
    name = _segment(args.component)
    answer = remote.call("POST", f"/components/{name}/restart")
    action = None
    if args.wait and answer["action_id"] is not None:
        action = _finished(remote, name, answer["action_id"], args.timeout)
        if action["outcome"] != "succeeded":
            sys.stdout.write(render.restart(answer, action))
            raise CtlError(
                f"restart of {args.component} {action['outcome']}: {action['reason']}", EXIT_FAILED
            )
    shown = answer if not args.wait else {**answer, "action": action}
    return shown, render.restart(answer, action)


def _finished(remote: Remote, name: str, action_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        actions = remote.call("GET", "/actions", component=name, limit=50)
        found: dict[str, Any] | None = next((a for a in actions if a["id"] == action_id), None)
        if found is not None and found["outcome"] is not None:
            return found
        if time.monotonic() > deadline:
            raise CtlError(f"action {action_id} still running after {timeout:g} s", EXIT_FAILED)
        time.sleep(WAIT_POLL_SECONDS)


def history(remote: Remote, args: argparse.Namespace) -> Answer:
    blocks = remote.call("GET", "/history", component=args.component, since_seconds=args.since)
    return blocks, render.history(blocks)


def explain(remote: Remote, args: argparse.Namespace) -> Answer:
    found = remote.call("GET", f"/components/{_segment(args.component)}/explain")
    return found, render.explanation(found)


RUN: dict[str, Callable[[Remote, argparse.Namespace], Answer]] = {
    "status": status,
    "pause": pause,
    "resume": switch("resume"),
    "reset": switch("reset"),
    "restart": restart,
    "history": history,
    "explain": explain,
}


def _segment(name: str) -> str:
    """A component name as one path segment (anything else is refused as unknown)."""
    if not name or "/" in name or name in (".", ".."):
        raise CtlError(f"no component named {name!r}", EXIT_USAGE)
    return quote(name, safe="")


def duration(text: str) -> float:
    try:
        return render.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(commands: Any) -> None:
    """The operator subcommands, on the glyph-remediator parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"deployment YAML file (default: {DEFAULT_CONFIG})",
    )
    common.add_argument("--json", action="store_true", help="print the answer as JSON")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=text, parents=[common])
        return parser

    command("status", "one line per component").add_argument("component", nargs="?")
    paused = command("pause", "pause remediation of a component (maintenance)")
    paused.add_argument("component")
    paused.add_argument(
        "--for", dest="duration", type=duration, help="resume by itself after (30m, 2h, 1h30m)"
    )
    paused.add_argument("--reason", help="why (shown in status and on GlyphRemediationPaused)")
    command("resume", "resume remediation of a component").add_argument("component")
    command("reset", "forget a give-up and the spent budget").add_argument("component")
    restarted = command("restart", "restart a component now (recorded as an operator's)")
    restarted.add_argument("component")
    restarted.add_argument("--wait", action="store_true", help="wait for the outcome")
    restarted.add_argument(
        "--timeout", type=duration, default=900.0, help="longest --wait (default 15m)"
    )
    since = command("history", "incidents: alert, decisions, actions and their outcome")
    since.add_argument("component", nargs="?")
    since.add_argument("--since", type=duration, help="this far back (e.g. 12h)")
    command("explain", "why the last alert acted or not; when one would act next").add_argument(
        "component"
    )


def run(args: argparse.Namespace, config: Path | None) -> int:
    """Run one operator command; one line on stderr and a non-zero code when it fails."""
    path = config or DEFAULT_CONFIG
    try:
        remote = connect(load_config(path).remediator, path)
        with remote.http:
            shown, text = RUN[args.command](remote, args)
    except ConfigError as exc:
        print(f"glyph-remediator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CtlError as exc:
        print(f"glyph-remediator {args.command}: {exc}", file=sys.stderr)
        return exc.code
    sys.stdout.write(json.dumps(shown, indent=2) + "\n" if args.json else text)
    return EXIT_OK
