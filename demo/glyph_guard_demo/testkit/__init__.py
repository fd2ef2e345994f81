"""Helpers the tests and the benchmarks share: processes, fakes, running stacks, series."""
