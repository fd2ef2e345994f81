"""The replay command: run a recorded memory trace through the leak detector, one JSON line each."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

from glyph_guard.common.config import ConfigError, load_config
from glyph_guard.exporter.leak_detector import LeakDetector, LeakSettings

PROG = "glyph-exporter replay"
HEADER = ("timestamp_seconds", "bytes")


class TraceError(Exception):
    """A trace or an argument that cannot be replayed, with a one-line reason."""


def replay_main(argv: list[str]) -> int:
    """Print the detector's reading for every sample of the trace; 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Replay a memory trace through the leak detector with the exporter's "
        "default settings and print one JSON object per sample; a suspected one carries the "
        "evidence of the window that tipped it.",
    )
    parser.add_argument("trace", help="CSV file with the header 'timestamp_seconds,bytes'")
    parser.add_argument(
        "--limit-bytes",
        required=True,
        metavar="N",
        help="the memory the process may use, for the time-to-exhaustion forecast",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a deployment YAML whose exporter.leak tuning to replay with (default: the "
        "exporter's defaults)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its own message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        limit = _parse_limit(args.limit_bytes)
        samples = read_trace(Path(args.trace))
        settings = (
            LeakSettings() if args.config is None else load_config(Path(args.config)).exporter.leak
        )
    except (TraceError, ConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    detector = LeakDetector(settings)
    try:
        for t, value in samples:
            reading = detector.update(t, value, limit)
            line: dict[str, object] = {
                "t": t,
                "slope_bytes_per_second": reading.slope_bytes_per_second,
                "suspected": reading.suspected,
                "seconds_until_exhausted": reading.forecast.seconds,
                "exhaustion_lower_bound_seconds": reading.forecast.lower_seconds,
                "exhaustion_upper_bound_seconds": reading.forecast.upper_seconds,
                "urgency": reading.forecast.urgency.name.lower(),
            }
            if reading.suspected and reading.evidence is not None:
                line["evidence"] = asdict(reading.evidence)
            sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _parse_limit(text: str) -> float:
    try:
        limit = float(text)
    except ValueError:
        limit = math.nan
    if not math.isfinite(limit) or limit < 0:
        raise TraceError(f"--limit-bytes must be a number of bytes >= 0, got {text!r}")
    return limit


def read_trace(path: Path) -> list[tuple[float, float]]:
    """The (timestamp, bytes) samples of a trace CSV, checked line by line."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, not a CSV file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    if not lines or tuple(f.strip() for f in lines[0].split(",")) != HEADER:
        found = repr(lines[0]) if lines else "an empty file"
        raise TraceError(f"{path}:1: expected the header 'timestamp_seconds,bytes', got {found}")
    samples: list[tuple[float, float]] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        try:
            t, value = (float(f) for f in fields) if len(fields) == 2 else (math.nan, math.nan)
        except ValueError:
            t, value = math.nan, math.nan
        if not (math.isfinite(t) and math.isfinite(value)):
            raise TraceError(f"{path}:{number}: expected two numbers, got {line.strip()!r}")
        if value < 0:
            raise TraceError(f"{path}:{number}: bytes must be >= 0, got {line.strip()!r}")
        if samples and t <= samples[-1][0]:
            raise TraceError(f"{path}:{number}: timestamps must increase, got {line.strip()!r}")
        samples.append((t, value))
    return samples


if __name__ == "__main__":
    sys.exit(replay_main(sys.argv[1:]))
