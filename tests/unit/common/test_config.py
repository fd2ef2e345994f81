"""The deployment config: valid files load, every mistake names its field and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glyph_guard.common.config import (
    ConfigError,
    default_config,
    dump_config,
    load_config,
    parse_config,
    with_override,
)
from glyph_guard_demo.testkit.support import REPO

MINIMAL = "components:\n  api:\n    match: {cmdline: 'vllm serve'}\n    port: 5002\n"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glyph_guard.exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_builtin_profile_is_glyph() -> None:
    config = default_config()
    api, ui = config.components
    assert (api.name, api.port, ui.name, ui.port) == ("api", 5002, "ui", 7860)
    assert [p.name for p in api.probes] == ["health", "models", "canary"]
    assert api.probes[2].kind == "canary" and api.probes[2].method == "POST"
    assert [c.glob for c in ui.caches] == ["/tmp/gradio/**"]


def test_effective_config_round_trips() -> None:
    config = default_config()
    assert parse_config(yaml.safe_load(dump_config(config))) == config


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")))
def test_examples_are_valid(example: Path) -> None:
    result = run_cli("check-config", str(example))
    assert result.returncode == 0, result.stderr
    assert "components:" in result.stdout


def test_check_config_without_file_prints_builtin() -> None:
    result = run_cli("check-config")
    assert result.returncode == 0
    assert "vllm" in result.stdout and "7860" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("components: [\n", "not valid YAML at line"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("exporter: {}\n", "components: Field required"),
        ("components: {}\n", "components: Tuple should have at least 1 item"),
        (MINIMAL.replace("5002", "70000"), "components.api.port: Input should be less than"),
        (MINIMAL.replace("'vllm serve'", "'vllm ('"), "components.api.match.cmdline: not a valid"),
        (MINIMAL + "    colour: blue\n", "components.api.colour: Extra inputs are not permitted"),
        (
            "components:\n  api:\n    match: {}\n",
            "components.api.match: set program, cmdline or pidfile",
        ),
        (
            MINIMAL + "    probes: [{name: h, path: health}]\n",
            "components.api.probes[0].path: String should match pattern",
        ),
        (
            MINIMAL + "    probes: [{name: h, timeout_seconds: -1}]\n",
            "components.api.probes[0].timeout_seconds: Input should be greater than 0",
        ),
        (
            "components:\n  api:\n    match: {cmdline: x}\n    probes: [{name: h}]\n",
            "components.api: probes need a 'port'",
        ),
        (
            MINIMAL + "    caches: [relative/**]\n",
            "components.api.caches[0].glob: must be an absolute",
        ),
        (
            MINIMAL + "    remediation: {actions: [restart]}\n",
            "components.api.remediation: the 'restart' action needs a 'restart' method",
        ),
        (
            MINIMAL + "    remediation: {actions: [reboot]}\n",
            "components.api.remediation.actions[0]:"
            " Input should be 'restart', 'clean_cache' or 'reset_gpu'",
        ),
        (
            MINIMAL + "    remediation: {restart: {backend: systemd, unit: 'a;b'}}\n",
            "components.api.remediation.restart.unit: String should match pattern",
        ),
        (MINIMAL + "exporter: {listen: 'nowhere'}\n", "exporter.listen: expected HOST:PORT"),
        (
            MINIMAL + "exporter: {intervals: {liveness: 0}}\n",
            "exporter.intervals.liveness: Input should be greater than or equal to 0.1",
        ),
        (
            MINIMAL + "remediator: {budget: {max_restarts: 5}}\n",
            "remediator.budget: max_restarts is no longer supported: replaced by max_failed_",
        ),
        (
            MINIMAL + "remediator: {budget: {window_seconds: 3600}}\n",
            "remediator.budget: window_seconds is no longer supported: removed",
        ),
        (
            MINIMAL + "remediator: {budget: {backoff_reset_seconds: 600}}\n",
            "remediator.budget: backoff_reset_seconds is no longer supported: removed",
        ),
        (
            MINIMAL + "    remediation: {restart: {start: [vllm], log_max_bytes: 10}}\n",
            "components.api.remediation.restart.log_max_bytes: Input should be greater than",
        ),
        (
            MINIMAL + "    remediation: {restart: {start: [vllm], log_backups: -1}}\n",
            "components.api.remediation.restart.log_backups: Input should be greater than",
        ),
    ],
)
def test_config_error_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_bad_listen_exit_2(tmp_path: Path) -> None:
    missing = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "Traceback" not in missing.stderr
    bad_listen = run_cli("--listen", "localhost")
    assert bad_listen.returncode == 2
    assert "--listen: exporter.listen: expected HOST:PORT" in bad_listen.stderr


def test_an_override_is_validated_as_the_file_is() -> None:
    config = default_config()
    assert with_override(config, "exporter.listen", "127.0.0.1:1", "--listen").exporter.address == (
        "127.0.0.1",
        1,
    )
    with pytest.raises(ConfigError, match=r"^--x: exporter\.intervals\.engine: Input should be"):
        with_override(config, "exporter.intervals.engine", 0, "--x")
    with pytest.raises(ConfigError, match=r"^--listen: remediator\.listen: expected HOST:PORT"):
        with_override(config, "remediator.listen", "nowhere", "--listen")


def test_components_as_list_name_errors_by_name(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text("components:\n- name: ui\n  match: {cmdline: x}\n  port: 0\n")
    with pytest.raises(ConfigError, match=r"components\.ui\.port"):
        load_config(path)
