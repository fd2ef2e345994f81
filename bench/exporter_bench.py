"""Exporter benchmark: scrape latency, sampling cost, idle CPU and RSS, beside process-exporter."""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from glyph_guard_demo.testkit.support import free_port

REPO = Path(__file__).resolve().parents[1]

WORKLOAD = """
import http.server, subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        for _ in range(int(sys.argv[3]))]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
"""


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def scrape_latencies(url: str, count: int) -> list[float]:
    """Sequential scrapes on one kept-alive connection, as Prometheus scrapes.

    The stdlib client keeps the client's own cost (a fraction of httpx's) out of the figure.
    """
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    headers = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "identity"}
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("GET", parts.path, headers=headers)
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise SystemExit(f"{url}: HTTP {response.status}")
    finally:
        conn.close()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )


PEER_PACKAGE = "prometheus-process-exporter"


def peer_binary() -> str:
    """Debian's prometheus-process-exporter, installed when missing; exits when it cannot be.

    The side-by-side figures are the point of the benchmark: it never runs without its peer.
    """
    found = shutil.which(PEER_PACKAGE)
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and shutil.which("sudo") is None:
        sys.exit(f"exporter_bench: {PEER_PACKAGE} is missing and installing it needs root")
    print(f"exporter_bench: installing {PEER_PACKAGE} from Debian", file=sys.stderr)
    # Keep the package's own service from starting (it would listen on :9256).
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        if created:
            subprocess.run(
                [*sudo, "tee", str(policy)],
                input=b"#!/bin/sh\nexit 101\n",
                stdout=subprocess.DEVNULL,
                check=True,
            )
            subprocess.run([*sudo, "chmod", "+x", str(policy)], check=True)
        for argv in (
            [*sudo, "apt-get", "update", "-qq"],
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", PEER_PACKAGE],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                sys.exit(f"exporter_bench: `{' '.join(argv)}` failed:\n{done.stderr[-2000:]}")
    finally:
        if created:
            subprocess.run([*sudo, "rm", "-f", str(policy)], check=False)
    found = shutil.which(PEER_PACKAGE)
    if not found:
        sys.exit(f"exporter_bench: {PEER_PACKAGE} installed but not on PATH")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    pe_binary = peer_binary()

    marker = f"glyph-bench-{uuid.uuid4().hex[:8]}"
    work_dir = Path(tempfile.mkdtemp(prefix="glyph-bench-"))
    app_port, exporter_port, pe_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        workload = spawn(
            [sys.executable, "-c", WORKLOAD, marker, str(app_port), str(args.processes - 1)]
        )
        procs.append(workload)
        wait_http(f"http://127.0.0.1:{app_port}/health")
        deadline = time.monotonic() + 20
        while len(psutil.Process(workload.pid).children()) < args.processes - 1:
            if time.monotonic() > deadline:
                raise SystemExit("workload children did not start")
            time.sleep(0.1)
        pids = [workload.pid, *(c.pid for c in psutil.Process(workload.pid).children())]

        config = work_dir / "deploy.yaml"
        cache = work_dir / "cache"
        cache.mkdir()
        for i in range(200):
            (cache / f"page-{i}.png").write_bytes(b"x" * 1024)
        config.write_text(
            "components:\n"
            "  api:\n"
            f"    match: {{cmdline: '{marker}'}}\n"
            f"    port: {app_port}\n"
            "    probes: [{name: health, path: /health}, {name: models, path: /v1/models,"
            " expect_status: [404]}]\n"
            f"    caches: ['{cache}/**']\n"
            f"exporter: {{listen: '127.0.0.1:{exporter_port}'}}\n"
        )
        exporter = spawn(
            [
                sys.executable,
                str(REPO / "bench" / "exporter_fake_gpus.py"),
                "--config",
                str(config),
                "--gpus",
                str(args.gpus),
                "--pids",
                ",".join(map(str, pids)),
            ]
        )
        procs.append(exporter)
        glyph_url = f"http://127.0.0.1:{exporter_port}/metrics"
        wait_http(glyph_url)
        time.sleep(10)  # every sampler has run, and the workload is past its start-up
        series = sum(
            1
            for line in httpx.get(glyph_url).text.splitlines()
            if line and not line.startswith("#")
        )

        me = psutil.Process(exporter.pid)
        cpu_before = sum(me.cpu_times()[:2])
        time.sleep(args.idle_seconds)
        idle_cpu = (sum(me.cpu_times()[:2]) - cpu_before) / args.idle_seconds
        rss = me.memory_info().rss
        durations = {}
        for line in httpx.get(glyph_url).text.splitlines():
            if line.startswith("glyph_exporter_collector_duration_seconds{"):
                name = line.split('"')[1]
                durations[name] = float(line.rsplit(" ", 1)[1])

        glyph = scrape_latencies(glyph_url, args.scrapes)

        pe_config = work_dir / "process-exporter.yaml"
        pe_config.write_text(f"process_names:\n  - name: api\n    cmdline: ['{marker}']\n")
        pe_proc = spawn(
            [
                pe_binary,
                "-config.path",
                str(pe_config),
                "-web.listen-address",
                f"127.0.0.1:{pe_port}",
            ]
        )
        procs.append(pe_proc)
        pe_url = f"http://127.0.0.1:{pe_port}/metrics"
        wait_http(pe_url)
        pe = scrape_latencies(pe_url, args.scrapes)

        print(
            f"workload: {len(pids)} processes in one component, {args.gpus} fake GPUs, "
            f"{series} series"
        )
        print(f"{'exporter':<30}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
        for name, values in (("glyph-exporter", glyph), ("prometheus-process-exporter", pe)):
            print(
                f"{name:<30}{pct(values, 0.5) * 1e3:>10.2f}{pct(values, 0.99) * 1e3:>10.2f}"
                f"{max(values) * 1e3:>10.2f}"
            )
        print(
            f"glyph-exporter idle CPU: {idle_cpu * 100:.2f} % of a core "
            f"(over {args.idle_seconds:.0f} s, no scrapes)"
        )
        print(f"glyph-exporter RSS: {rss / 1e6:.1f} MB")
        for name, seconds in sorted(durations.items()):
            print(f"sampler {name:<10} last run {seconds * 1e3:.2f} ms (wall)")
        print(
            f"mean scrape: glyph {statistics.mean(glyph) * 1e3:.2f} ms"
            + f", process-exporter {statistics.mean(pe) * 1e3:.2f} ms"
        )
        targets = [
            ("p50 <= 2 ms", pct(glyph, 0.5) <= 0.002),
            ("p99 <= 5 ms", pct(glyph, 0.99) <= 0.005),
            ("idle CPU <= 0.5 %", idle_cpu <= 0.005),
            ("RSS <= 60 MB", rss <= 60e6),
        ]
        targets.append(("no slower than process-exporter (p50)", pct(glyph, 0.5) <= pct(pe, 0.5)))
        for label, ok in targets:
            print(f"target {label}: {'met' if ok else 'MISSED'}")
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
