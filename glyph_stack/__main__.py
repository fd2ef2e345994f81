"""python -m glyph_stack: same as glyph-stack."""

import sys

from glyph_stack.cli import main

sys.exit(main())
