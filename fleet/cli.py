"""The glyph-fleet command: render a fleet's Alertmanager routes and file_sd targets."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from glyph_guard.common.config import ConfigError
from glyph_guard.fleet.render import load_inventory, render_files


def write_if_changed(path: Path, content: str) -> bool:
    """Replace path atomically (file_sd readers never see half a file); False if unchanged."""
    try:
        if path.read_text(encoding="utf-8") == content:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def render(inventory_path: Path, out: Path, check: bool) -> int:
    files = render_files(load_inventory(inventory_path), inventory_path)
    stale = []
    for name, content in files.items():
        path = out / name
        if check:
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current != content:
                stale.append(name)
            continue
        print(f"{'written' if write_if_changed(path, content) else 'unchanged'}: {path}")
    for name in stale:
        print(f"out of date: {out / name}", file=sys.stderr)
    return 1 if stale else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glyph-fleet", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "render", help="write alertmanager.yml and targets/*.json from an inventory"
    )
    run.add_argument("inventory", type=Path, help="the fleet's inventory YAML")
    run.add_argument("--out", type=Path, help="where to write (default: the inventory's directory)")
    run.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = render(args.inventory, args.out or args.inventory.parent, args.check)
    except ConfigError as exc:
        print(f"glyph-fleet: {exc}", file=sys.stderr)
        code = 2
    except OSError as exc:
        print(f"glyph-fleet: cannot write: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
