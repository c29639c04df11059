"""Generators of demo and test data (production code never imports this package)."""
