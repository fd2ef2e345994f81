"""clean_cache against hostile file systems: symlinked roots, other users' files, wide globs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glyph_guard_demo.testkit.doubles.harness import Remediator, alert, make_config, marker, payload
from tests.integration.remediator.test_backends import _old, cache_component

OTHER_UID = 65534  # nobody
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def clean(tmp_path: Path, glob: str, **match: str) -> dict[str, object]:
    component = cache_component(glob)
    component["match"].update(match)
    with Remediator(make_config(tmp_path, {"ui": component})) as rem:
        rem.post(payload(alert(component="ui", action="clean_cache")))
        [action] = rem.finished_actions(1)
    return action


@needs_root
def test_a_symlinked_cache_root_is_refused_and_recorded(tmp_path: Path) -> None:
    """/tmp/gradio pointing at another user's directory once cost that user their old files."""
    victim = tmp_path / "victim"
    precious = [_old(victim / "thesis.pdf"), _old(victim / "sub" / "data.csv")]
    for path in (victim, victim / "sub", *precious):
        os.chown(path, OTHER_UID, OTHER_UID)
    root = tmp_path / "gradio"
    root.symlink_to(victim, target_is_directory=True)
    action = clean(tmp_path, f"{root}/**")
    assert action["outcome"] == "failed"
    assert f"{root} is a symlink; a cache root is never followed" in action["reason"]
    assert action["details"]["files_deleted"] == 0
    assert all(path.exists() for path in precious)


@needs_root
def test_only_files_of_the_components_user_are_deleted(tmp_path: Path) -> None:
    root = tmp_path / "gradio"
    ours = _old(root / "ours.png")
    theirs = _old(root / "theirs.png")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    action = clean(tmp_path, f"{root}/**")  # not running: the cache root's owner (us)
    assert action["outcome"] == "succeeded", action
    assert action["details"]["skipped_other_owners"] == 1
    assert not ours.exists()
    assert theirs.exists()


@needs_root
def test_a_running_component_owns_what_its_user_owns(tmp_path: Path) -> None:
    """The cache root belongs to someone else; the component's own files still go."""
    root = tmp_path / "gradio"
    ours, theirs = _old(root / "ours.png"), _old(root / "theirs.png")
    os.chown(root, OTHER_UID, OTHER_UID)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    mark = marker()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", mark])
    try:
        time.sleep(0.2)
        action = clean(tmp_path, f"{root}/**", cmdline=mark)
    finally:
        proc.kill()
        proc.wait()
    assert action["details"]["owner_uids"] == {f"{root}/**": [os.geteuid()]}
    assert not ours.exists()
    assert theirs.exists()


@pytest.mark.parametrize(
    "glob", ["/tmp/**", "/home/**", "/home/alice/**", "/etc/**", "/var/**", "/var/tmp/*", "/usr/**"]
)
def test_globs_rooted_at_shared_directories_are_rejected_naming_the_field(
    tmp_path: Path, glob: str
) -> None:
    config = tmp_path / "deploy.yaml"
    config.write_text(f"components:\n  ui:\n    match: {{program: x}}\n    caches: ['{glob}']\n")
    done = subprocess.run(
        [sys.executable, "-m", "glyph_guard.exporter", "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert f"components.ui.caches[0].glob: {glob} is rooted at" in done.stderr
    assert "Traceback" not in done.stderr
