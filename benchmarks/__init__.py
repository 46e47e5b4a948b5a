"""Benchmarks of dltrain's parts, each run as ``python -m benchmarks.<name>`` from the project root."""
