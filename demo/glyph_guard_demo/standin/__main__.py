"""Lets `python -m standin` run the glyph-standin command line."""

from __future__ import annotations

import sys

from glyph_guard_demo.standin.cli import main

if __name__ == "__main__":
    sys.exit(main())
