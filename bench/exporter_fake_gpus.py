"""Runs glyph-exporter with N fake GPUs (the tests' NVML fake) for the benchmark; not a product."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from glyph_guard.common.config import load_config
from glyph_guard.exporter.cli import Exporter
from glyph_guard.exporter.nvml import NvmlReader
from glyph_guard_demo.testkit.fake_nvml import GIB, FakeDevice, FakeNvml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--pids", default="", help="comma-separated PIDs to place on the GPUs")
    args = parser.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    devices = [
        FakeDevice(f"GPU-{i:04d}", processes=[(pid, GIB) for pid in pids[i :: args.gpus]])
        for i in range(args.gpus)
    ]
    exporter = Exporter(load_config(Path(args.config)), nvml=NvmlReader(FakeNvml(devices)))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    exporter.start()
    print("ready", flush=True)
    done.wait()
    exporter.stop()


if __name__ == "__main__":
    main()
