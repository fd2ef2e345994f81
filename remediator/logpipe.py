"""The log pipe: copies a started component's output from stdin into a capped, rotated file.

`python -m glyph_guard.remediator.logpipe --max-bytes N --backups K PATH`. It runs apart from
the remediator (which may restart meanwhile) and ends when every writer of its stdin is gone,
that is with the component's tree. When the file cannot be written (disk full, removed
directory, permission) it keeps draining the pipe, discarding, so the component never blocks;
it tries the file again every few seconds and says on stderr when it stops and resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from glyph_guard.remediator.logrotation import pieces, renames, retry_due

READ_BYTES = 65536
RETRY_SECONDS = 5.0


class RotatingFile:
    """An append-only file that rotates into numbered backups before it passes max_bytes."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self._fd: int | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        """Write all of data (OSError when it cannot: the file is closed, reopened next time)."""
        try:
            view = memoryview(data)
            for piece in pieces(self._open(), len(data), self.max_bytes):
                if piece.rotate_first:
                    self._rotate()
                self._write_all(view[: piece.length])
                view = view[piece.length :]
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _open(self, truncate: bool = False) -> int:
        """The current size, opening the file first when needed."""
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags | (os.O_TRUNC if truncate else 0), 0o640)
            self._size = os.fstat(self._fd).st_size
        return self._size

    def _rotate(self) -> None:
        self.close()
        for source, target in renames(str(self.path), self.backups):
            try:
                os.replace(source, target)
            except FileNotFoundError:
                continue
        self._open(truncate=True)

    def _write_all(self, data: memoryview) -> None:
        assert self._fd is not None
        while data:
            written = os.write(self._fd, data)
            self._size += written
            data = data[written:]


def pump(
    source: int,
    sink: RotatingFile,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Copy source to sink until end of file; while the sink fails, drain and discard."""
    failed_at: float | None = None
    while chunk := os.read(source, READ_BYTES):
        if not retry_due(failed_at, clock(), RETRY_SECONDS):
            continue
        try:
            sink.write(chunk)
        except OSError as exc:
            if failed_at is None:
                say(f"cannot write {sink.path} ({exc.strerror or exc}): discarding output")
            failed_at = clock()
            continue
        if failed_at is not None:
            say(f"writing {sink.path} again")
            failed_at = None
    sink.close()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 0")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glyph_guard.remediator.logpipe")
    parser.add_argument("--max-bytes", type=_positive, required=True)
    parser.add_argument("--backups", type=_count, required=True)
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    name = f"glyph-guard logpipe {os.getpid()}"

    def say(message: str) -> None:
        # nowhere to say it: the copying must go on regardless
        with contextlib.suppress(OSError, ValueError):
            print(f"{name}: {message}", file=sys.stderr, flush=True)

    pump(sys.stdin.fileno(), RotatingFile(args.path, args.max_bytes, args.backups), say)


if __name__ == "__main__":
    main()
