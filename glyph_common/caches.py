"""Enumerating a cache glob's regular files without following links out of its root."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from glyph_common.config import Cache


def cache_files(cache: Cache) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files the glob matches, with their lstat; symlinks are neither followed nor listed.

    pathlib's ``**`` does not descend into symlinked directories, so nothing outside the
    glob's root is ever reached.
    """
    root = cache.root
    relative = Path(cache.glob).relative_to(root)
    if relative.name == "**":  # as in shell globstar: everything below, files included
        relative = relative / "*"
    if not str(relative) or str(relative) == ".":
        candidates: Iterator[Path] = iter((root,))
    else:
        candidates = root.glob(str(relative))
    for path in candidates:
        try:
            info = path.lstat()
        except OSError:  # removed while we looked
            continue
        if stat.S_ISREG(info.st_mode):
            yield path, info
