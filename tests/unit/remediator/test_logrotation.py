"""The log pipe's rotation decisions as tables: sizes in, pieces and moves out."""

from __future__ import annotations

import pytest

from glyph_guard.remediator.logrotation import Piece, pieces, renames, retry_due

CAP = 100


@pytest.mark.parametrize(
    ("size", "length", "expected"),
    [
        (0, 40, [Piece(False, 40)]),
        (60, 40, [Piece(False, 40)]),  # exactly full: no rotation yet
        (61, 40, [Piece(True, 40)]),  # does not fit: whole into a fresh file
        (100, 1, [Piece(True, 1)]),
        (0, 250, [Piece(False, 100), Piece(True, 100), Piece(True, 50)]),  # larger than the cap
        (30, 250, [Piece(True, 100), Piece(True, 100), Piece(True, 50)]),
        (500, 10, [Piece(True, 10)]),  # a file over the cap (the cap was lowered) rotates
        (0, 0, []),
    ],
)
def test_pieces_never_let_a_file_pass_the_cap(
    size: int, length: int, expected: list[Piece]
) -> None:
    got = pieces(size, length, CAP)
    assert got == expected
    assert sum(p.length for p in got) == length
    for piece in got:
        size = piece.length if piece.rotate_first else size + piece.length
        assert size <= CAP


@pytest.mark.parametrize(
    ("backups", "expected"),
    [
        (0, []),
        (1, [("a.log", "a.log.1")]),
        (3, [("a.log.2", "a.log.3"), ("a.log.1", "a.log.2"), ("a.log", "a.log.1")]),
    ],
)
def test_renames_move_the_oldest_first(backups: int, expected: list[tuple[str, str]]) -> None:
    assert renames("a.log", backups) == expected


@pytest.mark.parametrize(
    ("failed_at", "now", "due"),
    [(None, 10.0, True), (10.0, 12.0, False), (10.0, 15.0, True), (10.0, 30.0, True)],
)
def test_a_failing_file_is_tried_again_now_and_then(
    failed_at: float | None, now: float, due: bool
) -> None:
    assert retry_due(failed_at, now, 5.0) is due
