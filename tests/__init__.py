"""Test suite of the dunning workers (a package so ``tests.support`` is importable)."""
