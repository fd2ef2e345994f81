"""`python -m remediator`: the same as the glyph-remediator command."""

from glyph_guard.remediator.cli import main

raise SystemExit(main())
