"""How many connections the remediator keeps, and for how long one may sit without a request."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_HEADERS_SECONDS = 10.0  # from connect (or the last answer) to a whole request head
KEEP_ALIVE_SECONDS = 5.0
MAX_CONCURRENCY = 128  # connections and requests in flight; more get 503 at once


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, dropping a connection that sends no whole request in time.

    uvicorn times out idle keep-alive connections only after a first answer, and never a
    request head trickled a byte at a time; both would hold a file descriptor forever.
    """

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_HEADERS_SECONDS, self._expire)

    def _expire(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()


def server_limits() -> dict[str, Any]:
    """uvicorn.Config settings bounding connections, their idle time and concurrency."""
    return {
        "http": DeadlineH11Protocol,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "limit_concurrency": MAX_CONCURRENCY,
    }
