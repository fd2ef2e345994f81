"""Size-capped log rotation as pure decisions: where each piece of output goes, which files move."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Part of a chunk of output: written after rotating the file, or appended as it is."""

    rotate_first: bool
    length: int


def pieces(size: int, length: int, max_bytes: int) -> list[Piece]:
    """How to write `length` bytes onto a file of `size` bytes with no file over `max_bytes`.

    A chunk that does not fit goes whole into a fresh file when it can (lines stay together);
    one larger than `max_bytes` is split.
    """
    out: list[Piece] = []
    while length > 0:
        rotate = size > 0 and size + length > max_bytes
        if rotate:
            size = 0
        step = min(length, max_bytes - size)
        out.append(Piece(rotate, step))
        size += step
        length -= step
    return out


def renames(path: str, backups: int) -> list[tuple[str, str]]:
    """The moves that rotate `path` into `path.1` ... `path.N`, in order; the oldest is replaced.

    With no backups there is nothing to move: the file is truncated instead.
    """
    if backups <= 0:
        return []
    moves = [(f"{path}.{n}", f"{path}.{n + 1}") for n in range(backups - 1, 0, -1)]
    return [*moves, (path, f"{path}.1")]


def retry_due(failed_at: float | None, now: float, every: float) -> bool:
    """Whether to try writing again: always while writes work, then once per `every` seconds."""
    return failed_at is None or now - failed_at >= every
