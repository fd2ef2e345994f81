"""Who may call the remediator: a bearer token or basic auth, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from glyph_guard.common.config import ConfigError, RemediatorSettings


@dataclass(frozen=True)
class Credentials:
    """The secrets a caller must present; an empty set means no authentication."""

    token: bytes | None = None
    username: bytes | None = None
    password: bytes | None = None

    @property
    def required(self) -> bool:
        return self.token is not None or self.username is not None

    @property
    def challenge(self) -> str:
        return "Bearer" if self.token is not None else 'Basic realm="glyph-remediator"'

    def allows(self, authorization: str | None) -> bool:
        """True when the Authorization header carries a configured secret (or none is needed)."""
        if not self.required:
            return True
        scheme, _, value = (authorization or "").strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(value.strip().encode(), self.token)
        if scheme == "basic" and self.username is not None and self.password is not None:
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            user_ok = hmac.compare_digest(user, self.username)
            password_ok = hmac.compare_digest(password, self.password)
            return bool(sep) and user_ok and password_ok
        return False


def _secret(path: Path, field: str) -> bytes:
    """A secret file's content; refused, as ssh refuses a key, when other users may read it."""
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            value = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror or exc}") from None
    if mode & 0o007:
        raise ConfigError(
            f"{field}: {path} is open to other users (mode {stat.S_IMODE(mode):04o}); make it"
            f" private with `chmod 600 {path}` (or `chmod 640` and a group the Alertmanager"
            " user shares)"
        )
    if not value:
        raise ConfigError(f"{field}: {path} is empty")
    return value


def load_credentials(settings: RemediatorSettings) -> Credentials:
    """Read the token and password files named in the config."""
    token = None
    if settings.token_file is not None:
        token = _secret(settings.token_file, "remediator.token_file")
    if settings.basic_auth is None:
        return Credentials(token=token)
    password = _secret(settings.basic_auth.password_file, "remediator.basic_auth.password_file")
    return Credentials(token, settings.basic_auth.username.encode(), password)


class RequireAuth:
    """ASGI middleware: 401 before anything is read, except on the open paths."""

    def __init__(self, app: ASGIApp, credentials: Credentials, open_paths: frozenset[str]) -> None:
        self.app = app
        self.credentials = credentials
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.credentials.required
            and scope["path"] not in self.open_paths
            and not self.credentials.allows(Headers(scope=scope).get("authorization"))
        ):
            response = JSONResponse(
                {"detail": "missing or wrong credentials"},
                status_code=401,
                headers={"WWW-Authenticate": self.credentials.challenge},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
