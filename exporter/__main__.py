"""python -m exporter: same as glyph-exporter."""

import sys

from exporter.cli import main

sys.exit(main())
