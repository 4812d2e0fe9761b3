"""Throughput and scale benchmarks, run by hand (never by the test suite).

Each module is runnable as ``uv run python -m benchmarks.<name> [--options]``;
see ``benchmarks/README.md`` for what each one measures and the latest figures.
"""
