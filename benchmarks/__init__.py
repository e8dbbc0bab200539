"""Benchmarks of the sync and of extraction: ``python -m benchmarks.<name> --help``."""
