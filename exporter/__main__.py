"""python -m exporter: same as glyph-exporter."""

import sys

from glyph_guard.exporter.cli import main

sys.exit(main())
