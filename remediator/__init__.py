"""glyph-remediator: acts on Alertmanager webhooks to keep the Glyph service alive, safely."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glyph-guard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
