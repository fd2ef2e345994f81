"""The reset_gpu action end to end: real remediator, real processes, NVML's fake at the pynvml
boundary, and a double for nvidia-smi (written here) that records its argv."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from glyph_guard.common.config import Deployment, GpuReset
from glyph_guard.common.xid_watch import XidWatch
from glyph_guard.remediator.actions.base import ActionResult
from glyph_guard.remediator.actions.gpu import NvmlHolders
from glyph_guard.remediator.actions.reset_gpu import GpuResetter, reset_argv
from glyph_guard.remediator.gpu_health import GpuHealth
from glyph_guard_demo.testkit.doubles.harness import (
    Remediator,
    alert,
    command_component,
    make_config,
    marker,
    payload,
)
from glyph_guard_demo.testkit.fake_nvml import GIB, FakeDevice, FakeNvml
from glyph_guard_demo.testkit.real_nvml import real_nvml_or_skip
from glyph_guard_demo.testkit.support import free_port, spawned, wait_for


class NvidiaSmi:
    """A stand-in for nvidia-smi, the NVML fake's counterpart as testkit/doubles/systemctl is
    systemd's: a GPU cannot be reset without a GPU, so this executable records its argv, and
    for `--gpu-reset -i N` writes N where the fake NVML reads resets (the fake GPU is reset)."""

    def __init__(self, tmp_path: Path, exit_code: int = 0, sleep: float = 0.0) -> None:
        self.path = tmp_path / "bin" / "nvidia-smi"
        self.log = tmp_path / "nvidia-smi.argv"
        self.resets = tmp_path / "nvml-resets"
        self.path.parent.mkdir(exist_ok=True)
        self.path.write_text(
            f"#!{sys.executable}\n"
            "import json, sys, time\n"
            f"with open({str(self.log)!r}, 'a') as log:\n"
            "    log.write(json.dumps(sys.argv) + '\\n')\n"
            f"time.sleep({sleep})\n"
            f"if {exit_code}:\n"
            "    print('Unable to reset this GPU because it is in use by some other process')\n"
            f"    sys.exit({exit_code})\n"
            "if sys.argv[1:3] == ['--gpu-reset', '-i']:\n"
            f"    with open({str(self.resets)!r}, 'a') as resets:\n"
            "        resets.write(sys.argv[3] + '\\n')\n"
            "print('GPU 00000000:00:00.0 was successfully reset.')\n",
            encoding="utf-8",
        )
        self.path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def fake_gpus(smi: NvidiaSmi) -> FakeNvml:
    return FakeNvml([FakeDevice("GPU-aaaa"), FakeDevice("GPU-bbbb")], resets=smi.resets)


def deployment(
    tmp_path: Path, smi: NvidiaSmi, mark: str, gpus: list[int], actions: list[str], **reset: Any
) -> Deployment:
    component = command_component(free_port(), mark, probes=False)
    component["gpus"] = gpus
    component["remediation"]["actions"] = actions
    gpu_reset = {"nvidia_smi": str(smi.path), **reset}
    return make_config(tmp_path, {"api": component}, gpu_reset=gpu_reset)


class Watch(GpuHealth):
    """The remediator's GPU health on the fake, noting which GPUs it was told were reset."""

    def __init__(self, nvml: FakeNvml) -> None:
        super().__init__(XidWatch(nvml, rediscover_seconds=0))
        self.done: list[int] = []

    def reset_done(self, index: int) -> None:
        self.done.append(index)
        super().reset_done(index)


def reset_now(config: Deployment, nvml: FakeNvml, watch: Watch | None = None) -> ActionResult:
    watch = watch or Watch(nvml)
    resetter = GpuResetter(
        config.remediator.gpu_reset, lambda: config.components, NvmlHolders(nvml), watch
    )
    return asyncio.run(resetter.reset(config.components[0]))


def metric(rem: Remediator, outcome: str) -> str:
    line = f'glyph_remediator_gpu_resets_total{{component="api",outcome="{outcome}"}}'
    found = [m for m in rem.http.get("/metrics").text.splitlines() if m.startswith(line)]
    return found[0].split()[-1] if found else "absent"


def test_enabled_and_free_resets_the_configured_gpu_whatever_the_labels_say(
    tmp_path: Path,
) -> None:
    smi = NvidiaSmi(tmp_path)
    nvml = fake_gpus(smi)
    config = deployment(tmp_path, smi, marker(), [1], ["restart", "reset_gpu"])
    expected = [str(smi.path), "--gpu-reset", "-i", "1"]
    smuggling = alert(action="reset_gpu", gpu="0; reboot", nvidia_smi="/bin/false", index="0")
    gpu_alert = alert(component="gpu", action="reset_gpu", gpu="1", fingerprint="9a1b2c3d4e5f6071")
    with Remediator(config, gpu=NvmlHolders(nvml)) as rem:
        assert rem.post(payload(smuggling)).status_code == 202
        [first] = rem.finished_actions(1)
        # the GPU needs-reset alert (component `gpu`) goes to the component configured on it
        assert rem.post(payload(gpu_alert)).status_code == 202
        actions = rem.finished_actions(2)
        assert metric(rem, "succeeded") == "2.0"
    for action in actions:
        assert (action["action"], action["outcome"]) == ("reset_gpu", "succeeded")
        assert action["reason"] == "GPU 1 reset"
        [run] = action["details"]["runs"]
        assert run["argv"] == expected
        assert run["exit_code"] == 0
        assert "successfully reset" in run["output"]
    assert first["origin"] == "alert"
    assert smi.calls() == [expected, expected]
    assert NvmlHolders(nvml).on(1) == frozenset()  # the fake reads the resets the double wrote
    assert [d.resets for d in nvml.devices] == [0, 2]


def test_off_by_default(tmp_path: Path) -> None:
    smi = NvidiaSmi(tmp_path)
    config = deployment(tmp_path, smi, marker(), [0], ["restart"])
    gpu_alert = alert(component="gpu", action="reset_gpu", gpu="0")
    named = alert(action="reset_gpu", fingerprint="1111222233334444")
    with Remediator(config, gpu=NvmlHolders(fake_gpus(smi))) as rem:
        verdicts = rem.post(payload(gpu_alert, named)).json()
        assert [v["reason"] for v in verdicts["alerts"]] == ["gpu_reset_off", "action_not_allowed"]
        assert rem.reasons() == ["skipped:gpu_reset_off", "skipped:action_not_allowed"]
        assert rem.actions() == []
    assert smi.calls() == []


def test_a_process_holding_the_gpu_refuses_the_reset(tmp_path: Path) -> None:
    smi = NvidiaSmi(tmp_path)
    nvml = fake_gpus(smi)
    nvml.devices[0].processes = [(4242, 3 * GIB)]
    config = deployment(tmp_path, smi, marker(), [0], ["reset_gpu"])
    with Remediator(config, gpu=NvmlHolders(nvml)) as rem:
        rem.post(payload(alert(action="reset_gpu")))
        [action] = rem.finished_actions(1)
        assert metric(rem, "refused") == "1.0"
    assert (action["outcome"], action["details"]["refused"]) == ("refused", "gpu_in_use")
    assert action["reason"] == "GPU 0 is held by PID 4242"
    assert smi.calls() == []
    assert nvml.devices[0].resets == 0


def test_our_component_running_on_the_gpu_refuses_the_reset(tmp_path: Path) -> None:
    smi, mark = NvidiaSmi(tmp_path), marker()
    config = deployment(tmp_path, smi, mark, [0], ["reset_gpu"])
    watch = Watch(fake_gpus(smi))
    with spawned([sys.executable, "-c", "import time; time.sleep(60)", mark]) as proc:
        result = reset_now(config, fake_gpus(smi), watch)
        assert proc.proc.poll() is None  # still runs: a reset never stops anything
    assert (result.outcome, result.details["refused"]) == ("refused", "component_running")
    assert "component(s) api configured on GPU 0 run" in result.reason
    assert (smi.calls(), watch.done) == ([], [])


def test_a_lost_gpu_cannot_be_shown_free(tmp_path: Path) -> None:
    smi = NvidiaSmi(tmp_path)
    nvml = fake_gpus(smi)
    nvml.lose(0)
    result = reset_now(deployment(tmp_path, smi, marker(), [0], ["reset_gpu"]), nvml)
    assert (result.outcome, result.details["refused"]) == ("refused", "gpu_unreadable")
    assert smi.calls() == []


def test_a_failing_reset_is_recorded_as_failed(tmp_path: Path) -> None:
    smi = NvidiaSmi(tmp_path, exit_code=3)
    nvml = fake_gpus(smi)
    watch = Watch(nvml)
    result = reset_now(deployment(tmp_path, smi, marker(), [0, 1], ["reset_gpu"]), nvml, watch)
    assert (result.outcome, result.reason) == ("failed", "resetting GPU 0: exited 3")
    [run] = result.details["runs"]  # it stops at the first failure
    assert "Unable to reset" in run["output"]
    assert smi.calls() == [[str(smi.path), "--gpu-reset", "-i", "0"]]
    assert watch.done == []


def test_a_reset_that_hangs_is_killed_at_its_timeout(tmp_path: Path) -> None:
    smi = NvidiaSmi(tmp_path, sleep=60)
    nvml = fake_gpus(smi)
    watch = Watch(nvml)
    config = deployment(tmp_path, smi, marker(), [0], ["reset_gpu"], timeout_seconds=0.5)
    result = reset_now(config, nvml, watch)
    assert result.outcome == "failed"
    assert result.reason == "resetting GPU 0: did not finish within 0.5 s; killed"
    [run] = result.details["runs"]
    assert run["exit_code"] < 0 and run["seconds"] < 30
    assert watch.done == []


class Closing(Watch):
    """Notes how many NVML sessions were open (the fake counts them) when told of a reset."""

    def __init__(self, nvml: FakeNvml) -> None:
        super().__init__(nvml)
        self.nvml = nvml
        self.open_sessions: int | None = None

    def reset_done(self, index: int) -> None:
        self.open_sessions = self.nvml.references
        super().reset_done(index)


def test_the_reset_runs_with_our_nvml_closed_and_lifts_the_gpus_hold(tmp_path: Path) -> None:
    smi = NvidiaSmi(tmp_path)
    nvml = fake_gpus(smi)
    watch = Closing(nvml)
    watch.start()  # the XID watch's thread, on the fake
    try:
        wait_for(lambda: any(events.devices for events in nvml.event_sets), 10)
        nvml.xid(0, 48)  # double-bit ECC: GPU 0 needs a reset
        wait_for(lambda: watch.hold((0,)) is not None, 10)
        assert watch.hold((1,)) is None
        result = reset_now(deployment(tmp_path, smi, marker(), [0], ["reset_gpu"]), nvml, watch)
        assert (result.outcome, watch.done, watch.open_sessions) == ("succeeded", [0], 0)
        assert watch.hold((0,)) is None
        wait_for(lambda: nvml.references >= 1, 10)  # the watch took NVML up again
    finally:
        watch.stop()


def test_no_nvidia_smi_fails_with_why(tmp_path: Path) -> None:
    smi = NvidiaSmi(tmp_path)
    config = deployment(tmp_path, smi, marker(), [0], ["reset_gpu"], nvidia_smi="/nonexistent/smi")
    result = reset_now(config, fake_gpus(smi))
    assert (result.outcome, result.reason) == (
        "failed",
        "cannot reset: /nonexistent/smi is not an executable file",
    )


@pytest.mark.gpu
def test_real_reset_argv_would_be_valid() -> None:
    """On a GPU host: the argv names a real nvidia-smi and a GPU index it knows. It only asks
    nvidia-smi about that GPU: a test never resets a real GPU."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        pytest.skip("no nvidia-smi here")
    module, count = real_nvml_or_skip()
    resetter = GpuResetter(GpuReset(), lambda: (), NvmlHolders(module), GpuHealth())
    assert resetter.executable == executable
    for index in range(count):
        argv = reset_argv(executable, index)
        assert argv[1:3] == ["--gpu-reset", "-i"]
        query = [argv[0], "-i", argv[3], "--query-gpu=index", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
        assert (done.returncode, done.stdout.strip()) == (0, str(index))
