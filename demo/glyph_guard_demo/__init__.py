"""glyph-guard's demo distribution: the stand-in Glyph service, glyph-stack and the test kit."""
