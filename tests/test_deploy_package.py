"""Packaging: `pip install glyph-guard` brings the exporter and the remediator only; the stand-in
and glyph-stack (with Pillow) come with the `demo` extra; building prints no warnings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

from tests.support import REPO

WARNINGS = ("warning", "deprecat")
NOT_SOURCES = (".*", "build", "dist", "*.egg-info", "__pycache__")


def build_wheel(project: Path, out: Path) -> tuple[zipfile.ZipFile, str]:
    """Build project's wheel as pip does for `pip install` (isolated build environment)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(project)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel), output


def metadata(wheel: zipfile.ZipFile, name: str) -> Message:
    return Parser().parsestr(wheel.read(f"{name}.dist-info/METADATA").decode())


def builder_warnings(output: str) -> list[str]:
    """Warnings of the build backend; not pip's notes about the host's package index."""
    return [
        line
        for line in output.splitlines()
        if any(word in line.lower() for word in WARNINGS) and "is ignored" not in line
    ]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[zipfile.ZipFile, str]]:
    root = tmp_path_factory.mktemp("wheels")
    # From a clean copy, as from an sdist: a checkout's build/ may hold stale packages.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    return {
        "glyph-guard": build_wheel(source, root / "guard"),
        "glyph-guard-demo": build_wheel(source / "demo", root / "demo"),
    }


def top_level(wheel: zipfile.ZipFile) -> set[str]:
    return {name.split("/")[0] for name in wheel.namelist() if ".dist-info/" not in name}


def test_the_package_is_the_exporter_and_the_remediator_only(wheels: dict) -> None:
    wheel, output = wheels["glyph-guard"]
    assert top_level(wheel) == {"glyph_common", "exporter", "remediator"}
    meta = metadata(wheel, "glyph_guard-0.1.0")
    assert meta["License-Expression"] == "Apache-2.0"
    plain = [r for r in meta.get_all("Requires-Dist") or () if "extra ==" not in r]
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in plain}
    assert names == {
        *("prometheus-client", "nvidia-ml-py", "psutil", "httpx", "pyyaml"),
        *("pydantic", "fastapi", "uvicorn"),
    }
    assert "demo" in (meta.get_all("Provides-Extra") or ())
    scripts = wheel.read("glyph_guard-0.1.0.dist-info/entry_points.txt").decode()
    assert "glyph-exporter" in scripts and "glyph-remediator" in scripts
    assert "glyph-standin" not in scripts and "glyph-stack" not in scripts
    assert not builder_warnings(output), "\n".join(builder_warnings(output))


def test_the_demo_extra_brings_the_standin_the_stack_and_pillow(wheels: dict) -> None:
    wheel, output = wheels["glyph-guard-demo"]
    assert top_level(wheel) == {"standin", "glyph_stack"}
    assert "standin/py.typed" in wheel.namelist()
    meta = metadata(wheel, "glyph_guard_demo-0.1.0")
    requires = {r.split(">")[0].strip().lower() for r in meta.get_all("Requires-Dist") or ()}
    assert requires == {"glyph-guard", "pillow"}
    scripts = wheel.read("glyph_guard_demo-0.1.0.dist-info/entry_points.txt").decode()
    assert "glyph-standin = standin.cli:main" in scripts
    assert "glyph-stack = glyph_stack.cli:main" in scripts
    assert not builder_warnings(output), "\n".join(builder_warnings(output))
    guard, _ = wheels["glyph-guard"]
    extra = [
        r
        for r in metadata(guard, "glyph_guard-0.1.0").get_all("Requires-Dist") or ()
        if 'extra == "demo"' in r
    ]
    assert [r.split(";")[0].strip() for r in extra] == ["glyph-guard-demo"]
