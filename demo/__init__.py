"""Generators of demo and test data (the demo capture, its scan and audio, synthetic motion).

Production code never imports this package; the CLI's `demo-capture`, `tests/` and `bench/` do.
"""
