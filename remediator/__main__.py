"""`python -m remediator`: the same as the glyph-remediator command."""

from remediator.cli import main

raise SystemExit(main())
