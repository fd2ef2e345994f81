"""glyph-exporter: Prometheus metrics for a Glyph deployment (GPU, liveness, probes, caches)."""

from importlib import metadata

try:
    __version__ = metadata.version("glyph-guard")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
