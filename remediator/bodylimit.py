"""ASGI middleware capping request bodies: by Content-Length, by the bytes that arrive, in time."""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_SECONDS = 10.0  # a whole body, however slowly it trickles


class BodyLimit:
    """Reads the body (at most max_bytes) before the app does, so chunked bodies are capped too."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body larger than {self.max_bytes} bytes"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)

    async def _read(self, receive: Receive) -> list[bytes] | None:
        """The body's chunks, stopping once past max_bytes; None if the client went away."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_bytes or not message.get("more_body", False):
                return chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        try:
            chunks = await asyncio.wait_for(self._read(receive), BODY_SECONDS)
        except asyncio.TimeoutError:
            detail = f"request body not received within {BODY_SECONDS:g} s"
            await JSONResponse({"detail": detail}, status_code=408)(scope, receive, send)
            return
        if chunks is None:
            return  # the client went away
        if sum(map(len, chunks)) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
