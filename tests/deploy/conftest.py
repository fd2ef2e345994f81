"""A real Docker Engine for the `docker` tests: installed when missing, a private dockerd when none
runs, a debootstrap base image (no registry is reachable) and a wheelhouse for image builds."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from glyph_guard_demo.testkit.support import REPO

# What the tests run, and the Debian package that brings it.
PACKAGES = {
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}
SYSTEM_SOCKET = Path("/var/run/docker.sock")
BASE_IMAGE = "glyph-test-base:bookworm"
MIRROR = os.environ.get("GLYPH_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The base has what the images need: python3 with venv (glyph-guard), apt (Prometheus).
BASE_PACKAGES = "python3,python3-venv"


def run(argv: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def ensure_packages() -> None:
    """apt-get install what is missing (as root or through sudo), like scripts/bootstrap.sh."""
    missing = [pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and shutil.which("sudo") is None:
        pytest.skip(f"docker tests: need root (or sudo) to install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        [*sudo, "apt-get", "update", "-qq"],
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = run(argv, timeout=600, env=env)
        if done.returncode != 0:
            pytest.skip(f"docker tests: `{' '.join(argv)}` failed:\n{done.stderr[-1500:]}")


def ping(socket: Path) -> bool:
    if not socket.is_socket():
        return False
    try:
        with engine_client(socket, timeout=2) as client:
            return client.get("/_ping").status_code == 200
    except httpx.HTTPError:
        return False


# Creating or removing a container copies or deletes its whole file system with the vfs storage
# driver: minutes, not seconds, on a loaded machine.
ENGINE_TIMEOUT = 300.0


def engine_client(socket: Path, timeout: float = ENGINE_TIMEOUT) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(socket))
    return httpx.Client(transport=transport, base_url="http://docker", timeout=timeout)


@dataclass
class Engine:
    """A Docker Engine the tests may use, and the dockerd they started (None: the host's)."""

    socket: Path
    process: subprocess.Popen[bytes] | None = None
    base_image: str = BASE_IMAGE  # what build_base_image built: the images' base

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}

    def client(self, timeout: float = ENGINE_TIMEOUT) -> httpx.Client:
        return engine_client(self.socket, timeout)

    def docker(self, *argv: str, timeout: float = 120, stdin: Any = None) -> str:
        done = subprocess.run(
            ["docker", *argv],
            capture_output=True,
            text=stdin is None,
            timeout=timeout,
            check=False,
            env=self.env,
            stdin=stdin,
        )
        out = done.stdout if isinstance(done.stdout, str) else done.stdout.decode()
        err = done.stderr if isinstance(done.stderr, str) else done.stderr.decode()
        assert done.returncode == 0, f"docker {' '.join(argv)}: {err[-2000:]}"
        return out

    def has_image(self, name: str) -> bool:
        with self.client() as client:
            return client.get(f"/images/{name}/json").status_code == 200

    def remove_container(self, name: str) -> None:
        with self.client() as client:
            client.delete(f"/containers/{name}", params={"force": "true", "v": "true"})


def start_dockerd(state: Path) -> Engine:
    """Our own dockerd: data root in state (kept, so builds are reused), sockets in /tmp."""
    runtime = Path(tempfile.mkdtemp(prefix="ggd-"))  # short: unix socket paths are limited
    socket = runtime / "docker.sock"
    argv = [
        *("dockerd", "--data-root", str(state / "data-root"), "--exec-root", str(runtime / "x")),
        *("--pidfile", str(runtime / "dockerd.pid"), "--host", f"unix://{socket}"),
        *("--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none"),
    ]
    with (state / "dockerd.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while not ping(socket):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_dockerd(process)
            remove_runtime(runtime)
            tail = (state / "dockerd.log").read_text(errors="replace")[-1500:]
            pytest.skip(f"docker tests: dockerd cannot start here:\n{tail}")
        time.sleep(0.2)
    return Engine(socket, process)


def stop_dockerd(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def remove_runtime(runtime: Path) -> None:
    """The exec root of our dockerd, with what it left mounted there (its netns)."""
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    points = [line.split()[1] for line in mounts if line.strip()]
    for point in sorted(points, reverse=True):
        if point.startswith(f"{runtime}/"):
            run(["umount", point], timeout=30)
    shutil.rmtree(runtime, ignore_errors=True)


def build_base_image(engine: Engine, state: Path) -> None:
    """debootstrap --variant=minbase bookworm, imported as the base image (once per data root)."""
    if engine.has_image(engine.base_image):
        return
    with tempfile.TemporaryDirectory(dir=state) as scratch:
        root = Path(scratch) / "rootfs"
        argv = ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}"]
        done = run([*argv, "bookworm", str(root), MIRROR], timeout=900)
        assert done.returncode == 0, f"debootstrap failed:\n{done.stderr[-2000:]}"
        with subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE) as tar:
            engine.docker("import", "-", engine.base_image, stdin=tar.stdout, timeout=300)
        assert tar.returncode == 0


def docker_state(config: pytest.Config) -> Path:
    """Kept between runs (pytest's cache): the private engine's images and build cache."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("glyph-docker"))
    state = REPO / ".venv" / ".cache" / "glyph-docker"
    state.mkdir(parents=True, exist_ok=True)
    return state


@pytest.fixture(scope="session")
def docker_engine(pytestconfig: pytest.Config) -> Iterator[Engine]:
    """The host's running Docker Engine, or our own dockerd (stopped after the session), with
    the base image built."""
    ensure_packages()
    state = docker_state(pytestconfig)
    if ping(SYSTEM_SOCKET):
        engine = Engine(SYSTEM_SOCKET)
    elif os.geteuid() != 0:
        pytest.skip("docker tests: no Docker Engine runs, and starting dockerd needs root")
    else:
        engine = start_dockerd(state)
    try:
        build_base_image(engine, state)
        yield engine
    finally:
        if engine.process is not None:
            stop_dockerd(engine.process)
            remove_runtime(engine.socket.parent)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def wheelhouse(pytestconfig: pytest.Config) -> Iterator[str]:
    """The dependencies' wheels, served on loopback for `pip install` inside image builds.

    The host's package index may need its own configuration (a proxy's CA); builds get
    PIP_NO_INDEX=1 and PIP_FIND_LINKS=<this URL> instead, through the Dockerfile's ARGs.
    """
    state = docker_state(pytestconfig)
    wheels = state / "wheels"
    wheels.mkdir(exist_ok=True)
    done = run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels)),
            *(str(REPO), str(REPO / "demo"), "setuptools>=77", "wheel"),
        ],
        timeout=600,
    )
    assert done.returncode == 0, f"pip wheel failed:\n{done.stderr[-2000:]}"
    for own in wheels.glob("glyph_guard*.whl"):
        own.unlink()  # the images build the project from its sources
    handler = functools.partial(_Quiet, directory=str(wheels))
    # The same URL as last time when its port is free: the build args, and so the builds that
    # docker caches, stay the same between runs.
    saved = state / "wheelhouse-port"
    try:
        port = int(saved.read_text())
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except (OSError, ValueError):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        saved.write_text(str(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
