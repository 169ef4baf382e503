"""The package version (a leaf module: results and benchmarks record it)."""
__version__ = "0.1.0"
