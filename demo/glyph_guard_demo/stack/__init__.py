"""glyph-stack: the whole guarded stack on one host, on loopback, and a live recovery scenario."""
