"""Benchmark harness: paper table specs, expected values, comparison, performance benchmarks."""
