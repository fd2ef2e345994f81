"""python -m glyph_stack: same as glyph-stack."""

import sys

from glyph_guard_demo.stack.cli import main

sys.exit(main())
