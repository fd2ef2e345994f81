"""Enumerating a cache glob's regular files without following links into or out of its root."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from glyph_guard.common.config import Cache


def cache_files(cache: Cache) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files the glob matches, with their lstat; symlinks are neither followed nor listed.

    pathlib's ``**`` does not descend into symlinked directories, but ``*/x`` does: a match
    reached through a symlinked directory is dropped, so nothing outside the root is reported.
    """
    root = cache.root
    if root_refusal(cache) is not None:
        return
    relative = Path(cache.glob).relative_to(root)
    if relative.name == "**":  # as in shell globstar: everything below, files included
        relative = relative / "*"
    if not str(relative) or str(relative) == ".":
        candidates: Iterator[Path] = iter((root,))
    else:
        candidates = root.glob(str(relative))
    linked: dict[Path, bool] = {}
    for path in candidates:
        try:
            info = path.lstat()
        except OSError:  # removed while we looked
            continue
        if stat.S_ISREG(info.st_mode) and not _through_link(root, path, linked):
            yield path, info


def root_refusal(cache: Cache) -> str | None:
    """Why a cache root is not looked into: it (or a directory leading to it) is a symlink.

    Top-level directories are the system's own (/var/run may be a link to /run); below
    them, a link could point the cleaner at another user's files.
    """
    parts = cache.root.parts
    for depth in range(3, len(parts) + 1):
        path = Path(*parts[:depth])
        if path.is_symlink():
            return f"{path} is a symlink; a cache root is never followed"
    return None


def _through_link(root: Path, path: Path, linked: dict[Path, bool]) -> bool:
    """Whether a directory between root and path is a symlink (answers cached per directory)."""
    for parent in path.relative_to(root).parents:
        directory = root / parent
        if directory == root:
            continue
        if directory not in linked:
            linked[directory] = directory.is_symlink()
        if linked[directory]:
            return True
    return False
