"""Benchmarks: each prints figures, its last line machine-readable (key=value ...)."""
