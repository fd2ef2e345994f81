"""Who may reach the remediator at all: its own Host names, no cross-site browser requests."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

WEBHOOK = ("POST", "/alerts")
SAME_SITE = frozenset({"same-origin", "none"})  # Sec-Fetch-Site of the page itself, or typed


def _host_name(host: str) -> str:
    """A Host header without its port, brackets or a trailing dot, lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class RequestGuard:
    """ASGI middleware, outermost: refuses what no operator's tool sends.

    - A Host that is a name other than localhost or a configured one (400): a web page
      whose name was rebound to this machine's address (DNS rebinding) names itself. IP
      literals are always accepted; a rebinding attack cannot choose them.
    - A cross-site browser request (403): an Origin that is not this Host, or a
      Sec-Fetch-Site other than same-origin / none. Alertmanager, Prometheus and curl send
      neither header.
    - Without configured credentials, everything but the webhook and the open paths (403):
      the operator switches and the record (which holds command lines and log excerpts)
      are never served to whoever can reach the port.
    """

    def __init__(
        self,
        app: ASGIApp,
        host_names: Iterable[str],
        credentials_required: bool,
        open_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.host_names = frozenset({"localhost", *(_host_name(h) for h in host_names)})
        self.credentials_required = credentials_required
        self.open_paths = open_paths

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        name = _host_name(host)
        if not (_is_ip(name) or name in self.host_names):
            return 400, f"unknown Host {host!r}; add it to remediator.allowed_hosts"
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.strip().lower():
            return 403, "cross-site request refused"
        site = headers.get("sec-fetch-site")
        if site is not None and site.lower() not in SAME_SITE:
            return 403, "cross-site request refused"
        path = scope["path"]
        if (
            not self.credentials_required
            and path not in self.open_paths
            and (scope["method"], path) != WEBHOOK
        ):
            return 403, (
                f"{path} needs credentials: set remediator.token_file or remediator.basic_auth"
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                status, detail = refusal
                await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
