"""The `clean_cache` action: delete old regular files of the component's user under its globs."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from glyph_guard.common.cachefiles import cache_files, root_refusal
from glyph_guard.common.config import Cache, Component
from glyph_guard.common.processes import ProcessTable, user_id
from glyph_guard.remediator.actions.base import ActionResult

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
        same = (now.st_dev, now.st_ino, now.st_uid) == (seen.st_dev, seen.st_ino, seen.st_uid)
        if not stat.S_ISREG(now.st_mode) or not same:
            return None
        os.unlink(path.name, dir_fd=fd)
        return now.st_size
    finally:
        os.close(fd)


def owners(component: Component, cache: Cache) -> tuple[frozenset[int], str]:
    """Whose files a clean may delete, and where that came from.

    The configured owner, else the matcher's user, else the users the component's
    processes run as, else (when it is not running) the owner of the cache root itself.
    """
    for configured, source in ((cache.owner, "owner"), (component.match.user, "match.user")):
        if configured is not None:
            uid = user_id(configured)
            return (frozenset() if uid is None else frozenset({uid})), source
    table = ProcessTable()
    table.refresh()
    uids = {stats.uid for stats in table.find([component])[component.name].processes}
    if uids - {None}:
        return frozenset(uid for uid in uids if uid is not None), "the component's processes"
    try:
        return frozenset({cache.root.lstat().st_uid}), "the cache root's owner"
    except OSError:
        return frozenset(), "nobody (no cache root)"


def clean_cache(component: Component, now: float) -> ActionResult:
    """Delete regular files older than the component's minimum age under each cache glob."""
    min_age = component.remediation.clean_cache_min_age_seconds
    deleted = freed = outside = foreign = 0
    errors: list[str] = []
    owned_by: dict[str, list[int]] = {}
    for cache in component.caches:
        refusal = root_refusal(cache)
        if refusal is not None:
            errors.append(f"{cache.glob}: {refusal}")
            continue
        try:
            real_root = str(cache.root.resolve(strict=True))
        except OSError:
            continue  # no cache directory: nothing to clean
        uids, source = owners(component, cache)
        owned_by[cache.glob] = sorted(uids)
        if not uids:
            errors.append(f"{cache.glob}: no owner known from {source}; nothing deleted")
            continue
        for path, info in cache_files(cache):
            if now - info.st_mtime < min_age:
                continue
            if info.st_uid not in uids:
                foreign += 1
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
        "skipped_other_owners": foreign,
        "owner_uids": owned_by,
        "min_age_seconds": min_age,
    }
    summary = f"deleted {deleted} files ({freed} bytes) older than {min_age:g} s"
    if errors:
        details["errors"] = errors[:MAX_ERRORS_KEPT]
        return ActionResult("failed", f"{summary}; {len(errors)} errors: {errors[0]}", details)
    return ActionResult("succeeded", summary, details)
