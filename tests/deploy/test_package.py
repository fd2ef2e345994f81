"""Packaging: `pip install glyph-guard` brings one package, glyph_guard (the exporter, the
remediator, glyph-fleet); the stand-in, glyph-stack and the test kit (with Pillow) come with the
`demo` extra as glyph_guard_demo; building prints no warnings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

from glyph_guard_demo.testkit.support import REPO

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


def test_the_package_is_glyph_guard_only(wheels: dict) -> None:
    wheel, output = wheels["glyph-guard"]
    assert top_level(wheel) == {"glyph_guard"}
    subpackages = {n.split("/")[1] for n in wheel.namelist() if n.startswith("glyph_guard/")}
    assert subpackages == {"common", "exporter", "remediator", "fleet", "deploy"}
    assert "glyph_guard/deploy/prometheus/rules.yml" in wheel.namelist()
    assert "glyph_guard/deploy/grafana/dashboards/glyph-guard.json" in wheel.namelist()
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
    assert "glyph-exporter = glyph_guard.exporter.cli:main" in scripts
    assert "glyph-remediator = glyph_guard.remediator.cli:main" in scripts
    assert "glyph-fleet = glyph_guard.fleet.cli:main" in scripts
    assert "glyph-standin" not in scripts and "glyph-stack" not in scripts
    assert not builder_warnings(output), "\n".join(builder_warnings(output))


def test_the_demo_extra_brings_the_standin_the_stack_and_pillow(wheels: dict) -> None:
    wheel, output = wheels["glyph-guard-demo"]
    assert top_level(wheel) == {"glyph_guard_demo"}
    assert "glyph_guard_demo/standin.yaml" in wheel.namelist()
    meta = metadata(wheel, "glyph_guard_demo-0.1.0")
    requires = {r.split(">")[0].strip().lower() for r in meta.get_all("Requires-Dist") or ()}
    assert requires == {"glyph-guard", "pillow"}
    scripts = wheel.read("glyph_guard_demo-0.1.0.dist-info/entry_points.txt").decode()
    assert "glyph-standin = glyph_guard_demo.standin.cli:main" in scripts
    assert "glyph-stack = glyph_guard_demo.stack.cli:main" in scripts
    assert not builder_warnings(output), "\n".join(builder_warnings(output))
    guard, _ = wheels["glyph-guard"]
    extra = [
        r
        for r in metadata(guard, "glyph_guard-0.1.0").get_all("Requires-Dist") or ()
        if 'extra == "demo"' in r
    ]
    assert [r.split(";")[0].strip() for r in extra] == ["glyph-guard-demo"]


def test_a_fresh_venv_with_the_wheels_runs_the_commands_and_knows_no_generic_names(
    wheels: dict, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for name in ("glyph-guard", "glyph-guard-demo"):
        wheel, _ = wheels[name]
        install = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "--no-deps",
                "--quiet",
                wheel.filename,
            ],
            capture_output=True,
            text=True,
            timeout=110,
            check=False,
        )
        assert install.returncode == 0, install.stdout + install.stderr
    # The dependencies from the test environment, appended after the wheels' own packages.
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages")
    (Path(site) / "deps.pth").write_text(f"{deps}\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    for generic in ("exporter", "remediator", "glyph_common", "standin", "glyph_stack"):
        assert run(python, "-c", f"import {generic}").returncode != 0, generic
    where = run(python, "-c", "import glyph_guard.exporter as e; print(e.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    checked = run(venv / "bin" / "glyph-exporter", "check-config")
    assert checked.returncode == 0 and "components:" in checked.stdout, checked.stderr
    for command in ("glyph-remediator", "glyph-fleet", "glyph-standin", "glyph-stack"):
        helped = run(venv / "bin" / command, "--help")
        assert helped.returncode == 0, (command, helped.stderr)
