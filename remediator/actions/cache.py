"""The `clean_cache` action: delete old regular files under a component's cache globs only."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from glyph_common.caches import cache_files
from glyph_common.config import Component
from remediator.actions.base import ActionResult

MAX_ERRORS_KEPT = 20


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _unlink_in(directory: str, path: Path, seen: os.stat_result) -> int | None:
    """Unlink the file through its directory's descriptor; the bytes freed, or None if it changed.

    The directory is opened without following a final symlink and the file is re-checked
    relative to it, so a path swapped for a symlink after the scan is not followed.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        now = os.stat(path.name, dir_fd=fd, follow_symlinks=False)
        same = (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino)
        if not stat.S_ISREG(now.st_mode) or not same:
            return None
        os.unlink(path.name, dir_fd=fd)
        return now.st_size
    finally:
        os.close(fd)


def clean_cache(component: Component, now: float) -> ActionResult:
    """Delete regular files older than the component's minimum age under each cache glob."""
    min_age = component.remediation.clean_cache_min_age_seconds
    deleted = freed = outside = 0
    errors: list[str] = []
    for cache in component.caches:
        root = cache.root
        if root == Path(root.anchor):
            errors.append(f"{cache.glob}: refusing to clean a glob rooted at {root}")
            continue
        try:
            real_root = str(root.resolve(strict=True))
        except OSError:
            continue  # no cache directory: nothing to clean
        for path, info in cache_files(cache):
            if now - info.st_mtime < min_age:
                continue
            directory = os.path.realpath(path.parent)
            if not _inside(directory, real_root):  # reached through a symlinked directory
                outside += 1
                continue
            try:
                size = _unlink_in(directory, path, info)
            except FileNotFoundError:
                continue
            except OSError as exc:
                errors.append(f"{path}: {exc.strerror or exc}")
                continue
            if size is not None:
                deleted += 1
                freed += size
    details: dict[str, Any] = {
        "files_deleted": deleted,
        "bytes_freed": freed,
        "skipped_outside_root": outside,
        "min_age_seconds": min_age,
    }
    summary = f"deleted {deleted} files ({freed} bytes) older than {min_age:g} s"
    if errors:
        details["errors"] = errors[:MAX_ERRORS_KEPT]
        return ActionResult("failed", f"{summary}; {len(errors)} errors", details)
    return ActionResult("succeeded", summary, details)
