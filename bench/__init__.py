"""Benchmarks, run by ``make bench``: ratios against a baseline measured side by side."""
