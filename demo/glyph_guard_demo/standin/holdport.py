"""A process that holds a port like a leftover one: it listens, never answers, exits on SIGTERM."""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys

from glyph_guard_demo.standin.names import STAND_IN_NOTICE


def hold_port(host: str, port: int) -> int:
    """Bind and listen on host:port until SIGTERM or SIGINT; exit 1 if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as servers do, so connections of a dead predecessor in TIME_WAIT do not stop us
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(16)
        except OSError as exc:
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            print(f"ERROR: cannot hold {host}:{port}: {reason}", file=sys.stderr, flush=True)
            return 1
        print(
            f"{STAND_IN_NOTICE}\nhold-port: pid {os.getpid()} holds {host}:{port} "
            "(listening, never answering; SIGTERM to stop)",
            flush=True,
        )
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        received = signal.sigwait({signal.SIGTERM, signal.SIGINT})
        print(f"hold-port: {signal.Signals(received).name}, releasing {host}:{port}", flush=True)
    return 0
