"""docker-compose.yml on a real Docker Engine: the shipped stack guards the stand-in Glyph
container; SIGKILL its api and the remediator restarts the container through the Engine API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil
import pytest
import yaml

from glyph_guard_demo.testkit.support import REPO, free_port, parse_metrics, sample

if TYPE_CHECKING:
    from tests.deploy.conftest import Engine

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]

PROJECT = "glyphguardtest"
CONTAINER = "glyph-guard-test-glyph"
SERVICES = ["exporter", "remediator", "prometheus", "alertmanager", "glyph"]
OVERRIDE = REPO / "tests" / "docker" / "compose.test.yml"
STEP = 120.0


@dataclass
class Stack:
    """The running compose project: its ports, its token, and how to reach each part."""

    engine: Engine
    files: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    token: str

    def compose(self, *argv: str, timeout: float = 900) -> str:
        done = subprocess.run(
            [
                *["docker-compose", "--project-directory", str(REPO), "-p", PROJECT],
                *[arg for f in self.files for arg in ("-f", f)],
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )
        assert done.returncode == 0, f"docker-compose {' '.join(argv)}:\n{done.stderr[-4000:]}"
        return done.stdout

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def get(self, name: str, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if name == "remediator" else {}
        response = httpx.get(self.url(name) + path, params=params, headers=headers, timeout=3)
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("content-type", "") else None

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(httpx.get(self.url("exporter") + "/metrics", timeout=3).text)

    def inspect(self, container: str) -> dict[str, Any]:
        with self.engine.client() as client:
            response = client.get(f"/containers/{container}/json")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def container_of(self, service: str) -> str:
        return f"{PROJECT}_{service}_1" if service != "glyph" else CONTAINER


def shipped_compose(path: Path, ports: dict[str, int]) -> None:
    """docker-compose.yml as shipped, less the GPU reservations (no NVIDIA runtime here), and
    with the test's ports in the healthchecks."""
    text = (REPO / "docker-compose.yml").read_text()
    for name, shipped in (("exporter", 9842), ("remediator", 9843)):
        assert text.count(f"http://127.0.0.1:{shipped}/") == 1, name
        text = text.replace(f"http://127.0.0.1:{shipped}/", f"http://127.0.0.1:{ports[name]}/")
    data = yaml.safe_load(text)
    for svc in data["services"].values():
        deploy = svc.pop("deploy", None)
        if deploy is not None:
            # Nothing else is dropped with it.
            assert set(deploy) == {"resources"} and set(deploy["resources"]) == {"reservations"}
            assert set(deploy["resources"]["reservations"]) == {"devices"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def render_configs(work: Path, ports: dict[str, int]) -> None:
    """The shipped configs with the test's ports, the stand-in's process matchers and container."""
    deployment = yaml.safe_load((REPO / "deploy" / "compose" / "glyph.yaml").read_text())
    components = deployment["components"]
    for name in ("api", "ui"):
        # Only this stack's stand-in: other tests on the host run stand-ins too.
        argv = rf"-m\s+glyph_guard_demo\.standin\s+{name}\s.*--port\s+{ports[name]}(\s|$)"
        components[name]["match"] = {"cmdline": argv}
        components[name]["port"] = ports[name]
    components["api"]["remediation"]["restart"]["container"] = CONTAINER
    deployment["exporter"]["listen"] = f"127.0.0.1:{ports['exporter']}"
    deployment["remediator"]["listen"] = f"127.0.0.1:{ports['remediator']}"
    (work / "glyph.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))

    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    prometheus["rule_files"] = ["/etc/prometheus/rules.yml"]  # the shipped mount
    prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        f"127.0.0.1:{ports['alertmanager']}"
    ]
    jobs = {"glyph-exporter": "exporter", "glyph-remediator": "remediator", "vllm": "api"}
    for job in prometheus["scrape_configs"]:
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{ports[jobs[job['job_name']]]}"]
    (work / "prometheus").mkdir()
    (work / "prometheus" / "prometheus.yml").write_text(yaml.safe_dump(prometheus))

    alertmanager = yaml.safe_load((REPO / "deploy" / "prometheus" / "alertmanager.yml").read_text())
    for receiver in alertmanager["receivers"]:
        for hook in receiver.get("webhook_configs", ()):
            hook["url"] = f"http://127.0.0.1:{ports['remediator']}/alerts"
    (work / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager))


@pytest.fixture(scope="module")
def stack(
    docker_engine: Engine, wheelhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed", pytrace=False)
    work = tmp_path_factory.mktemp("compose")
    work.chmod(0o755)
    names = ("exporter", "remediator", "prometheus", "alertmanager", "api", "ui")
    ports = {name: free_port() for name in names}
    render_configs(work, ports)
    (work / "gradio").mkdir(mode=0o777)
    (work / "gradio").chmod(0o777)
    # As docker-compose.yml says: readable by the image's group (gid 10001) and no one else.
    token = os.urandom(24).hex()
    (work / "token").write_text(token + "\n")
    os.chown(work / "token", 0, 10001)
    (work / "token").chmod(0o640)
    shipped_compose(work / "docker-compose.yml", ports)
    env = {
        **docker_engine.env,
        "DOCKER_GID": str(docker_engine.socket.stat().st_gid),
        "DOCKER_SOCKET": str(docker_engine.socket),
        "GLYPH_TEST_BASE": docker_engine.base_image,
        "GLYPH_TEST_WHEELS": wheelhouse,
        "GLYPH_TEST_DIR": str(work),
        "GLYPH_TEST_CONTAINER": CONTAINER,
        "GLYPH_TEST_API_PORT": str(ports["api"]),
        "GLYPH_TEST_UI_PORT": str(ports["ui"]),
        "GLYPH_TEST_PROMETHEUS": f"127.0.0.1:{ports['prometheus']}",
        "GLYPH_TEST_ALERTMANAGER": f"127.0.0.1:{ports['alertmanager']}",
    }
    files = [str(work / "docker-compose.yml"), str(OVERRIDE)]
    running = Stack(docker_engine, files, env, ports, token)
    started = time.monotonic()
    # The stand-in's image builds on the project's: build that first.
    running.compose("build", "exporter")
    running.compose("build", "remediator", "prometheus", "alertmanager", "glyph")
    print(f"images built in {time.monotonic() - started:.1f} s")
    with docker_engine.client(timeout=300) as client:
        # Earlier builds of these images: vfs stores every layer in full, keep only these.
        filters = json.dumps({"dangling": {"true": True}})
        client.post("/images/prune", params={"filters": filters}).raise_for_status()
    try:
        running.compose("up", "-d", "--no-build", *SERVICES)
        yield running
    finally:
        logs = running.compose("logs", "--no-color", "--tail=40", timeout=120)
        print(logs[-6000:])
        running.compose("down", "-v", "--remove-orphans", timeout=300)


def wait(check: Callable[[], object], what: str, timeout: float = STEP) -> float:
    """Poll check until truthy (errors count as not yet); the monotonic time it became so."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return time.monotonic()
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}", pytrace=False)
        time.sleep(0.1)


def healthy(stack: Stack, component: str) -> bool:
    samples = stack.metrics()
    probes = {
        dict(labels)["probe"]
        for name, labels in samples
        if name == "glyph_probe_success" and dict(labels).get("component") == component
    }
    return (
        sample(samples, "glyph_component_up", component=component) == 1
        and bool(probes)
        and all(
            sample(samples, "glyph_probe_success", component=component, probe=p) == 1
            for p in probes
        )
    )


def api_pid(port: int) -> int | None:
    """The stand-in api's host PID (the exporter and the remediator see the host's PIDs)."""
    pattern = re.compile(rf"-m glyph_guard_demo\.standin api .*--port {port}( |$)")
    for proc in psutil.process_iter(["cmdline"]):
        if pattern.search(" ".join(proc.info["cmdline"] or ())):
            return int(proc.pid)
    return None


def firing(stack: Stack, alertname: str, component: str = "api") -> bool:
    alerts = stack.get("prometheus", "/api/v1/alerts")["data"]["alerts"]
    return any(
        a["labels"].get("alertname") == alertname
        and a["labels"].get("component") == component
        and a["state"] == "firing"
        for a in alerts
    )


def in_alertmanager(stack: Stack, alertname: str) -> bool:
    alerts = stack.get("alertmanager", "/api/v2/alerts", filter=f'alertname="{alertname}"')
    return any(a["labels"].get("component") == "api" for a in alerts)


def test_killed_api_is_restarted_through_the_engine_api(stack: Stack) -> None:
    wait(lambda: healthy(stack, "api") and healthy(stack, "ui"), "the stand-in is healthy", 180)
    wait(lambda: firing(stack, "Watchdog", "alerting"), "Prometheus evaluates the shipped rules")
    # Root without capabilities, as shipped, lists the stand-in's open files in /proc.
    assert (sample(stack.metrics(), "glyph_component_open_fds", component="api") or 0) > 0
    # The exporter reads sockets on a schedule of their own (exporter.intervals.ports), not when
    # the probes pass: its first look may have come before the api listened.
    port = str(stack.ports["api"])
    wait(
        lambda: (
            sample(stack.metrics(), "glyph_component_port_listening", component="api", port=port)
            == 1
        ),
        "the exporter sees the api's port listening",
    )
    before = stack.inspect(CONTAINER)["State"]["StartedAt"]
    known = {a["id"] for a in stack.get("remediator", "/actions", component="api")}
    pid = api_pid(stack.ports["api"])
    assert pid is not None, "the stand-in api runs"
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()

    def new_action() -> dict[str, Any] | None:
        actions = stack.get("remediator", "/actions", component="api")
        fresh = [a for a in actions if a["id"] not in known]
        return fresh[0] if fresh else None

    steps = {
        "exporter reports the api down": wait(
            lambda: sample(stack.metrics(), "glyph_component_up", component="api") == 0,
            "the exporter reports the api down",
        ),
        "Prometheus fires GlyphComponentDown": wait(
            lambda: firing(stack, "GlyphComponentDown"), "GlyphComponentDown fires"
        ),
        "Alertmanager holds it": wait(
            lambda: in_alertmanager(stack, "GlyphComponentDown"), "Alertmanager holds it"
        ),
        "remediator begins the restart": wait(new_action, "the remediator acts"),
        "container restarted (Engine API)": wait(
            lambda: stack.inspect(CONTAINER)["State"]["StartedAt"] != before,
            "the container is restarted",
        ),
        "restart finished": wait(
            lambda: (new_action() or {}).get("outcome"), "the restart finishes", 300
        ),
        "exporter reports it healthy": wait(
            lambda: healthy(stack, "api") and healthy(stack, "ui"), "the api is healthy again"
        ),
    }
    action = new_action()
    assert action is not None
    print("\ncompose: SIGKILL the stand-in api in its container")
    for name, at in sorted(steps.items(), key=lambda item: item[1]):
        print(f"  +{at - t0:6.2f} s  {name}")
    assert action["outcome"] == "succeeded", action
    assert action["details"]["container"] == CONTAINER
    info = stack.inspect(CONTAINER)
    assert info["State"]["Running"]
    # Restarted by the remediator, not by a restart policy of Docker's.
    assert info["HostConfig"]["RestartPolicy"]["Name"] in ("", "no") and info["RestartCount"] == 0
    new_pid = api_pid(stack.ports["api"])
    assert new_pid is not None and new_pid != pid


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@pytest.mark.parametrize("service", ["exporter", "remediator", "prometheus", "alertmanager"])
def test_services_run_read_only_without_capabilities_as_shipped(stack: Stack, service: str) -> None:
    info = stack.inspect(stack.container_of(service))
    host = info["HostConfig"]
    assert info["State"]["Running"], info["State"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["NetworkMode"] == "host"
    if "Healthcheck" in info["Config"]:
        # The shipped healthcheck (every 30 s) passes in the image as built.
        name = stack.container_of(service)
        wait(lambda: stack.inspect(name)["State"]["Health"]["Status"] == "healthy", "healthy", 90)
    status = proc_status(info["State"]["Pid"])
    for kind in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[kind], 16) == 0, f"{service}: {kind} {status[kind]}"
    assert status["NoNewPrivs"] == "1"
    # The root file system refuses writes; only the tmpfs and the volumes are writable.
    done = subprocess.run(
        ["docker", "exec", stack.container_of(service), "sh", "-c", "touch /glyph-test"],
        capture_output=True,
        text=True,
        timeout=60,
        env=stack.engine.env,
        check=False,
    )
    assert done.returncode != 0 and "Read-only file system" in done.stderr, done


def test_remediator_reaches_the_engine_socket_through_its_group_only(stack: Stack) -> None:
    info = stack.inspect(stack.container_of("remediator"))
    socket = stack.engine.socket.stat()
    # The socket is not world-accessible: the remediator (uid 10001) gets in through the
    # group docker-compose.yml adds (DOCKER_GID), and its restart above went through it.
    assert socket.st_mode & 0o007 == 0
    assert info["Config"]["User"] == "10001:10001"
    assert str(socket.st_gid) in info["HostConfig"]["GroupAdd"]
    status = proc_status(info["State"]["Pid"])
    assert status["Uid"].split()[0] == "10001"
    assert str(socket.st_gid) in status["Groups"].split()
    assert info["HostConfig"]["PidMode"] == "host"
