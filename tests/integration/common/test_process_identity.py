"""What a matcher may name: never init or us, pidfiles that are files, programs not wrappers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from glyph_guard.common.config import default_config, parse_config
from glyph_guard.common.processes import ProcessTable, argv_matches, program_and_args
from glyph_guard_demo.testkit.doubles.harness import (
    TOKEN,
    Remediator,
    make_config,
    marker,
    payload,
    tripwire,
)
from glyph_guard_demo.testkit.exporter_fixtures import deployment, running_exporter, scrape
from glyph_guard_demo.testkit.support import REPO, free_port, python_argv, sample, spawned, wait_for

SLEEPER = "import time; time.sleep(120)"


def find(mark: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [""])[-1] == mark:
            found.append(proc)
    return found


INIT = """
import os, signal, subprocess, sys, time
bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", sys.argv[1]])
remediator = subprocess.Popen(
    [sys.executable, "-m", "glyph_guard.remediator", "--config", sys.argv[2]]
)
signal.signal(signal.SIGTERM, lambda *_: remediator.terminate())
remediator.wait()
bystander.kill()
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_a_pidfile_naming_init_stops_nothing_and_says_so(tmp_path: Path) -> None:
    """In a PID namespace, PID 1 is the remediator's init: one alert once SIGTERMed everyone."""
    flag, component = tripwire(tmp_path)
    init_mark, bystander_mark = marker(), marker()
    pidfile = tmp_path / "api.pid"
    pidfile.write_text("1\n")
    component["match"] = {"pidfile": str(pidfile), "cmdline": init_mark}
    config = make_config(tmp_path, {"api": component})
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    argv = ["unshare", "--pid", "--fork", "--mount-proc"]
    argv += python_argv(INIT, bystander_mark, str(path), init_mark)
    if os.geteuid() != 0:
        argv[1:1] = ["--map-root-user"]
    url = f"http://{config.remediator.listen}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with spawned(argv, cwd=REPO):

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30)
        [bystander] = find(bystander_mark)
        httpx.post(f"{url}/alerts", json=payload(), headers=auth, timeout=5)

        def finished() -> dict[str, Any] | None:
            actions = httpx.get(f"{url}/actions", headers=auth, timeout=5).json()
            return actions[0] if actions and actions[0]["outcome"] else None

        action = wait_for(finished, 30)
        assert bystander.is_running()
        details = action["details"]
        assert details["stopped_pids"] == []
        assert details["nothing_stopped"] == (
            f"no process proven to be component api's; nothing stopped ({pidfile} names PID 1:"
            " PID 1 is init, this service or one of its ancestors)"
        )
        assert action["reason"].startswith(details["nothing_stopped"])
        assert flag.exists()  # the start ran: nothing held the port


def test_pidfiles_that_are_not_regular_files_are_refused_without_blocking(
    tmp_path: Path,
) -> None:
    mark = marker()
    with spawned(python_argv(SLEEPER, mark)) as proc:
        fifo = tmp_path / "fifo.pid"
        os.mkfifo(fifo)
        real = tmp_path / "real.pid"
        real.write_text(f"{proc.pid}\n")
        link = tmp_path / "link.pid"
        link.symlink_to(real)
        components = {
            name: {"match": {"pidfile": str(path), "cmdline": mark}}
            for name, path in (("fifo", fifo), ("link", link), ("real", real), ("dev", "/dev/zero"))
        }
        with running_exporter(deployment(components)) as exporter:
            up = "glyph_component_up"
            wait_for(lambda: sample(scrape(exporter), up, component="real") == 1, 10)
            samples = scrape(exporter)
            for name in ("fifo", "link", "dev"):
                assert sample(samples, up, component=name) == 0
            stamp = "glyph_exporter_last_sample_timestamp_seconds"
            first = sample(samples, stamp, collector="processes")
            wait_for(lambda: sample(scrape(exporter), stamp, collector="processes") != first, 5)
        assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_restart_with_a_fifo_pidfile_is_not_held_up(tmp_path: Path) -> None:
    flag, component = tripwire(tmp_path)
    fifo = tmp_path / "api.pid"
    os.mkfifo(fifo)
    component["match"] = {"pidfile": str(fifo), "cmdline": marker()}
    with Remediator(make_config(tmp_path, {"api": component})) as rem:
        rem.post(payload())
        [action] = rem.finished_actions(1, timeout=20)
    assert "holds no PID, or is not a regular file" in action["details"]["nothing_stopped"]
    assert flag.exists()


def test_a_component_that_execs_its_program_is_seen_after_the_exec(tmp_path: Path) -> None:
    """`bash -c 'setup; exec vllm serve ...'`: the same PID, a new command line, seconds later."""
    mark = marker()
    script = f"sleep 6; exec {sys.executable} -c 'import time; time.sleep(120)' {mark}"
    config = deployment({"svc": {"match": {"program": r"python[0-9.]*", "args": mark}}})
    with running_exporter(config) as exporter, spawned(["bash", "-c", script]) as shell:
        assert sample(scrape(exporter), "glyph_component_up", component="svc") == 0
        wait_for(lambda: sample(scrape(exporter), "glyph_component_up", component="svc"), 10)
        assert psutil.Process(shell.pid).cmdline()[-1] == mark  # the same PID, exec'd


WRAPPER = """
import subprocess, sys, time
kids = [subprocess.Popen(sys.argv[1:3]), subprocess.Popen([sys.executable, "-c", "{sleep}"])]
time.sleep(120)
"""


def test_a_wrapper_naming_the_program_in_its_arguments_is_not_the_program(tmp_path: Path) -> None:
    """A tmux server started with `tmux new -d 'vllm serve ...'`, and its other windows."""
    program = tmp_path / "fakevllm"
    program.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(120)\n")
    program.chmod(0o755)
    wrapper = [sys.executable, "-c", WRAPPER.format(sleep=SLEEPER), str(program), "serve"]
    config = deployment({"api": {"match": {"program": "fakevllm", "args": r"^serve\b"}}})
    with spawned(wrapper) as tmux, running_exporter(config) as exporter:

        def serving() -> list[psutil.Process]:
            return [p for p in psutil.Process(tmux.pid).children() if "serve" in p.cmdline()]

        [served] = wait_for(serving, 10)
        up = "glyph_component_up"
        wait_for(lambda: sample(scrape(exporter), up, component="api"), 10)
        samples = scrape(exporter)
        assert sample(samples, "glyph_component_processes", component="api") == 1
        table = ProcessTable()
        table.refresh()
        [component] = config.components
        assert table.find([component])["api"].roots == (served.pid,)


API_SERVER = "vllm.entrypoints.openai.api_server"


@pytest.mark.parametrize(
    ("argv", "program", "args"),
    [
        (["/usr/bin/python3", "/usr/local/bin/vllm", "serve", "m"], "vllm", ("serve", "m")),
        (["vllm", "serve", "m"], "vllm", ("serve", "m")),
        (["python3", "-u", "-m", "vllm.entrypoints.openai.api_server"], API_SERVER, ()),
        (["python", "-mstandin", "api"], "standin", ("api",)),
        (["sh", "-c", "vllm serve m"], "sh", ("-c", "vllm serve m")),
        (["bash", "-lc", "exec vllm serve m"], "bash", ("-lc", "exec vllm serve m")),
        (["tmux", "new", "-d", "vllm serve m"], "tmux", ("new", "-d", "vllm serve m")),
        (["bash", "/opt/glyph/界面推理.sh"], "界面推理.sh", ()),
        (["python3", "-W", "ignore", "app.py", "--x"], "app.py", ("--x",)),
        (["python3", "-c", "print('vllm serve')"], "python3", ("-c", "print('vllm serve')")),
        ([], "", ()),
    ],
)
def test_program_and_args(argv: list[str], program: str, args: tuple[str, ...]) -> None:
    assert program_and_args(argv) == (program, args)


def test_the_shipped_profiles_match_programs_not_wrappers() -> None:
    repo = REPO
    profiles = [default_config()] + [
        parse_config(yaml.safe_load(path.read_text()), str(path))
        for path in [*repo.glob("examples/*.yaml"), repo / "deploy" / "compose" / "glyph.yaml"]
    ]
    for profile in profiles:
        for component in profile.components:
            assert component.match.program is not None, component.name
            assert component.match.cmdline is None, component.name
    matcher = default_config().components[0].match

    def matches(argv: list[str]) -> bool:
        return argv_matches(matcher, argv)

    assert matches(["/usr/bin/python3", "/usr/local/bin/vllm", "serve", "zai-org/Glyph"])
    assert matches(["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "x"])
    assert not matches(["sh", "-c", "vllm serve zai-org/Glyph --port 5002"])
    assert not matches(["tmux", "new", "-d", "vllm serve zai-org/Glyph"])
    assert not matches(["python3", "/usr/local/bin/vllm", "chat"])


def test_a_configured_user_must_own_the_process(tmp_path: Path) -> None:
    mark = marker()
    other = "0" if os.geteuid() != 0 else "65534"
    with spawned(python_argv(SLEEPER, mark)) as proc:
        config = deployment(
            {
                "mine": {"match": {"cmdline": mark, "user": str(os.geteuid())}},
                "theirs": {"match": {"cmdline": mark, "user": other}},
            }
        )
        table = ProcessTable()
        wait_for(lambda: table.refresh() or table.find(config.components)["mine"].roots, 5)
        trees = table.find(config.components)
        assert trees["mine"].roots == (proc.pid,)
        assert trees["theirs"].roots == ()


HOLDER_WITH_CHILD = """
import socket, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", sys.argv[2]])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print(child.pid, flush=True)
time.sleep(120)
"""


def test_kill_port_holders_stops_the_holder_and_nothing_else(tmp_path: Path) -> None:
    from glyph_guard_demo.testkit.doubles.harness import command_component, healthy  # noqa: PLC0415

    port, mark = free_port(), marker()
    component = command_component(port, mark, kill_port_holders=True)
    holder_argv = python_argv(HOLDER_WITH_CHILD, str(port), marker())
    with (
        spawned(holder_argv, stdout=subprocess.PIPE) as holder,
        Remediator(make_config(tmp_path, {"api": component})) as rem,
    ):
        assert holder.proc.stdout is not None
        child = psutil.Process(int(holder.proc.stdout.readline()))
        holder.proc.stdout.close()
        rem.post(payload())
        [action] = rem.finished_actions(1)
        assert action["outcome"] == "succeeded", json.dumps(action)
        assert holder.proc.wait(5) is not None
        assert child.is_running()
        assert child.pid not in action["details"]["stopped_pids"]
        assert healthy(port)
        child.kill()
