"""The benchmark suite: ``python -m benchmarks.NAME`` from the repository root (BENCHMARKS.md)."""
